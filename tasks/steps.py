"""Prefect tasks: thin adapters around the data plane, one plain-function call each.

Tasks pass references (URLs, small dicts, frozen plans), never tensors or carrier values: the
carriers travel as the URL of their private file and are read inside the task. Inputs are not
hashed for caching (``NONE`` cache policy) and results are not persisted, so no carrier value
can end up in Prefect's database or result storage. Only I/O tasks retry.
"""

from __future__ import annotations

from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NONE

from radcore.carriers import Carriers, draw_carriers
from tasks import storage
from tasks.models import load_marker
from tasks.release import (
    Receipt,
    ReleaseConfig,
    ReleasePlan,
    ShardTask,
    plan_release,
    release_shard,
    write_manifest,
)
from tasks.shards import ShardConfig, ShardIndex, read_index, shard_source
from tasks.verify import VerifyReport, verify_release

__all__ = [
    "device_for",
    "draw_and_store_carriers",
    "finish_release",
    "mark_shard",
    "plan_shards",
    "read_carriers",
    "shard_dataset",
    "shard_idx_range",
    "verify",
]

_IO = {"retries": 2, "retry_delay_seconds": 2}
_PLAIN = {"cache_policy": NONE, "persist_result": False}


def read_carriers(url: str) -> Carriers:
    """Load a carriers file from any storage URL (checks its fingerprint)."""
    return Carriers.from_bytes(storage.read_bytes(url))


def device_for(slot: int) -> str:
    """Round robin over the visible GPUs (one GPU per marking task), else the CPU."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{slot % n}" if n else "cpu"


@task(name="shard", **_IO, **_PLAIN)
def shard_dataset(
    source: str, out: str, kind: str = "auto", max_samples: int = 1000, max_bytes: int = 2**28
) -> ShardIndex:
    """Source -> shards under ``out``, unless ``out`` already holds a finished shard index."""
    if storage.exists(storage.join(out, "index.json")):
        index = read_index(out)
        if index.source == source:
            return index
    from tasks.shards import open_source

    return shard_source(
        open_source(source, kind), out, ShardConfig(max_samples, max_bytes), None, source
    )


@task(name="shard-idx", **_IO, **_PLAIN)
def shard_idx_range(
    out: str,
    split: str = "train",
    offset: int = 0,
    limit: int | None = None,
    root: str | None = None,
    max_samples: int = 1000,
) -> ShardIndex:
    """A range of an IDX dataset (default: Debian's Fashion-MNIST) -> shards under ``out``,
    unless ``out`` already holds the shards of this very range."""
    from tasks.sources import open_idx

    end = "" if limit is None else offset + limit
    tag = f"idx:{root or 'fashion-mnist'}:{split}[{offset}:{end}]"
    if storage.exists(storage.join(out, "index.json")) and read_index(out).source == tag:
        return read_index(out)
    source = open_idx(root, split=split, limit=limit, offset=offset)
    return shard_source(source, out, ShardConfig(max_samples), None, tag)


@task(name="draw-carriers", **_PLAIN)
def draw_and_store_carriers(num_classes: int, marker_spec: dict[str, Any], out: str) -> str:
    """Draw fresh carriers for the marker, write them to the private URL ``out``; return the
    fingerprint (the only thing about them that may be shown)."""
    marker = load_marker(marker_spec)
    carriers = draw_carriers(num_classes, marker.dim, marker_id=marker.marker_id)
    storage.write_bytes_atomic(out, carriers.to_bytes())
    return carriers.fingerprint


@task(name="plan-release", **_PLAIN)
def plan_shards(
    shards: str, out: str, carriers_url: str, marker_spec: dict[str, Any], cfg: ReleaseConfig
) -> ReleasePlan:
    return plan_release(shards, out, read_carriers(carriers_url), load_marker(marker_spec), cfg)


@task(name="mark-shard", retries=1, retry_delay_seconds=2, **_PLAIN)
def mark_shard(
    shard: ShardTask, carriers_url: str, marker_spec: dict[str, Any], slot: int = 0
) -> Receipt:
    """Mark one shard (or return its receipt when a previous run finished it)."""
    device = device_for(slot)
    return release_shard(
        shard, read_carriers(carriers_url), load_marker(marker_spec, device), device
    )


@task(name="write-manifest", **_IO, **_PLAIN)
def finish_release(
    plan: ReleasePlan, receipts: list[Receipt], mlflow_run_id: str | None = None
) -> dict[str, Any]:
    return write_manifest(plan, receipts, mlflow_run_id)


@task(name="verify-release", **_IO, **_PLAIN)
def verify(url: str, source: str | None = None) -> VerifyReport:
    return verify_release(url, source)
