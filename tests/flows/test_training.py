"""The training task: a classifier trained on shards, logged and registered without pickle."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from radcore.train import TrainConfig, accuracy
from tasks import tracking
from tasks.audit import load_suspect
from tasks.datasets import load_images
from tasks.training import train_on_shards
from tests.flows.conftest import FMNIST_MEAN, FMNIST_STD, small_arch


def test_trained_model_is_registered_with_its_accuracy_and_reloads_identically(home, fmnist_dirs):
    cfg = TrainConfig(epochs=6, batch_size=32)
    out = train_on_shards.fn(
        str(fmnist_dirs["train"]),
        small_arch(),
        cfg,
        test=str(fmnist_dirs["heldout"]),
        registered_name="trained",
        seed=0,
        progress=False,
    )
    assert out["uri"] == "models:/trained/1" and 0.0 <= out["accuracy"] <= 1.0
    run = MlflowClient(tracking.configure_tracking()).get_run(out["run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(out["accuracy"])
    assert run.data.params["epochs"] == "6" and run.data.params["num_train"] == "240"
    # Loaded back from the registry (safetensors, no pickle), it scores exactly the same.
    suspect = load_suspect(out["uri"])
    images, labels = load_images(str(fmnist_dirs["heldout"]))
    again = accuracy(suspect.model, images, labels, FMNIST_MEAN, FMNIST_STD)
    assert again == pytest.approx(out["accuracy"])
    # 240 images, 6 epochs: better than chance (0.1) on held-out images, or training is broken.
    assert out["accuracy"] > 0.3


def test_labels_beyond_the_architecture_are_refused(home, fmnist_dirs):
    arch = {**small_arch(), "num_classes": 5}
    with pytest.raises(ValueError, match="num_classes"):
        train_on_shards.fn(str(fmnist_dirs["train"]), arch, TrainConfig(epochs=1), progress=False)
