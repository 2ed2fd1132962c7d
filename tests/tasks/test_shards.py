"""Sources -> shards: deterministic bytes, per-class counts, quarantine, stale files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radcore.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from tasks.shards import ShardConfig, detect_kind, read_index, shard_source
from tasks.sources import open_idx
from tasks.tario import iter_tar_samples
from tests.tasks.helpers import FOLDER_CLASSES, make_image_folder, write_bad_files
from tests.tasks.test_verify import decode


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_idx_shards_are_byte_identical_on_a_second_run(tmp_path: Path):
    cfg = ShardConfig(max_samples=70)
    a = shard_source(open_idx(limit=300), str(tmp_path / "a"), cfg, None, "fmnist")
    b = shard_source(open_idx(limit=300), str(tmp_path / "b"), cfg, None, "fmnist")
    assert [s.count for s in a.shards] == [70, 70, 70, 70, 20]
    assert a.shards == b.shards
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert set(_files(tmp_path / "a")) == {
        *(f"shard-00000{i}.tar" for i in range(5)),
        "classes.json",
        "quarantine.jsonl",
        "index.json",
    }


def test_idx_shards_hold_the_source_pixels_labels_and_counts(tmp_path: Path):
    images, labels = load_fashion_mnist("train")
    index = shard_source(open_idx(limit=150), str(tmp_path), ShardConfig(max_samples=64))
    samples = [s for info in index.shards for s in iter_tar_samples(str(tmp_path / info.name))]
    assert [s["__key__"] for s in samples] == [f"train-{i:06d}" for i in range(150)]
    for i, s in enumerate(samples):
        assert (decode(s["png"]) == images[i, 0].numpy()).all()
        assert int(s["cls"]) == int(labels[i])
        assert json.loads(s["json"])["marked"] is False
    for info in index.shards:
        got = [0] * 10
        for s in iter_tar_samples(str(tmp_path / info.name)):
            got[int(s["cls"])] += 1
        assert list(info.class_counts) == got
    assert json.loads((tmp_path / "classes.json").read_text()) == list(FASHION_MNIST_CLASSES)
    assert read_index(str(tmp_path)) == index


def test_bad_files_are_quarantined_and_the_rest_is_sharded(tmp_path: Path):
    root = tmp_path / "data"
    good = make_image_folder(root)
    bad = write_bad_files(root / "cat")
    (root / "empty_class").mkdir()
    (root / "stray.png").write_bytes(b"not in a class folder")
    index = shard_source(str(root), str(tmp_path / "out"), ShardConfig(max_samples=4))
    rows = [
        json.loads(line)
        for line in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()
    ]
    by_source = {Path(r["source"]).relative_to(root).as_posix(): r["reason"] for r in rows}
    assert set(by_source) == {*bad, "empty_class", "stray.png"}
    for rel, reason in bad.items():
        assert reason in by_source[rel]
    assert index.num_quarantined == len(rows) == len(bad) + 2
    assert index.num_samples == len(good)
    assert index.classes == (*FOLDER_CLASSES, "empty_class")  # an empty class keeps its index
    keys = [
        s["__key__"]
        for info in index.shards
        for s in iter_tar_samples(str(tmp_path / "out" / info.name))
    ]
    assert sorted(keys) == sorted(w.key for w in good.values())


def test_class_names_come_from_the_folders_in_sorted_order(tmp_path: Path):
    make_image_folder(tmp_path / "data")
    index = shard_source(str(tmp_path / "data"), str(tmp_path / "out"))
    assert index.classes == FOLDER_CLASSES
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == list(FOLDER_CLASSES)


def test_a_smaller_rerun_removes_stale_shards(tmp_path: Path):
    shard_source(open_idx(limit=100), str(tmp_path), ShardConfig(max_samples=10))
    index = shard_source(open_idx(limit=100), str(tmp_path), ShardConfig(max_samples=50))
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == [s.name for s in index.shards]
    assert len(index.shards) == 2


def test_resharding_existing_tars_keeps_keys_and_pixels(tmp_path: Path):
    first = shard_source(open_idx(limit=90), str(tmp_path / "a"), ShardConfig(max_samples=40))
    again = shard_source(str(tmp_path / "a"), str(tmp_path / "b"), ShardConfig(max_samples=25))
    assert detect_kind(str(tmp_path / "a")) == "tars"
    assert again.classes == first.classes and again.num_samples == 90
    old = {
        s["__key__"]: s
        for i in first.shards
        for s in iter_tar_samples(str(tmp_path / "a" / i.name))
    }
    for info in again.shards:
        for s in iter_tar_samples(str(tmp_path / "b" / info.name)):
            assert s["png"] == old[s["__key__"]]["png"] and s["cls"] == old[s["__key__"]]["cls"]


def test_missing_source_and_unusable_source_say_what_to_fix(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shard_source(str(tmp_path / "nope"), str(tmp_path / "out"))
    root = tmp_path / "junk"
    write_bad_files(root / "only")
    with pytest.raises(ValueError, match="no usable samples"):
        shard_source(str(root), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "index.json").exists()
