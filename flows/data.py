"""Small flows for the data plane commands: ``shard-dataset`` and ``verify-release``."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.steps import shard_dataset, verify

__all__ = ["shard_flow", "verify_flow"]


@flow(name="shard-dataset")
def shard_flow(
    source: str, out: str, kind: str = "auto", max_samples: int = 1000
) -> dict[str, Any]:
    """Source -> WebDataset shards (bad input quarantined); returns the index summary."""
    index = shard_dataset(source, out, kind, max_samples)
    return {
        "url": out,
        "num_samples": index.num_samples,
        "num_shards": len(index.shards),
        "num_quarantined": index.num_quarantined,
        "classes": list(index.classes),
    }


@flow(name="verify-release")
def verify_flow(url: str, source: str | None = None) -> dict[str, Any]:
    """Check a release against its manifest (and its source shards when given)."""
    return verify(url, source).to_json()
