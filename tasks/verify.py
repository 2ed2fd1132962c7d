"""Check a release against its manifest, and optionally against its source shards.

:func:`verify_release` reads every shard once and reports each problem in words: a missing
manifest (the release is unfinished), a missing, extra or altered shard, a wrong sample count,
duplicate keys, a marked count that disagrees with the manifest. Given the source shard folder
it also compares pixels, sample by sample: a sample counts as marked when its pixels differ
from the source, and that count must equal what the manifest declares, shard by shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from tasks import storage
from tasks.release import MANIFEST_FORMAT
from tasks.tario import iter_tar_bytes, iter_tar_samples

__all__ = ["VerifyReport", "verify_release"]

_SHARD_NAME = re.compile(r"shard-\d{6}\.tar")


@dataclass(frozen=True)
class VerifyReport:
    """ok is True when ``problems`` is empty. Counts are what was found, not what was declared."""

    url: str
    ok: bool
    problems: tuple[str, ...]
    num_shards: int
    num_samples: int
    num_marked_declared: int
    num_marked_found: int | None  # None unless checked against the source

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ok": self.ok,
            "problems": list(self.problems),
            "num_shards": self.num_shards,
            "num_samples": self.num_samples,
            "num_marked_declared": self.num_marked_declared,
            "num_marked_found": self.num_marked_found,
        }


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im)


def _read_shard(url: str) -> tuple[str, list[dict[str, Any]]]:
    """SHA-256 and samples of one shard, from a single read."""
    data = storage.read_bytes(url)
    return hashlib.sha256(data).hexdigest(), list(iter_tar_bytes(data, url))


def verify_release(url: str, source: str | None = None) -> VerifyReport:
    """Check the release at ``url``; with ``source`` (its shard folder), also compare pixels."""
    problems: list[str] = []
    manifest_url = storage.join(url, "manifest.json")
    if not storage.exists(manifest_url):
        return VerifyReport(
            url,
            False,
            (f"no manifest.json in {url}: the release is unfinished; run it again to finish",),
            0,
            0,
            0,
            None,
        )
    manifest = json.loads(storage.read_bytes(manifest_url))
    if manifest.get("format") != MANIFEST_FORMAT:
        problems.append(f"manifest format is {manifest.get('format')!r}, not {MANIFEST_FORMAT}")
    declared = {s["name"]: s for s in manifest.get("shards", [])}
    present = {e.name for e in storage.listdir(url) if _SHARD_NAME.fullmatch(e.name)}
    for name in sorted(present - declared.keys()):
        problems.append(f"{name} is in the folder but not in the manifest")
    seen: set[str] = set()
    total = found_marked = 0
    for name, entry in declared.items():
        shard_url = storage.join(url, name)
        if name not in present:
            problems.append(f"{name} is missing")
            continue
        try:
            digest, samples = _read_shard(shard_url)
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"{name} cannot be read as a tar ({exc})")
            continue
        if digest != entry["sha256"]:
            problems.append(
                f"{name} has SHA-256 {digest[:12]}…, the manifest says {entry['sha256'][:12]}…"
            )
        if len(samples) != entry["count"]:
            problems.append(
                f"{name} holds {len(samples)} samples, the manifest says {entry['count']}"
            )
        total += len(samples)
        dupes = [s["__key__"] for s in samples if s["__key__"] in seen]
        seen.update(s["__key__"] for s in samples)
        if len(dupes) > 0 or len({s["__key__"] for s in samples}) != len(samples):
            problems.append(f"{name} repeats keys already seen: {dupes[:3]}")
        if source is not None:
            marked = _count_marked(storage.join(source, name), samples, name, problems)
            found_marked += marked
            if marked != entry["marked"]:
                problems.append(
                    f"{name}: {marked} samples differ from the source, the manifest says "
                    f"{entry['marked']} are marked"
                )
    if total != manifest.get("num_samples"):
        problems.append(
            f"the shards hold {total} samples, the manifest says {manifest.get('num_samples')}"
        )
    declared_marked = sum(int(s["marked"]) for s in declared.values())
    if declared_marked != manifest.get("num_marked"):
        problems.append(
            f"shard entries declare {declared_marked} marked, the manifest total says "
            f"{manifest.get('num_marked')}"
        )
    return VerifyReport(
        url,
        not problems,
        tuple(problems),
        len(declared),
        total,
        int(manifest.get("num_marked", 0)),
        found_marked if source is not None else None,
    )


def _count_marked(
    source_shard: str, samples: list[dict[str, Any]], name: str, problems: list[str]
) -> int:
    """How many release samples differ in pixels from the source sample of the same key."""
    if not storage.exists(source_shard):
        problems.append(f"{name}: its source shard {source_shard} is missing")
        return 0
    original = {s["__key__"]: s for s in iter_tar_samples(source_shard)}
    keys = [s["__key__"] for s in samples]
    if [k for k in original if k in set(keys)] != keys:
        problems.append(f"{name}: keys or their order differ from the source shard")
    marked = 0
    for s in samples:
        src = original.get(s["__key__"])
        if src is None:
            problems.append(f"{name}: key {s['__key__']} is not in the source")
            continue
        if s.get("cls") != src.get("cls"):
            problems.append(f"{name}: key {s['__key__']} changed class")
        a, b = _pixels(s["png"]), _pixels(src["png"])
        if a.shape != b.shape:
            problems.append(f"{name}: key {s['__key__']} changed shape {b.shape} -> {a.shape}")
        elif not np.array_equal(a, b):
            marked += 1
    return marked
