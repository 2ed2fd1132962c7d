"""The pipeline on the real local stack, driven the way a user drives it: the `radtrace` CLI.

`radtrace stack up` -> source shards on S3 -> a release to S3 through the real Prefect server
(threads) and the same release with `--runner dask` on a 2-worker LocalCluster (byte-identical
shards) -> a model registered in the real MLflow server -> `radtrace deploy` -> the
`audit-registered-models` deployment run by a process worker (`--run-once`) -> the audit run,
its metrics and the version tags read back through the MLflow client -> `radtrace stack down`
leaves no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.flows.conftest import save_model_folder, small_arch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _last_json(out: str) -> dict:
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def test_release_dask_registry_and_scheduled_audit_by_a_worker(tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_"))}
    env.update(RADTRACE_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    radtrace = str(BIN / "radtrace")
    state = _last_json(_run([radtrace, "stack", "up", "--json"], env))
    pids = [svc["pid"] for svc in state["services"].values()]
    try:
        env.update(state["env"])
        for key, value in state["env"].items():
            monkeypatch.setenv(key, value)
        from mlflow import MlflowClient

        from tasks import storage, tracking
        from tasks.shards import ShardConfig, shard_source
        from tasks.sources import open_idx

        shard_source(open_idx(limit=200), "s3://radtrace/src", ShardConfig(max_samples=50))
        shard_source(open_idx(split="test", limit=100), "s3://radtrace/heldout", ShardConfig(50))
        marker = save_model_folder(tmp_path / "marker", seed=0)
        common = [
            "--marker",
            str(marker),
            "--steps",
            "2",
            "--batch-size",
            "64",
            "--heldout",
            "s3://radtrace/heldout",
            "--probes-per-class",
            "5",
            "--num-controls",
            "6",
            "--carriers-out",
            str(tmp_path / "key.safetensors"),
            "--json",
        ]
        threads = _last_json(
            _run(
                [radtrace, "release", "s3://radtrace/src", "s3://radtrace/rel-threads", *common],
                env,
            )
        )
        dask = _last_json(
            _run(
                [
                    radtrace,
                    "release",
                    "s3://radtrace/src",
                    "s3://radtrace/rel-dask",
                    *common,
                    "--runner",
                    "dask",
                    "--workers",
                    "2",
                ],
                env,
            )
        )
        assert threads["num_samples"] == dask["num_samples"] == 200
        assert threads["carrier_fingerprint"] == dask["carrier_fingerprint"]

        def tars(url: str) -> list[str]:
            return sorted(e.name for e in storage.listdir(url) if e.name.endswith(".tar"))

        names = tars("s3://radtrace/rel-threads")
        assert names and names == tars("s3://radtrace/rel-dask")
        for name in names:
            a = storage.read_bytes(f"s3://radtrace/rel-threads/{name}")
            assert a == storage.read_bytes(f"s3://radtrace/rel-dask/{name}"), name
        _run([str(BIN / "radtrace"), "verify", "s3://radtrace/rel-dask", "--json"], env)

        torch.manual_seed(1)
        from radcore.nets import SmallResNet

        net = SmallResNet(10, 1, widths=(8, 16, 32))
        ref = tracking.log_model(net.state_dict(), small_arch(), registered_name="stack-suspect")

        _run([radtrace, "deploy"], env)
        prefect = str(BIN / "prefect")
        _run(
            [
                prefect,
                "deployment",
                "run",
                "audit-registered-models/audit-registered-models",
                "--param",
                'params={"num_heldout": 100}',
            ],
            env,
        )
        _run([prefect, "worker", "start", "--pool", "radtrace-process", "--run-once"], env, 900)

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        tags = client.get_model_version(ref.name, ref.version).tags
        assert tags["radtrace.verdict"] in ("detected", "not detected")
        experiment = client.get_experiment_by_name(tracking.AUDITS)
        audits = client.search_runs([experiment.experiment_id])
        assert len(audits) == 2  # the model against each of the two releases
        for run in audits:
            assert run.data.tags["radtrace.model_name"] == "stack-suspect"
            assert {"log10_p_whitebox", "log10_p_blackbox"} <= set(run.data.metrics)
    finally:
        stopped = _last_json(_run([radtrace, "stack", "down", "--json"], env))
    assert set(stopped["stopped"]) == {"s3", "mlflow", "prefect"}
    assert not [pid for pid in pids if _running(pid)], pids


def _running(pid: int) -> bool:
    """Alive and not a zombie (the servers were started by a CLI process that has exited, so
    their parent is init, which may reap them a little later; a zombie holds nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
