"""Fixtures for flow tests: Prefect's test harness, an embedded MLflow store, small models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from radcore.datasets import FASHION_MNIST_CLASSES
from radcore.nets import SmallResNet
from tasks.models import arch_record, state_bytes
from tasks.shards import ShardConfig, shard_source
from tasks.sources import open_idx

FMNIST_MEAN, FMNIST_STD = (0.286,), (0.353,)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh RADTRACE_HOME: the embedded sqlite MLflow store lives there."""
    monkeypatch.setenv("RADTRACE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def small_arch(widths: tuple[int, ...] = (8, 16, 32)) -> dict:
    return arch_record(
        "small_resnet",
        len(FASHION_MNIST_CLASSES),
        1,
        FMNIST_MEAN,
        FMNIST_STD,
        widths=list(widths),
    )


def save_model_folder(folder: Path, seed: int, widths: tuple[int, ...] = (8, 16, 32)) -> Path:
    """A radtrace model folder (model.safetensors + arch.json) of a random SmallResNet."""
    torch.manual_seed(seed)
    net = SmallResNet(len(FASHION_MNIST_CLASSES), 1, widths=widths)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(state_bytes(net))
    (folder / "arch.json").write_text(json.dumps(small_arch(widths)))
    return folder


@pytest.fixture(scope="session")
def fmnist_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small Fashion-MNIST shard folders: 240 training images, 120 held-out test images."""
    root = tmp_path_factory.mktemp("fmnist")
    shard_source(open_idx(limit=240), str(root / "train"), ShardConfig(max_samples=60))
    shard_source(open_idx(split="test", limit=120), str(root / "heldout"), ShardConfig(60))
    return {"train": root / "train", "heldout": root / "heldout"}
