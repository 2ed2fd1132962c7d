"""The training task and `radtrace train`: a classifier trained on shards, logged and registered
without pickle."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from flows.cli import app
from flows.params import ReleaseParams
from flows.release import release_dataset
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


@pytest.mark.usefixtures("prefect_api")
def test_train_command_registers_a_marker_that_ranks_a_release(home, fmnist_dirs, tmp_path):
    args = ["train", str(fmnist_dirs["train"]), "--name", "owner-marker", "--epochs", "1"]
    out = CliRunner().invoke(app, [*args, "--test", str(fmnist_dirs["heldout"]), "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output.strip().splitlines()[-1])
    assert res["uri"] == "models:/owner-marker/1" and len(res["classes"]) == 10
    # Channels and normalisation measured on the images (Fashion-MNIST: about 0.286 / 0.353).
    assert res["arch"]["in_channels"] == 1
    assert res["arch"]["mean"][0] == pytest.approx(FMNIST_MEAN[0], abs=0.03)
    assert res["arch"]["std"][0] == pytest.approx(FMNIST_STD[0], abs=0.03)
    # Given to a release, it classifies the dataset's classes, so "auto" ranks the images.
    params = ReleaseParams(
        source=str(fmnist_dirs["train"]),
        out=str(tmp_path / "release"),
        fraction=0.25,
        marker=res["uri"],
        batch_size=64,
        probes_per_class=0,
    )
    release_dataset(params)
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["mark"]["selection"] == "hard" and manifest["mark"]["skip_hardest"] == 0.02


def test_train_command_names_the_fix_for_a_folder_that_is_not_shards(home, tmp_path):
    out = CliRunner().invoke(app, ["train", str(tmp_path), "--name", "m"])
    assert out.exit_code == 2 and "radtrace shard" in out.output
