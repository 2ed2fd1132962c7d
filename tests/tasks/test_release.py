"""Releases: stratified keyed selection, marked shards beside unmarked ones, receipts, resume."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import tasks.release as release_mod
from radcore.mark import MarkConfig
from tasks import storage
from tasks.release import ReleaseConfig, allocate_quotas, plan_release, release
from tasks.shards import read_index
from tasks.tario import iter_tar_samples
from tasks.verify import verify_release
from tests.tasks.release_helpers import FAST, fmnist_shards, seeded_carriers, tiny_marker
from tests.tasks.test_verify import decode


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("src") / "shards")
    fmnist_shards(out, num=200, per_shard=64)
    return out


def _samples(folder: str) -> list[dict]:
    index = json.loads(storage.read_bytes(storage.join(folder, "index.json")))
    return [
        s for info in index["shards"] for s in iter_tar_samples(storage.join(folder, info["name"]))
    ]


def _release_samples(folder: str) -> list[dict]:
    manifest = json.loads(storage.read_bytes(storage.join(folder, "manifest.json")))
    return [
        s
        for info in manifest["shards"]
        for s in iter_tar_samples(storage.join(folder, info["name"]))
    ]


def _marked_keys(src: str, rel: str) -> set[str]:
    before = {s["__key__"]: decode(s["png"]) for s in _samples(src)}
    return {
        s["__key__"]
        for s in _release_samples(rel)
        if not np.array_equal(decode(s["png"]), before[s["__key__"]])
    }


def test_quotas_are_round_half_up_per_class_and_fit_each_shard():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 40, size=(int(rng.integers(1, 9)), 5))
        q = float(rng.choice([0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 0.7, 1.0]))
        quotas = np.array(allocate_quotas(counts.tolist(), q))
        for c in range(5):
            exact = Fraction(str(q)) * int(counts[:, c].sum())
            assert quotas[:, c].sum() == int(exact + Fraction(1, 2)), (q, counts[:, c])
        assert (quotas <= counts).all() and (quotas >= 0).all()
        # no shard is more than one mark away from its exact share
        assert (np.abs(quotas - q * counts) < 1 + 1e-9).all()


def test_quota_rounding_edge_cases():
    assert allocate_quotas([[25]], 0.1) == ((3,),)  # 2.5 rounds half up
    # 0.5 per shard, 1.5 in all -> 2 marks, to the first two shards (ties: lower index)
    assert allocate_quotas([[5], [5], [5]], 0.1) == ((1,), (1,), (0,))
    assert sum(q[0] for q in allocate_quotas([[15], [15]], 0.1)) == 3  # 1.5 + 1.5 = 3
    assert allocate_quotas([[10, 0]], 0.3) == ((3, 0),)  # 0.3 * 10 is 3 exactly, not 2.999...


def test_release_marks_exactly_the_declared_stratified_fraction(source: str, tmp_path: Path):
    out = str(tmp_path / "rel")
    manifest = release(source, out, seeded_carriers(), tiny_marker(), FAST)
    index = read_index(source)
    expected_per_class = [int(Fraction(1, 10) * n + Fraction(1, 2)) for n in index.class_totals()]
    assert manifest["marked_per_class"] == expected_per_class
    marked = _marked_keys(source, out)
    assert len(marked) == manifest["num_marked"] == sum(expected_per_class)
    cls_of = {s["__key__"]: int(s["cls"]) for s in _samples(source)}
    found = Counter(cls_of[k] for k in marked)
    assert [found.get(c, 0) for c in range(10)] == expected_per_class
    report = verify_release(out, source=source)
    assert report.ok, report.problems
    assert report.num_marked_found == manifest["num_marked"]


def test_release_keeps_keys_order_classes_and_hides_which_were_marked(source: str, tmp_path: Path):
    out = str(tmp_path / "rel")
    manifest = release(source, out, seeded_carriers(), tiny_marker(), FAST)
    src, rel = _samples(source), _release_samples(out)
    assert [s["__key__"] for s in rel] == [s["__key__"] for s in src]
    assert [s["cls"] for s in rel] == [s["cls"] for s in src]
    marked = _marked_keys(source, out)
    floor = FAST.mark.psnr_floor
    for a, b in zip(src, rel, strict=True):
        meta = json.loads(b["json"])
        assert "marked" not in meta and meta["source"] == json.loads(a["json"])["source"]
        if a["__key__"] in marked:
            x, y = decode(a["png"]).astype(int), decode(b["png"]).astype(int)
            assert np.abs(x - y).max() <= round(FAST.mark.eps * 255)
            mse = ((x - y) ** 2).mean() / 255**2
            assert 10 * np.log10(1 / mse) >= floor - 1e-9
        else:
            assert a["png"] == b["png"]  # unmarked samples are passed through byte for byte
    assert manifest["quality"]["psnr_min"] >= floor - 1e-9
    assert sum(manifest["quality"]["psnr_histogram"]["counts"]) == manifest["num_marked"]


def test_selection_depends_on_the_carriers_and_is_not_a_key_prefix(source: str, tmp_path: Path):
    cfg = ReleaseConfig(fraction=0.5, mark=FAST.mark, batch_size=64)
    a = plan_release(source, str(tmp_path / "a"), seeded_carriers(seed=1), tiny_marker(), cfg)
    b = plan_release(source, str(tmp_path / "b"), seeded_carriers(seed=2), tiny_marker(), cfg)
    assert a.quotas == b.quotas  # how many per shard and class: public, carrier-free
    secret_a = release_mod.selection_secret(seeded_carriers(seed=1))
    secret_b = release_mod.selection_secret(seeded_carriers(seed=2))
    samples = _samples(source)
    by_class: dict[int, list[str]] = {}
    for s in samples:
        by_class.setdefault(int(s["cls"]), []).append(s["__key__"])
    quota = [len(by_class.get(c, [])) // 2 for c in range(10)]
    pick_a = release_mod._pick(by_class, quota, secret_a)
    pick_b = release_mod._pick(by_class, quota, secret_b)
    n = len(pick_a)
    overlap = len(pick_a & pick_b) / n
    assert 0.3 < overlap < 0.7  # independent halves overlap by ~0.5
    first_halves = {k for keys in by_class.values() for k in keys[: len(keys) // 2]}
    assert len(pick_a & first_halves) / n < 0.75


def test_rerun_skips_finished_shards_and_redoes_damaged_ones(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = str(tmp_path / "rel")
    carriers, marker = seeded_carriers(), tiny_marker()
    first = release(source, out, carriers, marker, FAST)
    original = {s["name"]: (tmp_path / "rel" / s["name"]).read_bytes() for s in first["shards"]}
    names = sorted(original)
    # Damage: one shard deleted, one shard's bytes altered, one receipt deleted.
    (tmp_path / "rel" / names[0]).unlink()
    (tmp_path / "rel" / names[1]).write_bytes(original[names[1]][:-1024])
    (tmp_path / "rel" / "_receipts" / f"{names[2]}.json").unlink()
    (tmp_path / "rel" / "manifest.json").unlink()
    redone: list[str] = []
    real_write = release_mod.write_shard

    def spy(url: str, samples):
        redone.append(url.rsplit("/", 1)[-1])
        return real_write(url, samples)

    monkeypatch.setattr(release_mod, "write_shard", spy)
    second = release(source, out, carriers, marker, FAST)
    assert sorted(redone) == names[:3]
    assert second["shards"] == first["shards"]  # deterministic: the same bytes again
    for name in names:
        assert (tmp_path / "rel" / name).read_bytes() == original[name]
    assert verify_release(out, source=source).ok


def test_a_different_release_into_a_finished_folder_is_refused(source: str, tmp_path: Path):
    out = str(tmp_path / "rel")
    release(source, out, seeded_carriers(), tiny_marker(), FAST)
    with pytest.raises(FileExistsError, match="different finished release"):
        plan_release(source, out, seeded_carriers(seed=5), tiny_marker(), FAST)


def test_mismatched_carriers_are_refused_before_any_work(source: str, tmp_path: Path):
    out = tmp_path / "rel"
    with pytest.raises(ValueError, match="one vector per class"):
        plan_release(source, str(out), seeded_carriers(num_classes=3), tiny_marker(), FAST)
    with pytest.raises(ValueError, match="draw carriers for this marker"):
        plan_release(source, str(out), seeded_carriers(dim=16), tiny_marker(), FAST)
    assert not out.exists()


def test_unfinished_source_folder_names_the_fix(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="radtrace shard"):
        plan_release(str(tmp_path), str(tmp_path / "rel"), seeded_carriers(), tiny_marker(), FAST)


def test_bad_fraction_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        ReleaseConfig(fraction=1.5)


@pytest.mark.parametrize("skip", [0.0, 0.25])
def test_hard_selection_marks_what_the_marker_finds_hardest_in_each_shard_and_class(
    source: str, tmp_path: Path, skip: float
):
    import math

    import torch

    out = str(tmp_path / "rel")
    marker = tiny_marker()
    cfg = ReleaseConfig(
        fraction=0.25, mark=FAST.mark, batch_size=32, selection="hard", skip_hardest=skip
    )
    manifest = release(source, out, seeded_carriers(), marker, cfg)
    assert manifest["mark"]["selection"] == "hard"
    marked = _marked_keys(source, out)
    plan = plan_release(source, str(tmp_path / "other"), seeded_carriers(), marker, cfg)
    checked = skipped = 0
    for shard, quota in zip(plan.index.shards, plan.quotas, strict=True):
        samples = list(iter_tar_samples(storage.join(source, shard.name)))
        x = torch.from_numpy(np.stack([decode(s["png"]) for s in samples])).float() / 255
        x = x[:, None] if x.ndim == 3 else x
        labels = torch.tensor([int(s["cls"]) for s in samples])
        loss = -marker.class_log_probs(x).gather(1, labels[:, None]).squeeze(1)
        for c in range(10):
            rows = [i for i in range(len(samples)) if int(labels[i]) == c]
            ranked = sorted(rows, key=lambda i: -float(loss[i]))
            top = math.floor(skip * len(rows) + 0.5)  # passed over, taken last if need be
            hardest = (ranked[top:] + ranked[:top][::-1])[: quota[c]]
            skipped += len(set(ranked[:top]) - set(hardest))
            want = {samples[i]["__key__"] for i in hardest}
            got = {samples[i]["__key__"] for i in rows} & marked
            assert got == want, (shard.name, c)
            checked += len(want)
    assert checked == manifest["num_marked"] > 0
    assert (skipped > 0) == (skip > 0) and manifest["mark"]["skip_hardest"] == skip


def test_auto_selection_is_hard_for_a_classifier_marker_and_random_for_a_feature_extractor(
    source: str, tmp_path: Path
):
    from radcore.markers import Marker, MarkerSpec

    classifier = tiny_marker()
    auto = ReleaseConfig(fraction=0.1, mark=FAST.mark)
    assert (
        plan_release(source, str(tmp_path / "a"), seeded_carriers(), classifier, auto).cfg.selection
        == "hard"
    )
    features = Marker(
        MarkerSpec("features", 32, 1, None, (0.286,), (0.353,)),
        classifier.net,
        classifier._features,
    )
    plan = plan_release(source, str(tmp_path / "b"), seeded_carriers(), features, auto)
    assert plan.cfg.selection == "random"
    hard = ReleaseConfig(fraction=0.1, mark=FAST.mark, selection="hard")
    with pytest.raises(ValueError, match="selection 'random'"):
        plan_release(source, str(tmp_path / "c"), seeded_carriers(), features, hard)
    with pytest.raises(ValueError, match="selection must be one of"):
        ReleaseConfig(selection="easy")
    with pytest.raises(ValueError, match="skip_hardest"):
        ReleaseConfig(skip_hardest=1.0)


def test_a_pattern_release_stores_each_class_pattern_at_the_floor(source: str, tmp_path: Path):
    import torch

    from radcore.patterns import render_patterns

    out = str(tmp_path / "rel")
    carriers = seeded_carriers()
    cfg = ReleaseConfig(fraction=0.25, mark=MarkConfig(method="pattern", psnr_floor=40.0))
    manifest = release(source, out, carriers, tiny_marker(), cfg)
    assert manifest["mark"]["method"] == "pattern" and manifest["mark"]["pattern_freqs"] == 6
    marked = _marked_keys(source, out)
    patterns = render_patterns(carriers.vectors, 28, 28)
    decoded = 0
    for a, b in zip(_samples(source), _release_samples(out), strict=True):
        if a["__key__"] not in marked:
            continue
        x, y = decode(a["png"]).astype(float), decode(b["png"]).astype(float)
        mse = ((x - y) ** 2).mean() / 255**2
        assert 40.0 <= 10 * np.log10(1 / mse) < 40.6
        score = torch.einsum("hw,chw->c", torch.from_numpy(y - x), patterns)
        decoded += int(score.argmax()) == int(a["cls"])
    assert decoded == len(marked) == manifest["num_marked"] > 0
    assert verify_release(out, source=source).ok
