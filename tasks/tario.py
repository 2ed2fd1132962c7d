"""Deterministic WebDataset tar shards: write samples into size-capped shards, read them back.

A sample is a dict: ``__key__`` (str) plus one entry per extension (``png``, ``cls``, ``json``
...) holding bytes or text. Members are written in extension order with fixed metadata (mtime
0, mode 0644, uid/gid 0, empty user and group names) in PAX format, so the same samples always
give the same bytes. Each shard is built in memory and written with one atomic write, so a
reader never sees half a shard.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from tasks import storage

__all__ = [
    "SHARD_PATTERN",
    "ShardSink",
    "iter_tar_bytes",
    "iter_tar_samples",
    "sample_tar_size",
    "split_member",
    "tar_bytes",
    "write_shard",
]

SHARD_PATTERN = "shard-{:06d}.tar"
_FORMAT = tarfile.PAX_FORMAT
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _members(sample: Mapping[str, Any]) -> list[tuple[tarfile.TarInfo, bytes]]:
    key = sample.get("__key__")
    if not isinstance(key, str) or not key or "." in posixpath.basename(key):
        raise ValueError(f"sample key {key!r} must be a non-empty string without dots")
    out = []
    for ext in sorted(k for k in sample if not k.startswith("__")):
        value = sample[ext]
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        out.append((_tarinfo(f"{key}.{ext}", len(data)), data))
    return out


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def sample_tar_size(sample: Mapping[str, Any]) -> int:
    """Bytes the sample's members take in a tar (headers, data, padding)."""
    return sum(
        len(info.tobuf(_FORMAT, "utf-8", "surrogateescape")) + _padded(info.size)
        for info, _ in _members(sample)
    )


def _archive_size(member_bytes: int) -> int:
    """Size of a finished tar holding ``member_bytes``: end-of-archive blocks, record padding."""
    return -(-(member_bytes + 2 * _BLOCK) // _RECORD) * _RECORD


class ShardSink:
    """Collect samples into ``shard-000000.tar``, ... under ``out``.

    A shard is closed before it would exceed ``max_samples`` samples or ``max_bytes`` bytes (the
    finished file's size); a single sample larger than ``max_bytes`` gets a shard of its own.
    """

    def __init__(self, out: str, max_samples: int, max_bytes: int) -> None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_bytes < _RECORD:
            raise ValueError(f"max_bytes must be >= {_RECORD} (one tar record), got {max_bytes}")
        self.out = out
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.shards: list[str] = []
        self.counts: list[int] = []
        self.sha256: list[str] = []
        self._open_new()

    def _open_new(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=_FORMAT)
        self._count = 0
        self._member_bytes = 0

    def add(self, sample: Mapping[str, Any]) -> None:
        """Append one sample, starting a new shard first when this one would overflow."""
        members = _members(sample)
        size = sample_tar_size(sample)
        too_many = self._count + 1 > self.max_samples
        too_big = _archive_size(self._member_bytes + size) > self.max_bytes
        if self._count and (too_many or too_big):
            self._flush()
        for info, data in members:
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._member_bytes += size

    def _flush(self) -> None:
        self._tar.close()
        data = self._buf.getvalue()
        assert len(data) == _archive_size(self._member_bytes), "tar size prediction is off"
        url = storage.join(self.out, SHARD_PATTERN.format(len(self.shards)))
        storage.write_bytes_atomic(url, data)
        self.shards.append(url)
        self.counts.append(self._count)
        self.sha256.append(hashlib.sha256(data).hexdigest())
        self._open_new()

    def close(self) -> tuple[list[str], list[int]]:
        """Write the last shard (if it holds samples); return shard URLs and sample counts."""
        if self._count:
            self._flush()
        self._tar.close()
        return list(self.shards), list(self.counts)


def tar_bytes(samples: Iterable[Mapping[str, Any]]) -> tuple[bytes, int]:
    """One whole tar holding ``samples`` in order (the same bytes for the same samples), and
    the number of samples in it."""
    buf = io.BytesIO()
    count = 0
    with tarfile.open(fileobj=buf, mode="w", format=_FORMAT) as tar:
        for sample in samples:
            for info, data in _members(sample):
                tar.addfile(info, io.BytesIO(data))
            count += 1
    return buf.getvalue(), count


def write_shard(url: str, samples: Iterable[Mapping[str, Any]]) -> tuple[int, str]:
    """Write ``samples`` as one tar at ``url`` in one atomic write; return (count, SHA-256)."""
    data, count = tar_bytes(samples)
    storage.write_bytes_atomic(url, data)
    return count, hashlib.sha256(data).hexdigest()


def split_member(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: ``dir/base.ext.more`` -> (``dir/base``, ``ext.more``); None if no dot."""
    folder, base = posixpath.split(name)
    if "." not in base:
        return None
    stem, ext = base.split(".", 1)
    if not stem:
        return None
    return (posixpath.join(folder, stem) if folder else stem), ext


def iter_tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """Samples of the tar at ``url`` in stored order: ``__key__``, ``__url__``, ext -> bytes.

    Consecutive members sharing a key form one sample (WebDataset's grouping). Non-file
    members, names without an extension and ``__meta__`` names are skipped. A corrupt or
    truncated tar raises ``tarfile.TarError`` (or OSError); the sample in progress is not yielded.
    """
    with storage.open_url(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        yield from _group_members(tar, url)


def iter_tar_bytes(data: bytes, url: str = "") -> Iterator[dict[str, Any]]:
    """Like :func:`iter_tar_samples`, for a tar already in memory (``url`` goes in ``__url__``)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as tar:
        yield from _group_members(tar, url)


def _is_meta(stem: str) -> bool:
    """WebDataset's rule: ``__name__`` members (e.g. ``__meta__``) are not samples."""
    return len(stem) > 4 and stem.startswith("__") and stem.endswith("__")


def _group_members(tar: tarfile.TarFile, url: str) -> Iterator[dict[str, Any]]:
    current: dict[str, Any] | None = None
    for info in tar:
        if not info.isfile():
            continue
        parts = split_member(info.name)
        if parts is None or _is_meta(posixpath.basename(parts[0])):
            continue
        key, ext = parts
        fobj = tar.extractfile(info)
        assert fobj is not None  # isfile() members always have data
        data = fobj.read()
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key, "__url__": url}
        current[ext] = data
    _check_archive_end(tar, url)
    if current is not None:
        yield current


def _check_archive_end(tar: tarfile.TarFile, url: str) -> None:
    """Raise unless the stream ended at an end-of-archive block followed only by zeros.

    tarfile ends a stream quietly at a missing, cut or unreadable member header, which would
    silently drop the rest of a truncated tar.
    """
    pos = tar.fileobj.tell()  # type: ignore[union-attr]
    if pos != tar.offset + _BLOCK:
        raise tarfile.ReadError(f"{url} is truncated: no end-of-archive block at byte {pos}")
    while chunk := tar.fileobj.read(_RECORD):  # type: ignore[union-attr]
        if chunk.count(0) != len(chunk):
            raise tarfile.ReadError(f"{url} is corrupt: unreadable member header at {tar.offset}")
