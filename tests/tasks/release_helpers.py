"""Shared pieces for release tests: a tiny deterministic marker and Fashion-MNIST source shards."""

from __future__ import annotations

import torch

from radcore.carriers import Carriers, draw_carriers
from radcore.datasets import FASHION_MNIST_CLASSES
from radcore.mark import MarkConfig
from radcore.markers import Marker, marker_from_classifier
from radcore.nets import SmallResNet
from tasks.release import ReleaseConfig
from tasks.shards import ShardConfig, ShardIndex, shard_source
from tasks.sources import open_idx

__all__ = ["FAST", "fmnist_shards", "seeded_carriers", "tiny_marker"]

# Two marking steps keep unit tests at seconds; the release logic does not depend on steps.
FAST = ReleaseConfig(fraction=0.1, mark=MarkConfig(steps=2), batch_size=32)


def tiny_marker(seed: int = 0) -> Marker:
    """A random-weight SmallResNet marker (d = 32): the same weights for the same seed."""
    torch.manual_seed(seed)
    net = SmallResNet(len(FASHION_MNIST_CLASSES), 1, widths=(8, 16, 32))
    return marker_from_classifier(net, in_channels=1, mean=(0.286,), std=(0.353,))


def seeded_carriers(dim: int = 32, seed: int = 0, num_classes: int = 10) -> Carriers:
    """Carriers from a seeded byte stream (tests only: real carriers come from os.urandom)."""
    gen = torch.Generator().manual_seed(seed)

    def randbytes(n: int) -> bytes:
        return bytes(torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).tolist())

    return draw_carriers(num_classes, dim, marker_id="test", randbytes=randbytes)


def fmnist_shards(out: str, num: int = 200, per_shard: int = 64) -> ShardIndex:
    """The first ``num`` Fashion-MNIST training images as shards of ``per_shard`` samples."""
    return shard_source(open_idx(limit=num), out, ShardConfig(max_samples=per_shard), None, "idx")
