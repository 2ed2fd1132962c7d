"""Task: the black-box probe set of a release.

Feature marks: held-out probes marked with a carrier pool (:mod:`radcore.probes`, for the
permutation test of :mod:`radcore.blackbox`). Pattern marks: the clean held-out probes and the
key's pattern coefficients (:mod:`radcore.response`, for the response test; no control carriers).
Made once per release and cached: a private safetensors file next to the carriers, and an
artifact of the release run, so that every later audit only runs the suspect forward.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from tqdm import tqdm

from radcore.mark import MarkConfig
from radcore.probes import ProbeSet, draw_pool, mark_probes, select_probes
from radcore.response import ResponseProbes, is_response_probes, make_response_probes
from tasks import storage
from tasks.datasets import load_images
from tasks.models import load_marker
from tasks.steps import device_for, read_carriers

__all__ = ["load_probe_set", "prepare_probes", "probes_url_for"]


def load_probe_set(data: bytes) -> ProbeSet | ResponseProbes:
    """A release's probe set from its bytes, of whichever kind it is."""
    if is_response_probes(data):
        return ResponseProbes.from_bytes(data)
    return ProbeSet.from_bytes(data)


def probes_url_for(carriers_url: str) -> str:
    """Where the probe set of a release is cached: beside its (private) carriers file."""
    base = carriers_url.removesuffix(".safetensors")
    return base + ".probes.safetensors"


@task(name="prepare-probes", cache_policy=NONE, persist_result=False)
def prepare_probes(
    heldout: str,
    carriers_url: str,
    marker_spec: dict[str, Any],
    cfg: MarkConfig,
    per_class: int,
    num_controls: int,
    out: str,
    batch_size: int = 250,
) -> dict[str, Any]:
    """Feature marks: mark ``per_class`` held-out images of each class with the release's
    carriers and ``num_controls`` fresh control carriers. Pattern marks: keep the clean images
    and the key's pattern coefficients (``num_controls`` does not apply). Writes the probe set
    to the private URL ``out``.

    Reuses ``out`` when it already holds a probe set for these carriers (a resumed release);
    one made for other carriers is replaced. Returns a summary without secrets.
    """
    carriers = read_carriers(carriers_url)
    cached = load_probe_set(storage.read_bytes(out)) if storage.exists(out) else None
    kind = ResponseProbes if cfg.method == "pattern" else ProbeSet
    if (
        isinstance(cached, kind)
        and cached.carrier_fingerprint == carriers.fingerprint
        and (kind is ProbeSet or cached.psnr_floor == cfg.psnr_floor)
    ):
        return _summary(out, cached, reused=True)
    images, labels = load_images(heldout)
    pick = select_probes(labels, per_class, carriers.num_classes)
    if cfg.method == "pattern":
        assert cfg.psnr_floor is not None  # MarkConfig refuses a pattern method without a floor
        response = make_response_probes(
            images[pick], labels[pick], carriers, cfg.psnr_floor, cfg.pattern_freqs
        )
        storage.write_bytes_atomic(out, response.to_bytes())
        return _summary(out, response, reused=False)
    device = device_for(0)
    marker = load_marker(marker_spec, device)
    pool, true_index = draw_pool(carriers, num_controls)
    total = len(pick) * pool.num_classes
    quiet = not sys.stderr.isatty()
    with tqdm(total=total, desc="marking probes", unit="img", disable=quiet) as bar:
        probes = mark_probes(
            images[pick].to(device),
            labels[pick],
            pool,
            true_index,
            marker,
            cfg,
            batch_size,
            on_batch=bar.update,
        )
    storage.write_bytes_atomic(out, probes.to_bytes())
    return _summary(out, probes, reused=False)


def _summary(url: str, probes: ProbeSet | ResponseProbes, reused: bool) -> dict[str, Any]:
    return {
        "url": url,
        "num_probes": len(probes.labels),
        "pool_size": probes.pool_size,
        "pool_fingerprint": probes.pool_fingerprint,
        "reused": reused,
    }
