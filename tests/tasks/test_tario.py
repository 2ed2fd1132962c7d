import io
import os
import tarfile

import numpy as np
import pytest
import webdataset as wds
from webdataset.tariterators import base_plus_ext

from tasks import storage
from tasks.tario import ShardSink, iter_tar_samples, sample_tar_size, split_member


def _samples(n: int, payload: int = 100, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "__key__": f"cls{i % 3}/item_{i:04d}",
            "png": rng.integers(0, 256, payload + 37 * i, dtype=np.uint8).tobytes(),
            "cls": str(i % 3),
            "json": f'{{"i":{i}}}'.encode(),
        }
        for i in range(n)
    ]


def _as_bytes(sample: dict) -> dict:
    """The sample as webdataset reads it back: every value but the key as bytes."""
    out = dict(sample)
    for k, v in sample.items():
        if k != "__key__" and isinstance(v, str):
            out[k] = v.encode()
    return out


def _read_with_webdataset(urls: list[str]) -> list[dict]:
    ds = wds.WebDataset(urls, shardshuffle=False)
    # webdataset adds __url__ and __local_path__: compare the sample's own entries.
    return [{k: v for k, v in s.items() if k == "__key__" or not k.startswith("__")} for s in ds]


def _write(out, samples, max_samples=1000, max_bytes=1 << 20):
    sink = ShardSink(str(out), max_samples=max_samples, max_bytes=max_bytes)
    for s in samples:
        sink.add(s)
    return sink.close()


# --- ShardSink --------------------------------------------------------------------------------


def test_split_by_count(tmp_path):
    samples = _samples(7)
    urls, counts = _write(tmp_path / "out", samples, max_samples=3)
    assert counts == [3, 3, 1]
    assert [os.path.basename(u) for u in urls] == [f"shard-00000{i}.tar" for i in range(3)]
    assert sorted(os.listdir(tmp_path / "out")) == [os.path.basename(u) for u in urls]
    assert _read_with_webdataset(urls) == [_as_bytes(s) for s in samples]


def test_split_by_bytes_keeps_every_shard_under_the_cap(tmp_path):
    samples = _samples(40, payload=1500, seed=1)  # 1.5 .. 3 KB each, ~3.5 KB in the tar
    max_bytes = 3 * 10240
    urls, counts = _write(tmp_path / "out", samples, max_bytes=max_bytes)
    assert len(urls) > 3 and sum(counts) == 40
    sizes = [os.path.getsize(u) for u in urls]
    assert all(size <= max_bytes for size in sizes), sizes
    assert all(size % 10240 == 0 for size in sizes)  # whole tar records
    # No shard was closed early: its samples plus the next shard's first would not fit.
    start = 0
    for url, n in zip(urls[:-1], counts[:-1], strict=True):
        with_next = samples[start : start + n + 1]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for s in with_next:
                for ext in sorted(k for k in s if k != "__key__"):
                    data = _as_bytes(s)[ext]
                    info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        assert len(buf.getvalue()) > max_bytes, url
        start += n
    assert _read_with_webdataset(urls) == [_as_bytes(s) for s in samples]


def test_an_oversize_sample_gets_a_shard_of_its_own(tmp_path):
    small = _samples(4, payload=100)
    big = {"__key__": "big", "png": b"\x01" * 30000, "cls": "0"}
    samples = small[:2] + [big] + small[2:]
    max_bytes = 2 * 10240
    urls, counts = _write(tmp_path / "out", samples, max_bytes=max_bytes)
    assert counts == [2, 1, 2]
    sizes = [os.path.getsize(u) for u in urls]
    assert sizes[1] > max_bytes
    assert sizes[0] <= max_bytes and sizes[2] <= max_bytes
    assert [s["__key__"] for s in _read_with_webdataset(urls[1:2])] == ["big"]


def test_second_run_gives_identical_bytes(tmp_path):
    samples = _samples(9, payload=700) + [{"__key__": "k" * 150, "txt": "long key: PAX"}]
    a, _ = _write(tmp_path / "a", samples, max_samples=4)
    b, _ = _write(tmp_path / "b", samples, max_samples=4)
    assert len(a) == len(b) == 3
    for ua, ub in zip(a, b, strict=True):
        assert open(ua, "rb").read() == open(ub, "rb").read()


def test_member_metadata_is_fixed_and_ordered_by_extension(tmp_path):
    sample = {"__key__": "x/y", "png": b"p", "cls": "1", "json": b"{}", "__url__": "ignored"}
    (url,), _ = _write(tmp_path / "out", [sample])
    with tarfile.open(url) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["x/y.cls", "x/y.json", "x/y.png"]
    for m in members:
        assert (m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) == (0, 0o644, 0, 0, "", "")
        assert m.isreg()


def test_webdataset_reads_back_long_and_nested_keys(tmp_path):
    samples = [
        {"__key__": "a/b/" + "long" * 40, "png": b"\x00" * 10, "cls": "2"},
        {"__key__": "dir.with.dots/k", "jpg": b"j", "cls": "0", "json": '{"a": "é"}'},
    ]
    urls, counts = _write(tmp_path / "out", samples)
    assert counts == [2]
    assert _read_with_webdataset(urls) == [_as_bytes(s) for s in samples]


def test_sample_tar_size_matches_tarfile(tmp_path):
    for sample in [*_samples(3, payload=513), {"__key__": "k" * 200, "png": b"", "cls": "1"}]:
        buf = io.BytesIO()
        tar = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
        for ext in sorted(k for k in sample if k != "__key__"):
            data = _as_bytes(sample)[ext]
            info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        assert sample_tar_size(sample) == tar.offset
        tar.close()


