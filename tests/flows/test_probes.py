"""The probe-set task: cached per release, and never reused for other carriers."""

from __future__ import annotations

import random

from radcore.carriers import draw_carriers
from radcore.mark import MarkConfig
from radcore.probes import ProbeSet
from radcore.response import ResponseProbes
from tasks.models import marker_spec_from_ref
from tasks.probes import load_probe_set, prepare_probes, probes_url_for
from tests.flows.conftest import save_model_folder


def _carriers(path, seed: int, dim: int) -> str:
    carriers = draw_carriers(10, dim, randbytes=random.Random(seed).randbytes)
    path.write_bytes(carriers.to_bytes())
    return carriers.fingerprint


def test_probe_set_is_reused_for_its_carriers_and_remade_for_new_ones(fmnist_dirs, tmp_path):
    spec = marker_spec_from_ref(str(save_model_folder(tmp_path / "marker", seed=0)))
    key = tmp_path / "key.safetensors"
    first_key = _carriers(key, 1, dim=32)
    out = probes_url_for(str(key))
    cfg = MarkConfig(steps=1)
    args = (str(fmnist_dirs["heldout"]), str(key), spec, cfg, 3, 5, out)
    made = prepare_probes.fn(*args)
    assert not made["reused"] and made["num_probes"] == 30 and made["pool_size"] == 15
    probes = ProbeSet.from_bytes(open(out, "rb").read())
    assert probes.carrier_fingerprint == first_key and probes.marked.shape[:2] == (15, 30)
    assert prepare_probes.fn(*args)["reused"]
    second_key = _carriers(key, 2, dim=32)  # the same URL now holds other carriers
    again = prepare_probes.fn(*args)
    assert not again["reused"]
    assert ProbeSet.from_bytes(open(out, "rb").read()).carrier_fingerprint == second_key


def test_pattern_releases_get_response_probes_reused_per_key_and_floor(fmnist_dirs, tmp_path):
    spec = marker_spec_from_ref(str(save_model_folder(tmp_path / "marker", seed=0)))
    key = tmp_path / "key.safetensors"
    fingerprint = _carriers(key, 1, dim=32)
    out = probes_url_for(str(key))
    cfg = MarkConfig(method="pattern", psnr_floor=40.0)
    args = (str(fmnist_dirs["heldout"]), str(key), spec, cfg, 3, 5, out)
    made = prepare_probes.fn(*args)
    assert not made["reused"] and made["num_probes"] == 30 and made["pool_size"] == 10
    probes = load_probe_set(open(out, "rb").read())
    assert isinstance(probes, ResponseProbes) and probes.carrier_fingerprint == fingerprint
    assert probes.coefficients.shape == (10, 17) and probes.psnr_floor == 40.0
    assert prepare_probes.fn(*args)["reused"]
    louder = MarkConfig(method="pattern", psnr_floor=38.0)
    assert not prepare_probes.fn(str(fmnist_dirs["heldout"]), str(key), spec, louder, 3, 5, out)[
        "reused"
    ]
    feature = prepare_probes.fn(
        str(fmnist_dirs["heldout"]), str(key), spec, MarkConfig(steps=1), 3, 5, out
    )
    assert not feature["reused"] and feature["pool_size"] == 15
