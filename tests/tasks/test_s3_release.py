"""The data plane end to end against a real S3 endpoint on loopback (moto's server)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from tasks import storage
from tasks.release import release
from tasks.shards import ShardConfig, shard_source
from tasks.verify import verify_release
from tests.tasks.helpers import make_image_folder, upload_tree, write_bad_files
from tests.tasks.release_helpers import FAST, seeded_carriers, tiny_marker

pytestmark = pytest.mark.integration


def test_folder_on_s3_to_shards_to_release_read_back_by_webdataset(s3_bucket: str, tmp_path: Path):
    root = tmp_path / "data"
    good = make_image_folder(root)
    bad = write_bad_files(root / "dog")
    upload_tree(root, f"{s3_bucket}/raw")

    index = shard_source(f"{s3_bucket}/raw", f"{s3_bucket}/shards", ShardConfig(max_samples=4))
    assert index.num_samples == len(good) and index.num_quarantined == len(bad)
    quarantined = storage.read_bytes(f"{s3_bucket}/shards/quarantine.jsonl").decode()
    assert all(path in quarantined for path in bad)

    carriers = seeded_carriers(num_classes=len(index.classes))
    cfg = FAST.__class__(fraction=0.5, mark=FAST.mark, batch_size=8)
    manifest = release(f"{s3_bucket}/shards", f"{s3_bucket}/rel", carriers, tiny_marker(), cfg)
    assert manifest["num_samples"] == len(good)

    urls = [f"{s3_bucket}/rel/{s['name']}" for s in manifest["shards"]]
    dataset = wds.WebDataset(urls, shardshuffle=False).to_tuple("__key__", "png", "cls")
    read = [(key, Image.open(io.BytesIO(png)), cls) for key, png, cls in dataset]
    assert sorted(k for k, _, _ in read) == sorted(w.key for w in good.values())
    for key, image, cls in read:
        written = next(w for w in good.values() if w.key == key)
        assert image.mode == written.expected_mode and int(cls) == written.cls
        assert image.size == written.size

    report = verify_release(f"{s3_bucket}/rel", source=f"{s3_bucket}/shards")
    assert report.ok, report.problems
    assert report.num_marked_found == manifest["num_marked"] > 0


def test_missing_bucket_fails_before_any_work(s3_endpoint: str):
    with pytest.raises(FileNotFoundError, match="bucket 'no-such-bucket'"):
        shard_source("s3://no-such-bucket/raw", "s3://no-such-bucket/out")