def test_close_without_samples_writes_nothing(tmp_path):
    sink = ShardSink(str(tmp_path / "out"), max_samples=2, max_bytes=10240)
    assert sink.close() == ([], [])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "key", [None, "", 3, "has.dot", "dir/has.dot"], ids=["none", "empty", "int", "dot", "dot2"]
)
def test_bad_keys_are_refused(tmp_path, key):
    sink = ShardSink(str(tmp_path), max_samples=2, max_bytes=10240)
    sample = {"png": b"x"} if key is None else {"__key__": key, "png": b"x"}
    with pytest.raises(ValueError, match="without dots"):
        sink.add(sample)


def test_bad_limits_are_refused(tmp_path):
    with pytest.raises(ValueError, match="max_samples must be >= 1"):
        ShardSink(str(tmp_path), max_samples=0, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="max_bytes must be >= 10240"):
        ShardSink(str(tmp_path), max_samples=1, max_bytes=10239)


# --- split_member -----------------------------------------------------------------------------


NAMES = [
    "a.png",
    "a.seg.png",
    "dir/base.ext.more",
    "d.ir/base.png",
    "d.ir/base",
    "noext",
    ".hidden",
    "dir/x.",
    "a/b/c.cls",
    "k.tar.gz",
]


@pytest.mark.parametrize("name", NAMES)
def test_split_member_follows_webdataset(name):
    oracle = base_plus_ext(name)
    assert split_member(name) == (None if oracle == (None, None) else oracle)


def test_split_member_examples():
    assert split_member("dir/base.ext.more") == ("dir/base", "ext.more")
    assert split_member("d.ir/base") is None
    assert split_member(".hidden") is None
    # Deliberately stricter than webdataset's regex, which reads "dir/.hidden" as key "dir/".
    assert split_member("dir/.hidden") is None


# --- iter_tar_samples -------------------------------------------------------------------------


def test_iter_tar_samples_groups_and_skips(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("__meta__.json", b"{}"),
            ("a.png", b"A"),
            ("a.cls", b"1"),
            ("noext", b"?"),
            ("dir/b.seg.png", b"B"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("somedir.x")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
    got = list(iter_tar_samples(str(path)))
    assert got == [
        {"__key__": "a", "__url__": str(path), "png": b"A", "cls": b"1"},
        {"__key__": "dir/b", "__url__": str(path), "seg.png": b"B"},
    ]


def _tar_of(samples) -> bytes:
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, mtime=0) as w:
        for s in samples:
            w.write(_as_bytes(s))
    return buf.getvalue()


def _member_offsets(data: bytes) -> list[tuple[str, int, int]]:
    """(name, header offset, data offset) of each member."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.offset, m.offset_data) for m in tar.getmembers()]


def test_iter_tar_samples_on_a_truncated_tar_raises(tmp_path):
    samples = _samples(3, payload=3000)
    data = _tar_of(samples)
    name, _, data_at = _member_offsets(data)[-1]
    assert name.endswith(".png")  # the last sample's last member
    path = tmp_path / "cut.tar"
    path.write_bytes(data[: data_at + 1000])  # inside its data
    got = []
    with pytest.raises((tarfile.TarError, OSError)):
        for sample in iter_tar_samples(str(path)):
            got.append(sample["__key__"])
    assert got == [s["__key__"] for s in samples[:2]]  # the broken one is not yielded


@pytest.mark.parametrize("where", ["at_header", "inside_header"])
def test_iter_tar_samples_on_a_tar_cut_between_members_raises(tmp_path, where):
    samples = _samples(3, payload=3000)
    data = _tar_of(samples)
    _, header_at, _ = _member_offsets(data)[-1]
    cut = header_at if where == "at_header" else header_at + 200
    path = tmp_path / "cut.tar"
    path.write_bytes(data[:cut])
    with pytest.raises((tarfile.TarError, OSError)):
        list(iter_tar_samples(str(path)))


def test_iter_tar_samples_on_a_corrupt_header_raises(tmp_path):
    samples = _samples(3, payload=3000)
    data = bytearray(_tar_of(samples))
    _, header_at, _ = _member_offsets(bytes(data))[-1]
    data[header_at : header_at + 100] = b"\xff" * 100  # name field garbage: checksum breaks
    path = tmp_path / "bad.tar"
    path.write_bytes(bytes(data))
    with pytest.raises(tarfile.TarError, match="corrupt"):
        list(iter_tar_samples(str(path)))


def test_iter_tar_samples_reads_complete_shards(tmp_path):
    samples = _samples(5)
    urls, _ = _write(tmp_path / "out", samples, max_samples=2)
    got = [s for u in urls for s in iter_tar_samples(u)]
    assert [s.pop("__url__") for s in got] == [urls[0]] * 2 + [urls[1]] * 2 + [urls[2]]
    assert got == [_as_bytes(s) for s in samples]


def test_iter_tar_samples_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(iter_tar_samples(str(tmp_path / "nope.tar")))


def test_shards_written_through_storage_join(tmp_path):
    out = "file://" + str(tmp_path / "o")
    urls, _ = _write(out, _samples(1))
    assert urls == [storage.join(out, "shard-000000.tar")]
    assert (tmp_path / "o" / "shard-000000.tar").is_file()


def test_keys_starting_with_underscores_survive_but_meta_members_are_skipped(tmp_path):
    samples = [
        {"__key__": "cat/__x", "cls": "1"},
        {"__key__": "__meta__", "cls": "0"},
        {"__key__": "cat/y", "cls": "2"},
    ]
    shards, _ = _write(tmp_path, samples)
    got = [s["__key__"] for s in iter_tar_samples(shards[0])]
    assert got == ["cat/__x", "cat/y"]
