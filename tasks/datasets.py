"""Shard folders as tensors, for training and audits (small datasets that fit in memory)."""

from __future__ import annotations

import io
import json

import numpy as np
import torch
from PIL import Image

from tasks import storage
from tasks.shards import read_index
from tasks.tario import iter_tar_samples

__all__ = ["load_images", "shard_names"]


def shard_names(url: str) -> list[str]:
    """Shard names of a shard folder (``index.json``) or a finished release (``manifest.json``)."""
    if storage.exists(storage.join(url, "index.json")):
        return [info.name for info in read_index(url).shards]
    manifest_url = storage.join(url, "manifest.json")
    if storage.exists(manifest_url):
        return [entry["name"] for entry in json.loads(storage.read_bytes(manifest_url))["shards"]]
    raise FileNotFoundError(
        f"{url} holds neither index.json (a shard folder) nor manifest.json (a finished "
        "release): shard it with `radtrace shard` or finish the release first"
    )


def load_images(url: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of a shard folder or a release, in shard order (the first ``limit`` when
    given): N×C×H×W uint8 and N int64 labels. All images must have one size."""
    images, labels = [], []
    for name in shard_names(url):
        for s in iter_tar_samples(storage.join(url, name)):
            with Image.open(io.BytesIO(s["png"])) as im:
                arr = np.asarray(im)
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(int(s["cls"]))
            if len(images) == limit:
                break
        if len(images) == limit:
            break
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(f"images in {url} have several sizes {sorted(shapes)[:3]}: use one size")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)
