"""Probe sets for the black-box test: a pool of carriers and probe images marked with each.

The pool holds the release's C true carriers followed by K control carriers drawn afresh from a
cryptographic source; every probe image is marked with every pool carrier by :func:`mark`, the
same procedure for each (see :mod:`radcore.blackbox` for why that makes the test exact).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from radcore.carriers import Carriers, draw_carriers, safetensors_metadata
from radcore.mark import MarkConfig, mark
from radcore.markers import Marker

__all__ = ["ProbeSet", "draw_pool", "mark_probes", "pool_logprobs", "select_probes"]

_FORMAT = "radtrace-probes/1"


def draw_pool(
    carriers: Carriers, num_controls: int, randbytes: Callable[[int], bytes] = os.urandom
) -> tuple[Carriers, np.ndarray]:
    """The pool: true carriers (columns 0..C-1) then ``num_controls`` fresh controls.

    Returns (pool Carriers with C + K rows, true_index = arange(C)).
    """
    if num_controls < 5:
        raise ValueError(f"num_controls must be >= 5, got {num_controls}")
    controls = draw_carriers(num_controls, carriers.dim, randbytes=randbytes)
    vectors = torch.cat([carriers.vectors, controls.vectors])
    pool = Carriers(vectors, marker_id=carriers.marker_id)
    return pool, np.arange(carriers.num_classes)


def select_probes(labels: torch.Tensor, per_class: int, num_classes: int) -> torch.Tensor:
    """Indices of the first ``per_class`` images of each class (class-major order)."""
    picks = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()[:per_class]
        if len(idx) < per_class:
            raise ValueError(
                f"class {c} has {len(idx)} probe candidates, {per_class} needed: use more "
                "held-out images or fewer probes per class"
            )
        picks.append(idx)
    return torch.cat(picks)


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """Clean probes and their marked copies.

    images: n×C×H×W uint8; labels: n; marked: N×n×C×H×W uint8 (pool order);
    true_index: C pool columns of the true carriers; pool_fingerprint: SHA-256 of the pool;
    carrier_fingerprint: SHA-256 of the release's carriers (the true rows of the pool).
    """

    images: torch.Tensor
    labels: torch.Tensor
    marked: torch.Tensor
    true_index: np.ndarray
    pool_fingerprint: str
    carrier_fingerprint: str = ""

    @property
    def pool_size(self) -> int:
        return int(self.marked.shape[0])

    def to_bytes(self) -> bytes:
        """safetensors bytes. Private: copies marked with the true carriers carry the key."""
        tensors = {
            "images": self.images.contiguous(),
            "labels": self.labels.to(torch.int64).contiguous(),
            "marked": self.marked.contiguous(),
            "true_index": torch.from_numpy(np.asarray(self.true_index, dtype=np.int64)),
        }
        meta = {
            "format": _FORMAT,
            "pool_fingerprint": self.pool_fingerprint,
            "carrier_fingerprint": self.carrier_fingerprint,
        }
        return st_save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> ProbeSet:
        t = st_load(data)
        missing = {"images", "labels", "marked", "true_index"} - set(t)
        if missing:
            raise ValueError(f"not a radtrace probe set: it lacks {sorted(missing)}")
        meta = safetensors_metadata(data)
        return cls(
            t["images"],
            t["labels"],
            t["marked"],
            t["true_index"].numpy(),
            meta.get("pool_fingerprint", ""),
            meta.get("carrier_fingerprint", ""),
        )


def mark_probes(
    images: torch.Tensor,
    labels: torch.Tensor,
    pool: Carriers,
    true_index: np.ndarray,
    marker: Marker,
    cfg: MarkConfig = MarkConfig(),
    batch_size: int = 250,
    on_batch: Callable[[int], None] | None = None,
    generator: torch.Generator | None = None,
) -> ProbeSet:
    """Mark every probe with every pool carrier. images: n×C×H×W uint8 on the marker's device.

    on_batch(count) is called after each batch (progress bars).
    """
    n, n_pool = images.shape[0], pool.num_classes
    marked = torch.empty((n_pool, *images.shape), dtype=torch.uint8)
    flat_w = torch.arange(n_pool).repeat_interleave(n)  # carrier of each (carrier, probe) pair
    flat_i = torch.arange(n).repeat(n_pool)
    for start in range(0, n * n_pool, batch_size):
        w, i = flat_w[start : start + batch_size], flat_i[start : start + batch_size]
        result = mark(images[i], w.to(images.device), pool, marker, cfg, generator)
        marked[w, i] = result.images.cpu()
        if on_batch is not None:
            on_batch(len(w))
    true_index = np.asarray(true_index)
    true = Carriers(pool.vectors[torch.from_numpy(true_index)], marker_id=pool.marker_id)
    return ProbeSet(
        images.cpu(), labels.cpu(), marked, true_index, pool.fingerprint, true.fingerprint
    )


@torch.no_grad()
def pool_logprobs(
    logprob_fn: Callable[[torch.Tensor], torch.Tensor], probes: ProbeSet
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n×C clean, N×n×C marked) log-probabilities of a model given as ``logprob_fn``
    (uint8 N×C×H×W -> N×K log-probabilities; black-box access is all it needs)."""
    clean = logprob_fn(probes.images)
    n_pool, n = probes.marked.shape[:2]
    flat = probes.marked.reshape(n_pool * n, *probes.marked.shape[2:])
    return clean, logprob_fn(flat).reshape(n_pool, n, -1)
