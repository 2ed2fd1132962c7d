"""The one MLflow entry point: releases, audits, models and the registry.

Nothing else in radtrace imports mlflow. Every public function first calls
:func:`configure_tracking`, so it works in any process (a Prefect worker, a test, the CLI):

- ``MLFLOW_TRACKING_URI`` set: that server or store, with its own artifact locations.
- unset: an embedded store ``sqlite:///<data_dir>/mlflow.db`` with artifacts under
  ``<data_dir>/mlartifacts/<experiment>`` (``data_dir`` is ``$RADTRACE_HOME`` or ``./.radtrace``).

What goes where. A release run (experiment :data:`RELEASES`) holds the carriers file (the
secret key: an artifact only, never a parameter, tag or log line), the marker, the manifest and
pictures; tags ``radtrace.kind=release``, ``radtrace.release`` (URL) and
``radtrace.carrier_fingerprint``. An audit run (:data:`AUDITS`) holds the evidence, pictures and
an optional HTML report, tagged with the model and the release run it tested. Models are stored
without pickle: ``model/model.safetensors`` (a state dict) and ``model/arch.json`` (an
architecture description radtrace passes through), optionally registered as a model version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import safetensors.torch
import torch
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from radcore.carriers import Carriers
from tasks.figures import comparison_figure, histogram_figure, null_figure

__all__ = [
    "AUDITS",
    "EXPERIMENTS",
    "MODELS",
    "RELEASES",
    "ModelRef",
    "ReleaseRecord",
    "ResolvedModel",
    "audited",
    "comparison_figure",
    "configure_tracking",
    "data_dir",
    "ensure_experiment",
    "fetch_release_probes",
    "fetch_release_secrets",
    "histogram_figure",
    "list_model_versions",
    "list_releases",
    "load_state",
    "log_audit_run",
    "log_experiment_run",
    "log_model",
    "log_release_run",
    "release_params",
    "null_figure",
    "resolve_model",
    "tag_model_version",
]

RELEASES = "radtrace-releases"
AUDITS = "radtrace-audits"
EXPERIMENTS = "radtrace-experiments"
MODELS = "radtrace-models"

_KIND = "radtrace.kind"
_RELEASE = "radtrace.release"
_FINGERPRINT = "radtrace.carrier_fingerprint"
_MARKER_ID = "radtrace.marker_id"
_NUM_CLASSES = "radtrace.num_classes"
_MODEL_NAME = "radtrace.model_name"
_MODEL_VERSION = "radtrace.model_version"
_MODEL_URI = "radtrace.model_uri"
_RELEASE_RUN = "radtrace.release_run"

_CARRIERS = "carriers/carriers.safetensors"
_MARKER = "marker/marker.safetensors"
_PROBES = "blackbox/probes.safetensors"
_MARKER_INFO = "marker/marker.json"
_MODEL_DIR = "model"
_WEIGHTS = "model.safetensors"
_ARCH = "arch.json"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


# --- configuration ---------------------------------------------------------------------------


def data_dir() -> Path:
    """``$RADTRACE_HOME`` or ``./.radtrace`` as an absolute path, created if missing."""
    root = Path(os.environ.get("RADTRACE_HOME") or ".radtrace").expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _embedded() -> bool:
    return not os.environ.get("MLFLOW_TRACKING_URI", "").strip()


def configure_tracking() -> str:
    """Point MLflow at ``$MLFLOW_TRACKING_URI`` or the embedded sqlite store; return the URI.

    The URI may hold credentials (``https://user:token@host``): radtrace never prints or logs it.
    """
    # MLflow's per-download progress bars would bury radtrace's own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not _embedded():
        uri = os.environ["MLFLOW_TRACKING_URI"].strip()
        mlflow.set_tracking_uri(uri)
        return uri
    uri = f"sqlite:///{data_dir() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI as MLFLOW_TRACKING_URI (for subprocesses). Undo that: the
    # variable keeps meaning "chosen by the user", and every process derives the embedded store
    # from RADTRACE_HOME itself.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return uri


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=configure_tracking())


def _experiment_id(client: MlflowClient, name: str) -> str | None:
    exp = client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None and exp.lifecycle_stage == "active" else None


def ensure_experiment(name: str) -> str:
    """The id of the active experiment ``name``, created if missing.

    In the embedded store its artifacts go to ``<data_dir>/mlartifacts/<name>`` (a file URI);
    with ``MLFLOW_TRACKING_URI`` set, wherever that server puts them.
    """
    client = _client()
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if _embedded():
            slug = _SAFE_NAME.sub("-", name) if not _SAFE_NAME.fullmatch(name) else name
            location = (data_dir() / "mlartifacts" / slug).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as e:  # another worker created it meanwhile
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage != "active":
        raise ValueError(
            f"MLflow experiment {name!r} is deleted: restore it (`mlflow experiments restore "
            f"--experiment-id {exp.experiment_id if exp else '?'}`) or delete it for good"
        )
    return exp.experiment_id


# --- validation and staging ------------------------------------------------------------------


def _params(params: Mapping[str, Any], *, release: bool) -> list[Param]:
    out = []
    for key, value in params.items():
        low = str(key).lower()
        if release and ("carrier" in low or "seed" in low) and key != "carrier_fingerprint":
            raise ValueError(
                f"parameter {key!r} looks like key material (carriers are drawn from a "
                "cryptographic source, not a seed): drop it; only 'carrier_fingerprint' may be "
                "logged"
            )
        if isinstance(value, bytes | bytearray | memoryview | torch.Tensor) or (
            getattr(value, "ndim", 0) > 0  # NumPy arrays (NumPy scalars are fine)
        ):
            raise TypeError(
                f"parameter {key!r} is {type(value).__name__}: log numbers or strings as "
                "parameters; arrays and files belong in artifacts"
            )
        out.append(Param(str(key), str(value)))
    return out


def _metrics(metrics: Mapping[str, Any]) -> list[Metric]:
    now = int(time.time() * 1000)
    out = []
    for key, value in metrics.items():
        try:
            out.append(Metric(str(key), float(value), now, 0))
        except (TypeError, ValueError):
            raise TypeError(
                f"metric {key!r} is {type(value).__name__}, not a number: log scalars as "
                "metrics, put lists and arrays in the evidence JSON"
            ) from None
    return out


def _figures(figures: Mapping[str, bytes]) -> dict[str, bytes]:
    out = {}
    for name, data in figures.items():
        stem = name.removesuffix(".png")
        if not _SAFE_NAME.fullmatch(stem):
            raise ValueError(f"figure name {name!r}: use letters, digits, '.', '_' or '-'")
        if bytes(data[:8]) != _PNG_MAGIC:
            raise ValueError(
                f"figure {name!r} is not PNG bytes: pass what comparison_figure, "
                "histogram_figure or null_figure return"
            )
        out[f"figures/{stem}.png"] = bytes(data)
    return out


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # NumPy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON: convert it to numbers, strings or lists")


@contextmanager
def _new_run(
    client: MlflowClient, experiment: str, run_name: str | None, tags: dict[str, str]
) -> Iterator[str]:
    """A fresh run, FINISHED when the block ends, FAILED if it raises."""
    run = client.create_run(ensure_experiment(experiment), run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def _log_files(client: MlflowClient, run_id: str, files: Mapping[str, bytes]) -> None:
    """Upload ``{artifact path: bytes}`` through a private (0700) temp dir, removed after."""
    with tempfile.TemporaryDirectory(prefix="radtrace-stage-") as stage:
        for rel, data in files.items():
            path = Path(stage, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        client.log_artifacts(run_id, stage)


def _read_artifact(client: MlflowClient, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="radtrace-fetch-") as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=default).encode()


# --- releases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRecord:
    """A finished release run: where the release lives and which key and marker it used."""

    run_id: str
    release_url: str
    carrier_fingerprint: str
    marker_id: str
    num_classes: int
    created_ms: int


def _carriers(data: bytes) -> Carriers:
    try:
        return Carriers.from_bytes(bytes(data))
    except Exception:  # never echo the bytes: they are the key
        raise ValueError(
            "carriers_bytes is not a valid radtrace carriers file: pass Carriers.to_bytes()"
        ) from None


def log_release_run(
    manifest: dict[str, Any],
    *,
    carriers_bytes: bytes,
    marker_bytes: bytes | None,
    marker_info: dict[str, Any],
    params: dict[str, Any],
    metrics: dict[str, float],
    figures: dict[str, bytes],
    run_name: str | None = None,
    probes_bytes: bytes | None = None,
) -> str:
    """Log a finished release as one run in :data:`RELEASES`; returns its run id.

    probes_bytes: the black-box probe set (``ProbeSet`` or ``ResponseProbes`` bytes), private like
    the carriers.

    manifest: the release manifest (``tasks.release.write_manifest``); its ``"release"`` key, or
    else ``params["release"]``, is the release URL. ``carriers_bytes`` (``Carriers.to_bytes()``)
    must match the manifest's ``carrier_fingerprint`` when it has one. params: plain values,
    stringified; keys holding "carrier" or "seed" (except ``carrier_fingerprint``) are refused.
    figures: ``{name: PNG bytes}``, stored as ``figures/<name>.png``.
    """
    carriers = _carriers(carriers_bytes)
    release_url = manifest.get("release") or params.get("release")
    if not release_url:
        raise ValueError(
            "no release URL: set manifest['release'] or params['release'] to where it is published"
        )
    claimed = {manifest.get("carrier_fingerprint"), params.get("carrier_fingerprint")} - {None}
    if claimed - {carriers.fingerprint}:
        raise ValueError(
            f"carriers_bytes have fingerprint {carriers.fingerprint[:16]}… but the manifest or "
            "params name another: pass the carriers this release was marked with"
        )
    classes = manifest.get("classes")
    if classes is not None and len(classes) != carriers.num_classes:
        raise ValueError(
            f"the manifest lists {len(classes)} classes but the carriers have "
            f"{carriers.num_classes}: pass the carriers of this release"
        )
    marker_id = str(manifest.get("marker_id") or marker_info.get("marker_id") or carriers.marker_id)
    tags = {
        _KIND: "release",
        _RELEASE: str(release_url),
        _FINGERPRINT: carriers.fingerprint,
        _MARKER_ID: marker_id,
        _NUM_CLASSES: str(carriers.num_classes),
    }
    files = {_CARRIERS: bytes(carriers_bytes), _MARKER_INFO: _dumps(marker_info)}
    if marker_bytes is not None:
        files[_MARKER] = bytes(marker_bytes)
    if probes_bytes is not None:
        files[_PROBES] = bytes(probes_bytes)
    files["manifest.json"] = _dumps(manifest)
    files.update(_figures(figures))
    batch = {"params": _params(params, release=True), "metrics": _metrics(metrics)}
    name = run_name or f"release {str(release_url).rstrip('/').rsplit('/', 1)[-1]}"
    client = _client()
    with _new_run(client, RELEASES, name, tags) as run_id:
        client.log_batch(run_id, **batch)
        _log_files(client, run_id, files)
    return run_id


def _record(run: Any) -> ReleaseRecord:
    t = run.data.tags
    return ReleaseRecord(
        run_id=run.info.run_id,
        release_url=t.get(_RELEASE, ""),
        carrier_fingerprint=t.get(_FINGERPRINT, ""),
        marker_id=t.get(_MARKER_ID, ""),
        num_classes=int(t.get(_NUM_CLASSES, "0")),
        created_ms=int(run.info.start_time),
    )


def _search_runs(client: MlflowClient, experiment: str, filter_string: str) -> list[Any]:
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs(
            [exp_id],
            filter_string,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def list_releases() -> list[ReleaseRecord]:
    """All finished release runs, newest first."""
    filt = f"tags.`{_KIND}` = 'release' and attributes.status = 'FINISHED'"
    return [_record(r) for r in _search_runs(_client(), RELEASES, filt)]


def release_params(run_id: str) -> dict[str, str]:
    """The parameters a release run recorded (source, fraction, heldout, marker, ...)."""
    return dict(_client().get_run(run_id).data.params)


def fetch_release_secrets(run_id: str) -> tuple[bytes, bytes | None, dict[str, Any]]:
    """(carriers bytes, marker safetensors bytes or None, marker info) of a release run.

    The carriers are checked against the run's fingerprint tag. Keep the bytes in memory.
    """
    client = _client()
    run = client.get_run(run_id)
    if run.data.tags.get(_KIND) != "release" or run.info.status != "FINISHED":
        raise ValueError(
            f"run {run_id} is not a finished radtrace release run: pick one from list_releases()"
        )
    carriers = _read_artifact(client, run_id, _CARRIERS)
    if _carriers(carriers).fingerprint != run.data.tags.get(_FINGERPRINT):
        raise ValueError(
            f"the carriers artifact of run {run_id} does not match its fingerprint tag: the "
            "artifact was replaced or corrupted; restore it from the release's key backup"
        )
    names = {f.path for f in client.list_artifacts(run_id, "marker")}
    marker = _read_artifact(client, run_id, _MARKER) if _MARKER in names else None
    info = json.loads(_read_artifact(client, run_id, _MARKER_INFO))
    return carriers, marker, info


def fetch_release_probes(run_id: str) -> bytes | None:
    """The black-box probe set of a release run, or None when it recorded none."""
    client = _client()
    names = {f.path for f in client.list_artifacts(run_id, "blackbox")}
    return _read_artifact(client, run_id, _PROBES) if _PROBES in names else None


# --- models ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A logged model: registered (name, version) or not (both None); ``uri`` loads it."""

    name: str | None
    version: str | None
    run_id: str | None
    uri: str


@dataclass(frozen=True)
class ResolvedModel:
    """A model's files downloaded to ``local_dir`` (the caller may delete it when done).

    kind: ``"safetensors"`` (model.safetensors + arch.json) or ``"mlflow-pickle"`` (an MLflow
    pytorch-flavour model saved with pickle).
    """

    name: str | None
    version: str | None
    run_id: str | None
    local_dir: Path
    kind: str


def _ref(name: str, version: Any, run_id: str | None) -> ModelRef:
    return ModelRef(name, str(version), run_id, f"models:/{name}/{version}")


def _log_params_metrics(
    client: MlflowClient,
    run_id: str,
    params: dict[str, Any] | None,
    metrics: dict[str, float] | None,
) -> None:
    if params or metrics:
        client.log_batch(
            run_id,
            params=_params(params or {}, release=False),
            metrics=_metrics(metrics or {}),
        )


def log_model(
    state_dict: dict[str, torch.Tensor],
    arch: dict[str, Any],
    *,
    registered_name: str | None,
    run_id: str | None = None,
    experiment: str = MODELS,
    tags: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> ModelRef:
    """Store a state dict as ``model/model.safetensors`` + ``model/arch.json``; no pickle.

    Into run ``run_id`` if given, else a new run in ``experiment`` (tagged ``tags``), with
    ``params`` and ``metrics`` (e.g. the training recipe and test accuracy). With
    ``registered_name``, the ``model`` folder becomes a new version of that registered model
    (created if missing), with ``tags`` as version tags.
    """
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(
            f"state_dict values must be tensors; not {bad[:5]}: pass model.state_dict()"
        )
    # Clones: safetensors refuses tensors that share storage (tied weights, views).
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    files = {
        f"{_MODEL_DIR}/{_WEIGHTS}": safetensors.torch.save(tensors),
        f"{_MODEL_DIR}/{_ARCH}": _dumps(arch),
    }
    tags = {str(k): str(v) for k, v in (tags or {}).items()}
    client = _client()
    if run_id is None:
        with _new_run(client, experiment, registered_name, {_KIND: "model", **tags}) as run_id:
            _log_files(client, run_id, files)
            _log_params_metrics(client, run_id, params, metrics)
    else:
        _log_files(client, run_id, files)
        _log_params_metrics(client, run_id, params, metrics)
    if registered_name is None:
        return ModelRef(None, None, run_id, f"runs:/{run_id}/{_MODEL_DIR}")
    try:
        client.create_registered_model(registered_name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{_MODEL_DIR}"
    mv = client.create_model_version(registered_name, source, run_id=run_id, tags=tags)
    return _ref(registered_name, mv.version, run_id)


def _latest(client: MlflowClient, name: str) -> Any:
    """The highest version of registered model ``name``."""
    versions = client.get_registered_model(name).latest_versions or []
    if not versions:
        raise ValueError(f"registered model {name!r} has no versions: log one with log_model()")
    return max(versions, key=lambda v: int(v.version))


def _lookup(client: MlflowClient, ref: str) -> tuple[str | None, str | None, str | None, str]:
    """(name, version, run id, artifact URI to download) for a model reference."""
    if ref.startswith("runs:/"):
        return None, None, ref.removeprefix("runs:/").split("/", 1)[0], ref
    body = ref.removeprefix("models:/").rstrip("/")
    if ":/" in body:
        raise ValueError(
            f"{ref!r}: pass models:/name@alias, models:/name/3, a registered name or runs:/id/model"
        )
    try:
        if "@" in body:
            mv = client.get_model_version_by_alias(*body.split("@", 1))
        elif "/" in body:
            name, version = body.rsplit("/", 1)
            if version == "latest":
                mv = _latest(client, name)
            elif version.isdigit():
                mv = client.get_model_version(name, version)
            else:
                raise ValueError(
                    f"{ref!r}: use models:/name/<version number> or models:/name@alias"
                )
        elif ref.startswith("models:/m-"):  # an MLflow 3 logged model id
            return None, None, client.get_logged_model(body).source_run_id, ref
        else:
            mv = _latest(client, body)
    except MlflowException as e:
        # A missing alias is INVALID_PARAMETER_VALUE in the sqlite store.
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise ValueError(
            f"model {ref!r} not found ({e.message}): check the name, version or alias; "
            "list_model_versions() shows the registered models"
        ) from None
    return mv.name, str(mv.version), mv.run_id, f"models:/{mv.name}/{mv.version}"


def _kind(local: Path, ref: str) -> str:
    if (local / _WEIGHTS).is_file() and (local / _ARCH).is_file():
        return "safetensors"
    mlmodel = local / "MLmodel"
    if mlmodel.is_file():
        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors") or {}
        torch_flavor = flavors.get("pytorch")
        if torch_flavor is None:
            raise ValueError(
                f"{ref} is an MLflow model with flavors {sorted(flavors)}, not pytorch: radtrace "
                "loads safetensors state dicts (log them with tasks.tracking.log_model)"
            )
        data = local / str(torch_flavor.get("model_data", "data"))
        if (data / "model.pth").is_file():
            return "mlflow-pickle"
        found = sorted(p.name for p in data.iterdir()) if data.is_dir() else []
        raise ValueError(
            f"{ref} is an MLflow pytorch model stored as {found} (torch.export, not a state "
            "dict): log its state_dict with tasks.tracking.log_model instead"
        )
    found = sorted(p.name for p in local.iterdir())[:10]
    raise ValueError(
        f"{ref} holds neither {_WEIGHTS} + {_ARCH} nor an MLflow pytorch model (found {found}): "
        "log models with tasks.tracking.log_model"
    )


def resolve_model(ref: str, *, dst_dir: str | Path | None = None) -> ResolvedModel:
    """Find a model and download its files.

    ref: ``models:/name@alias``, ``models:/name/3``, ``models:/name/latest``, a registered
    name (its latest version), or ``runs:/<run id>/model``. The files go to ``dst_dir`` (an
    existing folder) or to a new temp dir that the caller owns.
    """
    client = _client()
    name, version, run_id, uri = _lookup(client, ref)
    local_root = Path(dst_dir) if dst_dir is not None else None
    tmp = None if local_root else Path(tempfile.mkdtemp(prefix="radtrace-model-"))
    try:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(local_root or tmp))
        )
        kind = _kind(local, ref)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ResolvedModel(name, version, run_id, local, kind)


def load_state(
    resolved: ResolvedModel, *, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict on the CPU, arch) of a resolved model.

    Safetensors models never unpickle anything. A pickled MLflow model is refused unless
    ``trust_pickle``; then it is loaded with ``mlflow.pytorch.load_model`` and ``arch`` is the
    MLmodel's metadata (or ``{}``) plus ``"module"``: the loaded ``nn.Module``.
    """
    local = Path(resolved.local_dir)
    if resolved.kind == "safetensors":
        arch = json.loads((local / _ARCH).read_text())
        return safetensors.torch.load_file(local / _WEIGHTS, device="cpu"), arch
    if resolved.kind != "mlflow-pickle":
        raise ValueError(f"unknown model kind {resolved.kind!r}: get it from resolve_model()")
    label = f"{resolved.name} v{resolved.version}" if resolved.name else f"run {resolved.run_id}"
    if not trust_pickle:
        raise PermissionError(
            f"model {label} is a pickled MLflow pytorch model: loading it could run arbitrary "
            "code. Pass --trust-pickle (trust_pickle=True) only if the model comes from a "
            "trusted source; better, re-log its state dict with tasks.tracking.log_model"
        )
    module = mlflow.pytorch.load_model(str(local), map_location="cpu")
    meta = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("metadata") or {}
    return module.state_dict(), {**meta, "module": module}


# --- registry --------------------------------------------------------------------------------


def list_model_versions(
    name_filter: str | None = None, tag_filter: dict[str, str] | None = None
) -> list[ModelRef]:
    """The latest version of each registered model, sorted by name.

    name_filter: a case-insensitive substring of the model name (not an MLflow filter string).
    tag_filter: keep a model only if every ``key: value`` is among the tags of its latest
    version or, failing that, of the registered model (version tags win).
    """
    client = _client()
    out, token = [], None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for rm in page:
            if name_filter and name_filter.lower() not in rm.name.lower():
                continue
            if not rm.latest_versions:
                continue
            latest = max(rm.latest_versions, key=lambda v: int(v.version))
            if tag_filter:
                tags = {**rm.tags, **client.get_model_version(rm.name, latest.version).tags}
                if any(tags.get(k) != str(v) for k, v in tag_filter.items()):
                    continue
            out.append(_ref(rm.name, latest.version, latest.run_id))
        token = page.token
        if not token:
            return sorted(out, key=lambda r: r.name or "")


def tag_model_version(ref: ModelRef, tags: dict[str, str]) -> None:
    """Set tags (values stringified) on a registered model version."""
    if ref.name is None or ref.version is None:
        raise ValueError(
            f"{ref.uri} is not a registered model version: register it with "
            "log_model(..., registered_name=...) before tagging"
        )
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(ref.name, ref.version, str(key), str(value))


def _model_tags(model: ModelRef) -> dict[str, str]:
    tags = {_MODEL_URI: model.uri}
    if model.name is not None and model.version is not None:
        tags |= {_MODEL_NAME: model.name, _MODEL_VERSION: str(model.version)}
    return tags


def audited(model: ModelRef, release_run_id: str) -> bool:
    """True if a finished audit run tested ``model`` against release run ``release_run_id``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", release_run_id):
        raise ValueError(f"{release_run_id!r} is not an MLflow run id: pass ReleaseRecord.run_id")
    filt = (
        f"tags.`{_KIND}` = 'audit' and tags.`{_RELEASE_RUN}` = '{release_run_id}' "
        "and attributes.status = 'FINISHED'"
    )
    want = _model_tags(model)
    key = [_MODEL_NAME, _MODEL_VERSION] if _MODEL_NAME in want else [_MODEL_URI]
    return any(
        all(r.data.tags.get(k) == want[k] for k in key)
        for r in _search_runs(_client(), AUDITS, filt)
    )


def log_audit_run(
    *,
    model: ModelRef,
    release: ReleaseRecord,
    metrics: dict[str, float],
    params: dict[str, Any],
    evidence: dict[str, Any],
    figures: dict[str, bytes],
    report_html: str | None = None,
    run_name: str | None = None,
) -> str:
    """Log one audit (model vs release) as a run in :data:`AUDITS`; returns its run id.

    Tags: ``radtrace.kind=audit``, the model (name, version, URI), the release run, URL and
    carrier fingerprint. Artifacts: ``evidence.json`` (NumPy arrays and tensors become lists),
    ``figures/<name>.png`` and ``report.html`` if given.
    """
    tags = {
        _KIND: "audit",
        **_model_tags(model),
        _RELEASE_RUN: release.run_id,
        _RELEASE: release.release_url,
        _FINGERPRINT: release.carrier_fingerprint,
    }
    files = {"evidence.json": _dumps(evidence, default=_json_default), **_figures(figures)}
    if report_html is not None:
        files["report.html"] = report_html.encode()
    batch = {"params": _params(params, release=False), "metrics": _metrics(metrics)}
    label = f"{model.name} v{model.version}" if model.name else model.uri
    client = _client()
    with _new_run(client, AUDITS, run_name or f"audit {label}", tags) as run_id:
        client.log_batch(run_id, **batch)
        _log_files(client, run_id, files)
    return run_id


def log_experiment_run(
    name: str,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    files: dict[str, bytes],
    figures: dict[str, bytes] | None = None,
) -> str:
    """One run in :data:`EXPERIMENTS` (a fraction sweep, a calibration study); returns its id."""
    client = _client()
    batch = {"params": _params(params, release=False), "metrics": _metrics(metrics)}
    with _new_run(client, EXPERIMENTS, name, {_KIND: "experiment"}) as run_id:
        client.log_batch(run_id, **batch)
        _log_files(client, run_id, {**files, **_figures(figures or {})})
    return run_id
