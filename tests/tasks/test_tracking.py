"""tasks.tracking against a real MLflow sqlite store in a temp dir (no server, no mocks)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from radcore.carriers import draw_carriers
from tasks import tracking

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An embedded tracking store in a fresh RADTRACE_HOME, shared by the module's tests.

    On tmpfs when there is one: creating the store runs ~100 small migrations whose fsyncs
    cost seconds on a busy disk.
    """
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path_factory.getbasetemp()
    with (
        tempfile.TemporaryDirectory(prefix="radtrace-home-", dir=base) as root,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("RADTRACE_HOME", root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        tracking.configure_tracking()
        yield Path(root)
        mlflow.set_tracking_uri(None)  # forget it; the context then restores the environment


@pytest.fixture(scope="module")
def client(home: Path) -> MlflowClient:
    return MlflowClient(tracking.configure_tracking())


def _carriers(num_classes: int = 3) -> bytes:
    return draw_carriers(num_classes, 8, marker_id="m1").to_bytes()


def _log_release(url: str, carriers: bytes, **overrides) -> str:
    args = dict(
        carriers_bytes=carriers,
        marker_bytes=None,
        marker_info={"marker_id": "m1"},
        params={"fraction": 0.1},
        metrics={"psnr_mean": 40.0},
        figures={},
    )
    manifest = {"release": url, "classes": ["a", "b", "c"], "marker_id": "m1"}
    return tracking.log_release_run(manifest, **{**args, **overrides})


def _images(n: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
    return a, b


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


# --- configuration ---------------------------------------------------------------------------


def test_configure_tracking_default_and_override(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RADTRACE_HOME")
    assert tracking.data_dir() == tmp_path / ".radtrace" and (tmp_path / ".radtrace").is_dir()
    assert tracking.configure_tracking() == f"sqlite:///{tmp_path / '.radtrace' / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI" not in os.environ  # still "not chosen by the user"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    assert tracking.configure_tracking() == f"sqlite:///{home / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == f"sqlite:///{home / 'mlflow.db'}"


def test_ensure_experiment_puts_artifacts_under_data_dir(home, client):
    exp_id = tracking.ensure_experiment(tracking.RELEASES)
    assert tracking.ensure_experiment(tracking.RELEASES) == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert location == (home / "mlartifacts" / tracking.RELEASES).as_uri()


# --- figures ---------------------------------------------------------------------------------


def test_figures_are_deterministic_pngs():
    gray = _images(3, (28, 28))
    png = tracking.comparison_figure(*gray)
    assert png == tracking.comparison_figure(*gray)
    assert _png_size(png) == (480, 540)  # 1.6 in per column, 3 rows of 1.8 in, 100 dpi
    assert _png_size(tracking.comparison_figure(*_images(2, (32, 32, 3)), amplify=10)) == (400, 540)
    hist = tracking.histogram_figure(np.linspace(35, 42, 50), title="PSNR", xlabel="dB")
    assert _png_size(hist) == (640, 400)
    null = tracking.null_figure(np.linspace(-2, 2, 100), 6.5, title="null", xlabel="z")
    assert _png_size(null) == (640, 400)
    with pytest.raises(ValueError, match="N×H×W"):
        tracking.comparison_figure(gray[0][..., None, None], gray[1][..., None, None])
    with pytest.raises(ValueError, match="1 to 8"):
        tracking.comparison_figure(*_images(9, (4, 4)))
    with pytest.raises(TypeError, match="uint8"):
        tracking.comparison_figure(gray[0] / 255, gray[1] / 255)


# --- releases --------------------------------------------------------------------------------


def test_release_run_round_trip(client, tmp_path, capfd):
    carriers = _carriers()
    png = tracking.histogram_figure([40.0, 41.0, 39.5], title="PSNR", xlabel="dB")
    run_id = tracking.log_release_run(
        {"release": "s3://bucket/rel-1", "classes": ["a", "b", "c"], "marker_id": "m1"},
        carriers_bytes=carriers,
        marker_bytes=b"marker-weights",
        marker_info={"marker_id": "m1", "dim": 8},
        params={"fraction": 0.1, "eps_255": 6},
        metrics={"psnr_mean": 39.3, "ssim_mean": 0.98},
        figures={"psnr": png},
    )
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"fraction": "0.1", "eps_255": "6"}
    assert run.data.metrics == {"psnr_mean": 39.3, "ssim_mean": 0.98}
    tags = run.data.tags
    assert tags["radtrace.release"] == "s3://bucket/rel-1"
    assert tags["radtrace.kind"] == "release"
    assert len(tags["radtrace.carrier_fingerprint"]) == 64
    listed = [
        f.path
        for d in (None, "carriers", "marker", "figures")
        for f in client.list_artifacts(run_id, d)
    ]
    assert {
        "carriers/carriers.safetensors",
        "marker/marker.safetensors",
        "marker/marker.json",
        "manifest.json",
        "figures/psnr.png",
    } <= set(listed)
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    assert (local / "figures" / "psnr.png").read_bytes() == png
    assert json.loads((local / "manifest.json").read_text())["release"] == "s3://bucket/rel-1"
    got, marker, info = tracking.fetch_release_secrets(run_id)
    assert got == carriers and marker == b"marker-weights" and info == {"marker_id": "m1", "dim": 8}
    # The key never shows up outside its artifact.
    shown = " ".join([*run.data.params.values(), *tags.values(), *capfd.readouterr()])
    assert carriers.hex()[:32] not in shown and carriers[-64:].decode("latin-1") not in shown


def test_release_run_refuses_seeds_and_wrong_carriers(client):
    before = len(client.search_runs([tracking.ensure_experiment(tracking.RELEASES)]))
    with pytest.raises(ValueError, match="seed"):
        _log_release("s3://b/r", _carriers(), params={"seed": 1})
    with pytest.raises(ValueError, match="carrier"):
        _log_release("s3://b/r", _carriers(), params={"carriers": "x"})
    with pytest.raises(ValueError, match="classes"):
        _log_release("s3://b/r", _carriers(num_classes=4))
    with pytest.raises(ValueError, match="Carriers.to_bytes"):
        _log_release("s3://b/r", b"not carriers")
    with pytest.raises(ValueError, match="fingerprint"):
        _log_release("s3://b/r", _carriers(), params={"carrier_fingerprint": "0" * 64})
    with pytest.raises(TypeError, match="artifacts"):
        _log_release("s3://b/r", _carriers(), params={"blob": b"\x00"})
    # Nothing was logged: the checks run before the run is created.
    assert len(client.search_runs([tracking.ensure_experiment(tracking.RELEASES)])) == before


def test_list_releases_newest_first(home):
    first = _log_release("file:///data/rel-a", _carriers())
    time.sleep(0.01)
    second = _log_release("file:///data/rel-b", _carriers(), marker_info={})
    records = tracking.list_releases()
    ids = [r.run_id for r in records]
    assert ids.index(second) < ids.index(first)
    rec = records[ids.index(second)]
    assert rec.release_url == "file:///data/rel-b"
    assert (rec.marker_id, rec.num_classes) == ("m1", 3) and rec.created_ms > 0
    with pytest.raises(AttributeError):
        rec.run_id = "x"  # frozen
    assert tracking.fetch_release_secrets(second)[1:] == (None, {})


# --- models ----------------------------------------------------------------------------------


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    return net.state_dict()


ARCH = {"arch": "vgg-small", "num_classes": 3, "in_channels": 1, "mean": [0.5], "std": [0.25]}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_log_model_and_resolve_every_way(client, tmp_path):
    state = _state()
    ref = tracking.log_model(state, ARCH, registered_name="suspect", tags={"team": "vision"})
    assert (ref.name, ref.version, ref.uri) == ("suspect", "1", "models:/suspect/1")
    ref2 = tracking.log_model(state, ARCH, registered_name="suspect")
    assert ref2.version == "2"
    client.set_registered_model_alias("suspect", "champion", "1")
    by_alias = tracking.resolve_model("models:/suspect@champion")  # into a new temp dir
    assert by_alias.local_dir.is_relative_to(tempfile.gettempdir())
    assert (by_alias.name, by_alias.version, by_alias.run_id) == ("suspect", "1", ref.run_id)
    assert by_alias.kind == "safetensors"
    by_name = tracking.resolve_model("suspect", dst_dir=_mkdir(tmp_path / "by-name"))
    assert (by_name.version, by_name.run_id) == ("2", ref2.run_id)
    by_number = tracking.resolve_model("models:/suspect/1", dst_dir=_mkdir(tmp_path / "by-no"))
    assert by_number.local_dir == tmp_path / "by-no" and by_number.run_id == ref.run_id
    by_run = tracking.resolve_model(f"runs:/{ref.run_id}/model", dst_dir=_mkdir(tmp_path / "run"))
    assert (by_run.name, by_run.run_id, by_run.kind) == (None, ref.run_id, "safetensors")
    for resolved in (by_alias, by_name, by_number, by_run):
        got, arch = tracking.load_state(resolved)
        _assert_same(got, state)
        assert arch == ARCH
    shutil.rmtree(by_alias.local_dir)
    assert client.get_model_version("suspect", "1").tags == {"team": "vision"}
    for missing in ("nobody", "models:/suspect/7", "models:/suspect@nope"):
        with pytest.raises(ValueError, match="not found"):
            tracking.resolve_model(missing)


def test_log_model_into_existing_run_unregistered(client, tmp_path):
    run_id = tracking.log_model(_state(), ARCH, registered_name=None).run_id
    ref = tracking.log_model(_state(), ARCH, registered_name=None, run_id=run_id)
    assert ref == tracking.ModelRef(None, None, run_id, f"runs:/{run_id}/model")
    resolved = tracking.resolve_model(ref.uri, dst_dir=tmp_path)
    _assert_same(tracking.load_state(resolved)[0], _state())


def test_pickled_mlflow_model_needs_trust(client, tmp_path):
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with mlflow.start_run(experiment_id=tracking.ensure_experiment(tracking.MODELS)):
        mlflow.pytorch.log_model(
            net,
            name="model",
            serialization_format="pickle",
            registered_model_name="pickled",
            pip_requirements=["torch"],  # no requirement inference: it loads the model
        )
    resolved = tracking.resolve_model("pickled", dst_dir=tmp_path)
    assert resolved.kind == "mlflow-pickle"
    with pytest.raises(PermissionError, match="--trust-pickle"):
        tracking.load_state(resolved)
    state, arch = tracking.load_state(resolved, trust_pickle=True)
    _assert_same(state, net.state_dict())
    assert isinstance(arch["module"], torch.nn.Module)


# --- registry and audits ---------------------------------------------------------------------


def test_registry_tags_and_audits(client):
    ref = tracking.log_model(_state(), ARCH, registered_name="audited-model")
    tracking.tag_model_version(ref, {"radtrace.verdict": "clean", "radtrace.log10_p": -0.3})
    tags = client.get_model_version("audited-model", ref.version).tags
    assert tags == {"radtrace.verdict": "clean", "radtrace.log10_p": "-0.3"}
    assert tracking.list_model_versions("AUDITED") == [ref]
    assert tracking.list_model_versions(tag_filter={"radtrace.verdict": "clean"}) == [ref]
    assert tracking.list_model_versions("audited", {"radtrace.verdict": "marked"}) == []
    with pytest.raises(ValueError, match="registered_name"):
        tracking.tag_model_version(tracking.ModelRef(None, None, "r", "runs:/r/model"), {})

    release, other = (_log_release(f"s3://b/audit-{i}", _carriers()) for i in range(2))
    record = next(r for r in tracking.list_releases() if r.run_id == release)
    assert not tracking.audited(ref, release)
    run_id = tracking.log_audit_run(
        model=ref,
        release=record,
        metrics={"log10_p": -5.8},
        params={"num_probes": 500, "num_control_carriers": 180},
        evidence={"cosines": np.array([0.1, 0.2, 0.3]), "log10_p": -5.8},
        figures={"null": tracking.null_figure([0.0, 1.0, -1.0], 4.0, title="t", xlabel="z")},
        report_html="<h1>audit</h1>",
    )
    run = client.get_run(run_id)
    assert run.data.tags["radtrace.kind"] == "audit"
    assert run.data.tags["radtrace.release_run"] == release
    assert run.data.tags["radtrace.model_version"] == ref.version
    listed = {f.path for f in client.list_artifacts(run_id)}
    assert {"evidence.json", "report.html", "figures"} <= listed
    assert tracking.audited(ref, release)
    assert not tracking.audited(ref, other)
    assert not tracking.audited(tracking.ModelRef(ref.name, "99", None, "models:/x/99"), release)
