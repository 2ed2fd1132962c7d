"""Source -> WebDataset shards, with bad input quarantined and an index written last.

``shard_source(url, out)`` opens a source (an image folder with one sub-folder per class,
existing WebDataset tars, or Fashion-MNIST-style IDX files), streams it into
``shard-000000.tar``, ... under ``out`` and writes, in this order:

- ``classes.json``: the class names, index i naming ``cls`` i;
- ``quarantine.jsonl``: one JSON line per input that could not become a sample (key, where it
  is, why); empty when nothing was rejected;
- ``index.json`` last: shard names, sample counts, SHA-256 and per-class counts of each shard,
  so a shard folder without an index is visibly incomplete. Releases plan from it.

The same source gives byte-identical shards, ``classes.json`` and ``index.json`` on every run.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tasks import storage
from tasks.sources import Rejected, Source, open_idx, open_image_folder, open_webdataset
from tasks.tario import ShardSink

__all__ = [
    "INDEX_FORMAT",
    "ShardConfig",
    "ShardIndex",
    "ShardInfo",
    "detect_kind",
    "dumps",
    "open_source",
    "read_index",
    "shard_source",
]

INDEX_FORMAT = "radtrace-shards/1"
_SHARD_NAME = re.compile(r"shard-\d{6}\.tar")
_IDX_NAME = re.compile(r"(train|t10k)-images-idx3-ubyte(\.gz)?")


def dumps(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, fixed separators, final newline): stable on reruns."""
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")


