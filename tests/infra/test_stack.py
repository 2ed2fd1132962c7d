"""The local stack (infra/stack.py) end to end: real S3, MLflow and Prefect servers on loopback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STACK_PY = Path(__file__).resolve().parents[2] / "infra" / "stack.py"


def _load_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("radtrace_infra_stack", STACK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _dead(pid: int) -> bool:
    """Gone or a zombie: for grandchildren, whose reaping is init's job, not the stack's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _live_in_session(sid: int) -> list[str]:
    """`ps` rows of processes in session ``sid``, zombies left out (they hold no resources)."""
    ps = ["ps", "-o", "pid=,stat=,args=", "-s", str(sid)]
    out = subprocess.run(ps, capture_output=True, text=True).stdout
    return [row for row in out.splitlines() if not row.split()[1].startswith("Z")]


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return resp.read().decode()


def test_stack_up_serves_s3_mlflow_prefect_then_down_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import boto3
    from mlflow import MlflowClient

    stack = _load_stack()
    try:
        state = stack.up(tmp_path)
        assert not state["reused"]
        pids = {name: svc["pid"] for name, svc in state["services"].items()}
        assert set(pids) == {"s3", "mlflow", "prefect"}
        report = stack.status(tmp_path)
        assert report["healthy"], report
        assert all(s["alive"] and s["healthy"] for s in report["services"].values()), report

        env = stack.client_env(tmp_path)
        assert env == state["env"]
        for key, value in env.items():
            monkeypatch.setenv(key, value)

        # (a) S3: an object round-trips through the endpoint.
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        s3.put_object(Bucket="radtrace", Key="probe/hello.txt", Body=b"radioactive")
        body = s3.get_object(Bucket="radtrace", Key="probe/hello.txt")["Body"].read()
        assert body == b"radioactive"

        # (b) MLflow: an artifact logged through the server lands in the `mlflow` bucket.
        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        run = client.create_run(client.create_experiment("stack-test"))
        artifact = tmp_path / "evidence.json"
        artifact.write_text('{"log10_p": -5.8}')
        client.log_artifact(run.info.run_id, str(artifact))
        client.set_terminated(run.info.run_id)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
        assert any(k.endswith(f"{run.info.run_id}/artifacts/evidence.json") for k in keys), keys

        # (c) Prefect: the API answers.
        assert _get(env["PREFECT_API_URL"] + "/health").strip() == "true"

        again = stack.up(tmp_path)
        assert again["reused"]
        assert {name: svc["pid"] for name, svc in again["services"].items()} == pids

        ps = ["ps", "-o", "pid=", "--ppid", ",".join(map(str, pids.values()))]
        children = {
            int(p) for p in subprocess.run(ps, capture_output=True, text=True).stdout.split()
        }
        assert children, "mlflow server runs uvicorn as a child: expected at least one child"
    finally:
        stopped = stack.down(tmp_path)

    assert set(stopped["stopped"]) == {"s3", "mlflow", "prefect"}
    assert all(_gone(pid) for pid in pids.values()), pids
    assert all(_dead(pid) for pid in children), children
    assert not any(_live_in_session(sid) for sid in pids.values())
    assert not (tmp_path / "stack" / "state.json").exists()
    assert stack.status(tmp_path)["running"] is False
    assert stack.down(tmp_path) == {"stopped": {}}  # idempotent
