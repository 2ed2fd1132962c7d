"""Shared fixtures: offline real images (Fashion-MNIST from Debian, foolbox's samples)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radcore.datasets import FASHION_MNIST_DIR, load_fashion_mnist

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def fashion_mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"Fashion-MNIST is missing under {FASHION_MNIST_DIR}: run `make test` (it installs "
            "Debian's dataset-fashion-mnist) or `apt-get install dataset-fashion-mnist`"
        )
    return load_fashion_mnist("test")


def _foolbox_dir() -> Path:
    # Locate the package without importing it (its import pulls in every attack).
    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        pytest.fail("foolbox is not installed: run `make test` (it installs the dev extras)")
    return Path(spec.origin).parent / "data"


def load_foolbox_samples(prefix: str, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """foolbox's bundled samples `<prefix>_<i>_<label>.{png,jpg}` as N×3×H×W uint8 + labels."""
    files = sorted(_foolbox_dir().glob(f"{prefix}_*"))
    images, labels = [], []
    for f in files:
        im = Image.open(f).convert("RGB")
        if size is not None:
            im = im.resize((size, size), Image.BILINEAR)
        images.append(torch.from_numpy(np.array(im)).permute(2, 0, 1))
        labels.append(int(f.stem.rsplit("_", 1)[1]))
    return torch.stack(images), torch.tensor(labels)