@dataclass(frozen=True)
class ShardConfig:
    """Shard size limits: a shard closes before it would exceed either."""

    max_samples: int = 1000
    max_bytes: int = 256 * 2**20

    def __post_init__(self) -> None:
        if self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {self.max_samples}")
        if self.max_bytes < 10240:
            raise ValueError(f"max_bytes must be >= 10240 (one tar record), got {self.max_bytes}")


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file name, sample count, SHA-256 of its bytes, samples per class index."""

    name: str
    count: int
    sha256: str
    class_counts: tuple[int, ...]


@dataclass(frozen=True)
class ShardIndex:
    """What ``index.json`` of a shard folder says."""

    url: str
    source: str
    classes: tuple[str, ...]
    shards: tuple[ShardInfo, ...]
    num_quarantined: int

    @property
    def num_samples(self) -> int:
        return sum(s.count for s in self.shards)

    def class_totals(self) -> tuple[int, ...]:
        return tuple(sum(col) for col in zip(*(s.class_counts for s in self.shards), strict=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "source": self.source,
            "classes": list(self.classes),
            "num_samples": self.num_samples,
            "num_quarantined": self.num_quarantined,
            "shards": [
                {
                    "name": s.name,
                    "count": s.count,
                    "sha256": s.sha256,
                    "class_counts": list(s.class_counts),
                }
                for s in self.shards
            ],
        }


def read_index(url: str) -> ShardIndex:
    """Read ``index.json`` of the shard folder ``url``; a missing index names the fix."""
    index_url = storage.join(url, "index.json")
    if not storage.exists(index_url):
        raise FileNotFoundError(
            f"{index_url} not found: {url} is not a finished shard folder; run "
            f"`radtrace shard SOURCE {url}` (or shard_source) first, or let it finish"
        )
    raw = json.loads(storage.read_bytes(index_url))
    if raw.get("format") != INDEX_FORMAT:
        raise ValueError(f"{index_url} has format {raw.get('format')!r}, expected {INDEX_FORMAT}")
    shards = tuple(
        ShardInfo(s["name"], int(s["count"]), s["sha256"], tuple(s["class_counts"]))
        for s in raw["shards"]
    )
    return ShardIndex(url, raw["source"], tuple(raw["classes"]), shards, raw["num_quarantined"])


def detect_kind(url: str) -> str:
    """``"tars"``, ``"idx"`` or ``"folder"``: what kind of source ``url`` is (see open_source)."""
    if url.endswith(".tar") or any(c in url for c in "*?["):
        return "tars"
    storage.check_source(url)
    names = [e.name for e in storage.listdir(url) if not e.is_dir]
    if any(n.endswith(".tar") for n in names):
        return "tars"
    if any(_IDX_NAME.fullmatch(n) for n in names):
        return "idx"
    return "folder"


def open_source(url: str, kind: str = "auto", split: str = "train", limit: int | None = None):
    """Open a source by kind (``auto`` detects it): ``folder``, ``tars`` or ``idx``.

    ``split`` and ``limit`` apply to IDX files only (``train``/``test``; first ``limit`` images).
    """
    kind = detect_kind(url) if kind == "auto" else kind
    if kind == "folder":
        return open_image_folder(url)
    if kind == "tars":
        return open_webdataset(url)
    if kind == "idx":
        return open_idx(url, split=split, limit=limit)
    raise ValueError(f"unknown source kind {kind!r}: use auto, folder, tars or idx")


def _write_jsonl(url: str, rows: Sequence[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True, ensure_ascii=True) + "\n" for r in rows)
    storage.write_bytes_atomic(url, text.encode("ascii"))


def _remove_stale_shards(out: str, keep: set[str]) -> None:
    """Delete ``shard-NNNNNN.tar`` files a previous, larger run left behind."""
    if not storage.exists(out):
        return
    for entry in storage.listdir(out):
        if not entry.is_dir and _SHARD_NAME.fullmatch(entry.name) and entry.name not in keep:
            storage.remove(entry.url)


def shard_source(
    source: str | Source,
    out: str,
    cfg: ShardConfig = ShardConfig(),
    progress: Callable[[int], None] | None = None,
    source_url: str | None = None,
) -> ShardIndex:
    """Stream ``source`` (a URL for :func:`open_source`, or an opened Source) into shards.

    Bad inputs go to ``quarantine.jsonl`` and the run goes on; a duplicate key is quarantined
    too (the first sample with that key is kept). ``progress`` is called with the number of
    items consumed since the last call. The source URL recorded in the index is ``source``
    (when a URL) or ``source_url``.
    """
    if isinstance(source, str):
        source_url = source
        source = open_source(source)
    storage.check_destination(out)
    storage.remove(storage.join(out, "index.json"))  # the folder is incomplete until the end
    sink = ShardSink(out, cfg.max_samples, cfg.max_bytes)
    quarantine: list[dict[str, Any]] = []
    seen: set[str] = set()
    per_shard: list[Counter[int]] = []
    current: Counter[int] = Counter()
    for item in source.items:
        if progress is not None:
            progress(1)
        if isinstance(item, Rejected):
            quarantine.append({"key": item.key, "source": item.source, "reason": item.reason})
            continue
        key = item["__key__"]
        if key in seen:
            where = json.loads(item["json"]).get("source")
            quarantine.append({"key": key, "source": where, "reason": "duplicate key: skipped"})
            continue
        seen.add(key)
        before = len(sink.shards)
        sink.add(item)
        if len(sink.shards) > before:  # the previous shard was just written
            per_shard.append(current)
            current = Counter()
        current[int(item["cls"])] += 1
    names, counts = sink.close()
    if current:
        per_shard.append(current)
    if not names:
        raise ValueError(
            f"no usable samples in {source_url}: {len(quarantine)} inputs were rejected; "
            "check the source layout (one sub-folder per class) and the file formats"
        )
    classes = source.classes
    if classes is None:
        top = max(max(c) for c in per_shard if c)
        classes = tuple(str(i) for i in range(top + 1))
    infos = tuple(
        ShardInfo(
            posixpath.basename(url),
            count,
            digest,
            tuple(c.get(i, 0) for i in range(len(classes))),
        )
        for url, count, digest, c in zip(names, counts, sink.sha256, per_shard, strict=True)
    )
    _remove_stale_shards(out, {s.name for s in infos})
    index = ShardIndex(out, source_url or "", tuple(classes), infos, len(quarantine))
    storage.write_bytes_atomic(storage.join(out, "classes.json"), dumps(list(classes)))
    _write_jsonl(storage.join(out, "quarantine.jsonl"), quarantine)
    storage.write_bytes_atomic(storage.join(out, "index.json"), dumps(index.to_json()))
    return index
