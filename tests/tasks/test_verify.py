"""verify_release names what is wrong: unfinished, missing/extra/altered shards, keys, marks."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.release import release
from tasks.shards import dumps
from tasks.tario import iter_tar_samples, tar_bytes
from tasks.verify import verify_release
from tests.tasks.release_helpers import FAST, fmnist_shards, seeded_carriers, tiny_marker


def decode(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("verify")
    fmnist_shards(str(root / "src"), num=120, per_shard=40)
    release(str(root / "src"), str(root / "rel"), seeded_carriers(), tiny_marker(), FAST)
    return root / "src", root / "rel"


@pytest.fixture
def rel(finished: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the finished release to damage."""
    out = tmp_path / "rel"
    out.mkdir()
    for f in finished[1].iterdir():
        if f.is_file():
            (out / f.name).write_bytes(f.read_bytes())
    return out


def _manifest(rel: Path) -> dict:
    return json.loads((rel / "manifest.json").read_text())


def _rewrite(rel: Path, name: str, samples: list[dict], fix_manifest: bool) -> None:
    data, count = tar_bytes([{k: v for k, v in s.items() if k != "__url__"} for s in samples])
    (rel / name).write_bytes(data)
    if fix_manifest:  # hide the edit from the hash and count checks
        manifest = _manifest(rel)
        for entry in manifest["shards"]:
            if entry["name"] == name:
                entry["sha256"], entry["count"] = hashlib.sha256(data).hexdigest(), count
        manifest["num_samples"] = sum(e["count"] for e in manifest["shards"])
        (rel / "manifest.json").write_bytes(dumps(manifest))


def test_a_finished_release_verifies(finished: tuple[Path, Path]):
    src, rel = finished
    report = verify_release(str(rel), source=str(src))
    assert report.ok, report.problems
    assert report.num_samples == 120 and report.num_shards == 3
    assert report.num_marked_found == report.num_marked_declared == _manifest(rel)["num_marked"]


def test_missing_manifest_means_unfinished(rel: Path):
    (rel / "manifest.json").unlink()
    report = verify_release(str(rel))
    assert not report.ok and "unfinished" in report.problems[0]


def test_missing_extra_and_altered_shards_are_named(rel: Path):
    (rel / "shard-000000.tar").unlink()
    (rel / "shard-000009.tar").write_bytes((rel / "shard-000001.tar").read_bytes())
    data = bytearray((rel / "shard-000002.tar").read_bytes())
    data[700] ^= 0xFF  # flip a byte inside the first member's data
    (rel / "shard-000002.tar").write_bytes(bytes(data))
    problems = " | ".join(verify_release(str(rel)).problems)
    assert "shard-000000.tar is missing" in problems
    assert "shard-000009.tar is in the folder but not in the manifest" in problems
    assert "shard-000002.tar has SHA-256" in problems


def test_dropped_sample_and_duplicate_keys_are_found(rel: Path):
    first = list(iter_tar_samples(str(rel / "shard-000000.tar")))
    second = list(iter_tar_samples(str(rel / "shard-000001.tar")))
    _rewrite(rel, "shard-000000.tar", first[:-1], fix_manifest=False)
    _rewrite(rel, "shard-000001.tar", [*second[:-1], first[0]], fix_manifest=True)
    problems = " | ".join(verify_release(str(rel)).problems)
    assert "shard-000000.tar holds 39 samples, the manifest says 40" in problems
    assert "repeats keys" in problems and first[0]["__key__"] in problems


def test_unmarking_a_sample_is_caught_against_the_source(finished: tuple[Path, Path], rel: Path):
    src = finished[0]
    manifest = _manifest(rel)
    name = next(e["name"] for e in manifest["shards"] if e["marked"] > 0)
    originals = {s["__key__"]: s for s in iter_tar_samples(str(src / name))}
    samples = list(iter_tar_samples(str(rel / name)))
    for i, s in enumerate(samples):
        if not np.array_equal(decode(s["png"]), decode(originals[s["__key__"]]["png"])):
            samples[i] = {**s, "png": originals[s["__key__"]]["png"]}  # put the original back
            break
    else:
        pytest.fail("no marked sample found in a shard the manifest says has marks")
    _rewrite(rel, name, samples, fix_manifest=True)
    assert verify_release(str(rel)).ok  # hashes and counts were made consistent again
    report = verify_release(str(rel), source=str(src))
    assert not report.ok
    assert any("differ from the source" in p for p in report.problems)
    assert report.num_marked_found == manifest["num_marked"] - 1
