"""Task: train an image classifier on shards and log it to MLflow (safetensors + arch record).

The recipe is radcore's :func:`radcore.train.train_classifier` (pad-and-crop + flip, SGD with
Nesterov momentum, one-cycle schedule). Used for the suspects of experiments and the demo, and
for the models a data owner trains on its own data: the marker and the clean reference.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NONE
from tqdm import tqdm

from radcore.train import TrainConfig, accuracy, train_classifier
from tasks.datasets import load_images
from tasks.models import build_model

__all__ = ["fill_arch", "train_on_shards"]


@task(name="train-classifier", cache_policy=NONE, persist_result=False)
def train_on_shards(
    shards: str,
    arch: dict[str, Any],
    cfg: TrainConfig,
    *,
    test: str | None = None,
    registered_name: str | None = None,
    seed: int = 0,
    tags: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``arch`` (an architecture record) on every image of the shard folder ``shards``;
    measure test accuracy on ``test``; log (and register as ``registered_name``) the model.
    ``in_channels``, ``mean`` and ``std`` left as None in ``arch`` are taken from the images.

    Returns ``{"uri", "name", "version", "run_id", "accuracy", "seconds_per_epoch", "arch"}``.
    """
    from tasks import tracking

    images, labels = load_images(shards)
    arch = fill_arch(arch, images)
    if int(labels.max()) >= arch["num_classes"]:
        raise ValueError(
            f"{shards} has labels up to {int(labels.max())} but the architecture record has "
            f"{arch['num_classes']} classes: set num_classes to the number of classes"
        )
    torch.manual_seed(seed)
    model = build_model(arch)
    mean, std = tuple(arch["mean"]), tuple(arch["std"])
    steps = cfg.epochs * ((len(images) + cfg.batch_size - 1) // cfg.batch_size)
    name = registered_name or arch["arch"]
    with tqdm(
        total=steps,
        desc=f"training {name}",
        unit="step",
        disable=not (progress and sys.stderr.isatty()),
    ) as bar:
        result = train_classifier(
            model,
            images,
            labels,
            mean,
            std,
            cfg,
            torch.Generator().manual_seed(seed),
            on_batch=lambda _e, _b, _loss: bar.update(1),
        )
    acc = None
    if test is not None:
        test_images, test_labels = load_images(test)
        acc = accuracy(model, test_images, test_labels, mean, std)
    params = {
        "shards": shards,
        "arch": arch["arch"],
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
        "augment": f"pad {cfg.pad} + random crop, flip {cfg.flip}",
        "num_train": len(images),
        "test": test or "",
    }
    metrics = {"final_train_loss": result.loss_per_epoch[-1]}
    if acc is not None:
        metrics["test_accuracy"] = acc
    ref = tracking.log_model(
        model.state_dict(),
        arch,
        registered_name=registered_name,
        tags=tags,
        params=params,
        metrics=metrics,
    )
    return {
        "uri": ref.uri,
        "name": ref.name,
        "version": ref.version,
        "run_id": ref.run_id,
        "accuracy": acc,
        "seconds_per_epoch": sum(result.seconds_per_epoch) / len(result.seconds_per_epoch),
        "arch": arch,
    }


def fill_arch(arch: dict[str, Any], images: torch.Tensor) -> dict[str, Any]:
    """``arch`` with ``in_channels``, ``mean`` and ``std`` (per channel, on the [0, 1] scale)
    taken from ``images`` (N×C×H×W uint8) where they are None."""
    filled = dict(arch)
    if filled.get("in_channels") is None:
        filled["in_channels"] = int(images.shape[1])
    if filled.get("mean") is None or filled.get("std") is None:
        x = images.to(torch.float64).div(255).transpose(0, 1).flatten(1)  # C×(N·H·W)
        filled["mean"] = [round(float(v), 4) for v in x.mean(1)]
        filled["std"] = [round(max(float(v), 1e-3), 4) for v in x.std(1)]
    return filled
