"""Flows under Prefect's test harness, with the embedded MLflow store (real, not mocked)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError

from flows.audit import audit_model, audit_registered_models
from flows.params import AuditParams, ReleaseParams, ScheduledAuditParams
from flows.release import release_dataset
from radcore.nets import SmallResNet
from tasks import tracking
from tasks.models import state_bytes
from tasks.verify import verify_release
from tests.flows.conftest import save_model_folder, small_arch

pytestmark = pytest.mark.usefixtures("prefect_api")


def _release(home: Path, fmnist_dirs: dict[str, Path], tmp_path: Path) -> dict:
    marker = save_model_folder(tmp_path / "marker", seed=0)
    params = ReleaseParams(
        source=str(fmnist_dirs["train"]),
        out=str(tmp_path / "release"),
        fraction=0.25,
        marker=str(marker),
        steps=2,
        batch_size=64,
        heldout=str(fmnist_dirs["heldout"]),
        probes_per_class=5,
        num_controls=6,
    )
    return release_dataset(params)


def _register(name: str, seed: int) -> tracking.ModelRef:
    torch.manual_seed(seed)
    net = SmallResNet(10, 1, widths=(8, 16, 32))
    state = {k: v.clone() for k, v in net.state_dict().items()}
    return tracking.log_model(state, small_arch(), registered_name=name)


def test_release_flow_writes_a_verified_release_and_one_mlflow_run(home, fmnist_dirs, tmp_path):
    summary = _release(home, fmnist_dirs, tmp_path)
    out = tmp_path / "release"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mlflow_run_id"] == summary["mlflow_run_id"]
    assert summary["num_samples"] == 240 and summary["num_marked"] == manifest["num_marked"] > 0
    assert verify_release(str(out), source=str(fmnist_dirs["train"])).ok

    run = MlflowClient(tracking.configure_tracking()).get_run(summary["mlflow_run_id"])
    params = run.data.params
    assert params["fraction"] == "0.25" and params["heldout"] == str(fmnist_dirs["heldout"])
    assert not any("seed" in k or (k.startswith("carrier") and k != "carrier_fingerprint")
                   for k in params)  # fmt: skip
    assert run.data.metrics["psnr_min"] >= 38.0 - 1e-6
    carriers_bytes, _, _ = tracking.fetch_release_secrets(summary["mlflow_run_id"])
    assert Path(summary["carriers_file"]).read_bytes() == carriers_bytes
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert artifacts == {"figures/examples.png", "figures/psnr_histogram.png"}
    assert str(out) not in summary["carriers_file"]  # the key is not published with the data


def test_bad_release_parameters_fail_before_any_work(tmp_path: Path):
    with pytest.raises(ValidationError, match="fraction"):
        ReleaseParams(source=str(tmp_path), out=str(tmp_path / "r"), fraction=1.5)
    with pytest.raises(ValidationError, match="extra"):
        ReleaseParams(source=str(tmp_path), out=str(tmp_path / "r"), seed=3)


def test_audit_flow_logs_a_run_and_tags_the_model_version(home, fmnist_dirs, tmp_path):
    summary = _release(home, fmnist_dirs, tmp_path)
    ref = _register("suspect-a", seed=1)
    report = tmp_path / "report.html"
    result = audit_model(
        AuditParams(model="models:/suspect-a/1", num_heldout=100, report=str(report))
    )
    assert result["release_run"] == summary["mlflow_run_id"]
    assert result["log10_p_blackbox"] is not None and result["log10_p_blackbox"] <= 0
    assert result["verdict"] in ("detected", "not detected")
    client = MlflowClient(tracking.configure_tracking())
    run = client.get_run(result["audit_run"])
    assert run.data.metrics["log10_p_whitebox"] == pytest.approx(result["log10_p_whitebox"])
    evidence = json.loads(
        Path(client.download_artifacts(run.info.run_id, "evidence.json", str(tmp_path))).read_text()
    )
    assert evidence["release"]["carrier_fingerprint"] == summary["carrier_fingerprint"]
    assert len(evidence["test"]["cosines"]) == 10 and evidence["verdict"] == result["verdict"]
    bb = evidence["blackbox"]
    # A pattern release (the default) is audited by the response test: no control carriers.
    assert bb["ran"] and bb["statistic"] == "response" and bb["tail"] == "exact"
    assert bb["pool_size"] == 10 and bb["num_probes"] == 50
    assert bb["log10_p"] == pytest.approx(result["log10_p_blackbox"])
    page = report.read_text()
    assert summary["carrier_fingerprint"] in page and "data:image/png;base64," in page
    assert evidence["reproduce"] in page.replace("&#x27;", "'")
    (tmp_path / "dl").mkdir()
    logged = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path / "dl"))
    assert Path(logged).read_text() == page
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/whitebox_null.png", "figures/blackbox_null.png"}
    tags = client.get_model_version(ref.name, ref.version).tags
    assert tags["radtrace.verdict"] == result["verdict"]
    assert float(tags["radtrace.log10_p"]) == pytest.approx(result["log10_p"], abs=1e-3)
    # The adjusted p is Bonferroni over the two tests: min p times 2.
    lowest = min(result["log10_p_whitebox"], result["log10_p_blackbox"])
    assert result["log10_p"] == pytest.approx(min(0.0, lowest + 0.30103), abs=1e-4)


def test_scheduled_audit_reports_a_broken_model_goes_on_and_skips_done_pairs(
    home, fmnist_dirs, tmp_path
):
    _release(home, fmnist_dirs, tmp_path)
    _register("good-model", seed=2)
    broken = {"fc.weight": torch.zeros(10, 32)}  # not a SmallResNet state dict
    tracking.log_model(broken, small_arch(), registered_name="broken-model")
    first = audit_registered_models(ScheduledAuditParams(num_heldout=100))
    assert [a["model_name"] for a in first["audited"]] == ["good-model"]
    assert [f["model"] for f in first["failed"]] == ["broken-model/1"]
    assert (
        "Missing key" in first["failed"][0]["error"] or "state_dict" in first["failed"][0]["error"]
    )
    second = audit_registered_models(ScheduledAuditParams(num_heldout=100))
    assert second["audited"] == [] and second["skipped"] == 1
    forced = audit_registered_models(
        ScheduledAuditParams(num_heldout=100, force=True, name_filter="good")
    )
    assert len(forced["audited"]) == 1


def test_a_pickled_registered_model_is_refused_without_trust_pickle(home, fmnist_dirs, tmp_path):
    import mlflow

    _release(home, fmnist_dirs, tmp_path)
    tracking.configure_tracking()
    torch.manual_seed(3)
    net = SmallResNet(10, 1, widths=(8, 16, 32))
    with mlflow.start_run():
        mlflow.pytorch.log_model(
            net, name="model", serialization_format="pickle", registered_model_name="pickled"
        )
    with pytest.raises(PermissionError, match="--trust-pickle"):
        audit_model(AuditParams(model="models:/pickled/1", num_heldout=100))


def test_model_folder_and_state_dict_checkpoints_audit_without_the_registry(
    home, fmnist_dirs, tmp_path
):
    _release(home, fmnist_dirs, tmp_path)
    folder = save_model_folder(tmp_path / "suspect", seed=4)
    by_folder = audit_model(AuditParams(model=str(folder), num_heldout=100))
    torch.manual_seed(4)
    net = SmallResNet(10, 1, widths=(8, 16, 32))
    torch.save(net.state_dict(), tmp_path / "suspect.pt")
    by_pt = audit_model(
        AuditParams(
            model=str(tmp_path / "suspect.pt"), arch=str(folder / "arch.json"), num_heldout=100
        )
    )
    assert by_pt["log10_p_whitebox"] == pytest.approx(by_folder["log10_p_whitebox"])
    assert state_bytes(net) == (folder / "model.safetensors").read_bytes()


def test_calibration_task_runs_on_a_pattern_release(home, fmnist_dirs, tmp_path):
    """`radtrace experiment`'s calibration task on a real release run and a registered model
    that never saw it: every test reports its null audits (their figures are measured by
    `radtrace experiment`, README; 40 trials are too few to assert calibration here)."""
    from tasks.calibration import calibrate_model

    summary = _release(home, fmnist_dirs, tmp_path)
    _register("clean-b", seed=2)
    out = calibrate_model.fn(
        "models:/clean-b/1",
        summary["mlflow_run_id"],
        None,
        str(fmnist_dirs["heldout"]),
        trials=40,
        num_heldout=100,
    )
    for test in ("blackbox", "paired_ttest", "whitebox"):
        assert out[test]["trials"] == 40
        assert 0.0 <= out[test]["fpr_0.01"] <= out[test]["fpr_0.05"] <= 1.0


def test_release_with_a_marker_that_cannot_rank_warns_and_names_the_fix(
    home, fmnist_dirs, tmp_path, caplog
):
    # The default ImageNet marker does not classify Fashion-MNIST: "auto" falls back to a
    # random choice, which leaves pattern marks little trace, and the run log says what to do.
    runs = logging.getLogger("prefect.flow_runs")
    runs.addHandler(caplog.handler)
    try:
        params = ReleaseParams(
            source=str(fmnist_dirs["train"]),
            out=str(tmp_path / "release"),
            fraction=0.25,
            marker="efficientnet-lite0",
            marker_input_size=32,
            batch_size=64,
            probes_per_class=0,
        )
        release_dataset(params)
    finally:
        runs.removeHandler(caplog.handler)
    manifest = json.loads((tmp_path / "release" / "manifest.json").read_text())
    assert manifest["mark"]["selection"] == "random"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("radtrace train" in m and "--marker models:/" in m for m in warned), warned
