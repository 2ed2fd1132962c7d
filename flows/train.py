"""Flow ``train-model``: train a classifier on a shard folder and register it in MLflow.

This is how a data owner makes its marker (and its clean reference) from its own images,
disjoint from what it will release. Given to ``radtrace release --marker models:/NAME/VERSION``,
the marker ranks each class's images by its loss, and the release marks the hardest ones:
pattern marks need that for a strong trace (README, "Marks"). An ImageNet marker cannot rank
a dataset's classes, so its releases fall back to a random selection.

The recipe is the training task's (:mod:`tasks.training`): pad-and-crop + flip, SGD with Nesterov
momentum, one-cycle schedule. The number of classes comes from the shard index; the channels and
the per-channel normalisation from the images.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.params import TrainParams
from radcore.train import TrainConfig
from tasks.models import arch_record
from tasks.shards import read_index
from tasks.training import train_on_shards

__all__ = ["train_model"]


@flow(name="train-model")
def train_model(params: TrainParams) -> dict[str, Any]:
    """Train ``params.arch`` on ``params.shards``; returns the training task's summary plus the
    class names."""
    logger = get_run_logger()
    index = read_index(params.shards)
    if len(index.classes) < 2:
        raise ValueError(f"{params.shards} has {len(index.classes)} class: a classifier needs 2+")
    arch = arch_record(params.arch, len(index.classes), None, None, None)
    out = train_on_shards(
        params.shards,
        arch,
        TrainConfig(epochs=params.epochs, batch_size=params.batch_size),
        test=params.test,
        registered_name=params.name,
        seed=params.seed,
    )
    logger.info("registered %s (test accuracy %s)", out["uri"], out["accuracy"])
    return {**out, "classes": list(index.classes)}
