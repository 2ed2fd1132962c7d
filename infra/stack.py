"""The local radtrace stack: real S3, MLflow and Prefect servers on loopback, one command away.

``up(home)`` starts three servers, each on a free port of an IPv4 loopback address, as
background processes in their own session, and waits until each answers its health check:

- ``s3``: ``moto_server``, an S3 endpoint holding the buckets ``radtrace`` and ``mlflow``
  (in memory: its objects are gone when the stack stops);
- ``mlflow``: ``mlflow server`` with a sqlite backend under ``<home>/stack/`` and artifacts
  proxied by the server to ``s3://mlflow/artifacts`` on that endpoint;
- ``prefect``: ``prefect server start`` with ``PREFECT_HOME`` and its sqlite database under
  ``<home>/stack/prefect/``.

Logs go to ``<home>/stack/logs/<service>.log``; ``<home>/stack/state.json`` records pids,
ports, URLs and the environment a client should use (``client_env``). ``down(home)`` stops
every process of the stack and removes the state file; ``status(home)`` checks each service.

The servers' environment is built from scratch for ``AWS_*``, ``MLFLOW_*`` and ``PREFECT_*``
(inherited values are dropped) and they run in ``<home>/stack/``, so neither the caller's
shell nor a ``prefect.toml`` in the working directory can redirect them. Linux only (process
bookkeeping reads ``/proc``). Standalone on purpose: no radtrace import, runnable as
``python infra/stack.py up|down|status [--home DIR] [--json]`` or importable by path.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["SERVICES", "StackError", "client_env", "default_home", "down", "status", "up"]

SERVICES = ("s3", "mlflow", "prefect")
BUCKETS = ("radtrace", "mlflow")
# The local S3 endpoint is a throwaway moto server bound to loopback: these fixed dummy
# credentials only satisfy request signing, they protect nothing and are not secrets.
S3_ACCESS_KEY = "radtrace"
S3_SECRET_KEY = "radtrace-local"
S3_REGION = "us-east-1"
# Seconds each service may take to answer its health check (a cold Prefect start on a busy
# 2-core machine takes 30-90 s).
HEALTH_TIMEOUT_S = {"s3": 60.0, "mlflow": 120.0, "prefect": 180.0}
PROGRAMS = {"s3": "moto_server", "mlflow": "mlflow", "prefect": "prefect"}
HEALTH_PATHS = {"s3": "/", "mlflow": "/health", "prefect": "/api/health"}
_CLEARED_ENV_PREFIXES = ("AWS_", "MLFLOW_", "PREFECT_")


class StackError(RuntimeError):
    """A service of the local stack did not start or stop; the message names its log."""


def default_home() -> Path:
    """``$RADTRACE_HOME``, else ``./.radtrace`` (radtrace's project data folder, the same one
    the CLI uses): where the stack keeps state, data and logs."""
    return Path(os.environ.get("RADTRACE_HOME") or ".radtrace").expanduser().resolve()


def up(home: Path, *, host: str = "127.0.0.1") -> dict[str, Any]:
    """Start the stack under ``home`` (or return the running one) and wait until it is healthy.

    Args:
        home: radtrace's home folder; the stack lives in ``home/stack/``.
        host: an IPv4 loopback address to bind (the servers have no authentication).

    Returns:
        The state (as written to ``home/stack/state.json``) plus ``"reused"``: True when a
        healthy stack was already running and nothing was started.

    Raises:
        StackError: a service exited or missed its health deadline; the message names its log
            file and everything started by this call has been stopped again.
        ValueError: ``host`` is not an IPv4 loopback address.
    """
    _check_loopback(host)
    stack = _stack_dir(home)
    with _locked(stack):
        state = _read_state(stack)
        if state is not None:
            if state.get("phase") == "ready" and _report(state)["healthy"]:
                return {**state, "reused": True}
            _stop(state)  # a half-started or broken stack: clear it, then start afresh
            (stack / "state.json").unlink(missing_ok=True)
        try:
            state = _start(stack, host)
        except BaseException:
            leftover = _read_state(stack)
            if leftover is not None:
                _stop(leftover)
                (stack / "state.json").unlink(missing_ok=True)
            raise
        return {**state, "reused": False}


def down(home: Path) -> dict[str, Any]:
    """Stop every process of the stack under ``home`` and remove its state file (idempotent).

    Each service's session gets SIGTERM, then SIGKILL for whatever is left after 10 s; the
    call returns only when no process of the stack remains.

    Returns:
        ``{"stopped": {service: {"pid", "pids", "signal"}}}``; empty when nothing was running.

    Raises:
        StackError: a process survived SIGKILL (the state file is kept for another try).
    """
    stack = _stack_dir(home)
    if not stack.is_dir():
        return {"stopped": {}}
    with _locked(stack):
        state = _read_state(stack)
        if state is None:
            return {"stopped": {}}
        stopped = _stop(state)
        (stack / "state.json").unlink(missing_ok=True)
        return {"stopped": stopped}


def status(home: Path) -> dict[str, Any]:
    """Report, per service, whether its process is alive and its health check passes.

    Returns:
        ``{"running", "healthy", "state_file", "services": {name: {"pid", "url", "log",
        "alive", "healthy"}}}``; ``running`` is False (and ``services`` empty) without a state
        file.
    """
    stack = _stack_dir(home)
    state = _read_state(stack)
    if state is None:
        return {
            "running": False,
            "healthy": False,
            "state_file": str(stack / "state.json"),
            "services": {},
        }
    return {"running": True, "state_file": str(stack / "state.json"), **_report(state)}


def client_env(home: Path) -> dict[str, str]:
    """The environment a client uses to reach the running stack (S3, MLflow, Prefect).

    Raises:
        FileNotFoundError: no stack has been started under ``home``.
    """
    state = _read_state(_stack_dir(home))
    if state is None:
        raise FileNotFoundError(
            f"no local stack under {Path(home) / 'stack'}: run `radtrace stack up` "
            f"(or `python infra/stack.py up --home {home}`) first"
        )
    return dict(state["env"])


# --- starting --------------------------------------------------------------------------------


def _start(stack: Path, host: str) -> dict[str, Any]:
    logs = stack / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (stack / "prefect").mkdir(exist_ok=True)
    ports = dict(zip(SERVICES, _free_ports(host, len(SERVICES)), strict=True))
    urls = {name: f"http://{host}:{port}" for name, port in ports.items()}
    env = {
        "AWS_ENDPOINT_URL": urls["s3"],
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": S3_REGION,
        "MLFLOW_TRACKING_URI": urls["mlflow"],
        "MLFLOW_S3_ENDPOINT_URL": urls["s3"],
        "PREFECT_API_URL": f"{urls['prefect']}/api",
    }
    state: dict[str, Any] = {
        "version": 1, "phase": "starting", "home": str(stack.parent), "host": host,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "services": {}, "env": env,
    }  # fmt: skip
    commands = _commands(stack, host, ports)
    server_env = _server_env(stack, env)

    def launch(name: str) -> subprocess.Popen[bytes]:
        log = logs / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                commands[name], cwd=stack, env=server_env[name], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        state["services"][name] = {
            "pid": proc.pid, "port": ports[name], "url": urls[name],
            "health_url": urls[name] + HEALTH_PATHS[name], "log": str(log),
            "command": commands[name],
        }  # fmt: skip
        _write_state(stack, state)  # written at once, so `down` can stop a half-started stack
        return proc

    s3 = launch("s3")
    _wait_healthy(state, {"s3": s3})
    _create_buckets(urls["s3"])
    rest = {name: launch(name) for name in ("mlflow", "prefect")}  # cold-start side by side
    _wait_healthy(state, rest)
    state["phase"] = "ready"
    _write_state(stack, state)
    return state


def _commands(stack: Path, host: str, ports: dict[str, int]) -> dict[str, list[str]]:
    mlflow_hosts = f"{host},{host}:{ports['mlflow']},localhost,localhost:{ports['mlflow']}"
    mlflow_origins = f"http://{host}:{ports['mlflow']},http://localhost:{ports['mlflow']}"
    return {
        "s3": [_executable("moto_server"), "-H", host, "-p", str(ports["s3"])],
        # --serve-artifacts: clients log to mlflow-artifacts:/ and the server writes through to
        # S3, so a client needs no S3 credentials to log artifacts. MLflow >= 3.5 checks Host
        # and Origin headers: naming this host lets any loopback address (not only the default
        # 127.0.0.1/localhost) through. One worker is plenty for one user.
        "mlflow": [
            _executable("mlflow"), "server", "--serve-artifacts",
            *_opts(
                host=host, port=ports["mlflow"], workers=1,
                backend_store_uri=f"sqlite:///{stack / 'mlflow.db'}",
                artifacts_destination="s3://mlflow/artifacts",
                allowed_hosts=mlflow_hosts, cors_allowed_origins=mlflow_origins,
            ),
        ],
        "prefect": [
            _executable("prefect"), "server", "start", "--analytics-off",
            *_opts(host=host, port=ports["prefect"]),
        ],
    }  # fmt: skip


def _opts(**options: object) -> list[str]:
    """``--long-option value`` pairs from keyword arguments (underscores become dashes)."""
    return [arg for k, v in options.items() for arg in (f"--{k.replace('_', '-')}", str(v))]


def _server_env(stack: Path, client: dict[str, str]) -> dict[str, dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(_CLEARED_ENV_PREFIXES)}
    base["DO_NOT_TRACK"] = "1"
    s3 = {k: client[k] for k in client if k.startswith("AWS_")}
    prefect_db = f"sqlite+aiosqlite:///{stack / 'prefect' / 'prefect.db'}"
    return {
        "s3": {**base, "AWS_DEFAULT_REGION": S3_REGION},
        "mlflow": {
            **base,
            **s3,
            "MLFLOW_S3_ENDPOINT_URL": client["MLFLOW_S3_ENDPOINT_URL"],
            # The job runner (huey consumers for GenAI evaluation jobs) is not used by
            # radtrace: it would only add processes on a small machine.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        },
        "prefect": {
            **base,
            "PREFECT_HOME": str(stack / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The current name and its older alias: whichever Prefect reads, it is this file.
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_db,
            "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
        },
    }


def _wait_healthy(state: dict[str, Any], procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Poll until every process answers its health check; raise StackError on the first miss."""
    started = time.monotonic()
    pending = dict(procs)
    while pending:
        for name, proc in list(pending.items()):
            svc = state["services"][name]
            if _healthy(name, svc["health_url"]):
                del pending[name]
            elif proc.poll() is not None:
                raise StackError(_failure(name, svc, f"exited with code {proc.returncode}"))
            elif time.monotonic() - started > HEALTH_TIMEOUT_S[name]:
                why = f"did not answer {svc['health_url']} within {HEALTH_TIMEOUT_S[name]:.0f} s"
                raise StackError(_failure(name, svc, why))
        if pending:
            time.sleep(0.5)


def _failure(name: str, svc: dict[str, Any], why: str) -> str:
    tail = _tail(Path(svc["log"]))
    return (
        f"{name} ({PROGRAMS[name]}, pid {svc['pid']}) {why}; see its log {svc['log']}; the "
        f"stack was stopped again. Last lines of the log:\n{tail}"
    )


def _create_buckets(endpoint: str) -> None:
    import boto3  # a radtrace dependency; imported here so `status`/`down` do without it

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=S3_REGION,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)  # us-east-1: no LocationConstraint (S3 refuses one)


# --- health and process bookkeeping -------------------------------------------------------


def _healthy(name: str, url: str) -> bool:
    """S3 answers any HTTP response; MLflow's /health says OK; Prefect's /api/health true."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=2) as resp:
            body = resp.read(64).decode(errors="replace").strip()
    except urllib.error.HTTPError:
        return name == "s3"
    except (OSError, ValueError):
        return False
    return {"s3": True, "mlflow": body == "OK", "prefect": body == "true"}[name]


def _report(state: dict[str, Any]) -> dict[str, Any]:
    services = {}
    for name, svc in state["services"].items():
        alive = _is_ours(svc["pid"], PROGRAMS[name])
        services[name] = {
            "pid": svc["pid"],
            "url": svc["url"],
            "log": svc["log"],
            "alive": alive,
            "healthy": alive and _healthy(name, svc["health_url"]),
        }
    healthy = set(services) == set(SERVICES) and all(s["healthy"] for s in services.values())
    return {"healthy": healthy, "services": services}


def _stop(state: dict[str, Any], term_timeout: float = 10.0) -> dict[str, Any]:
    """SIGTERM every process in each service's session, SIGKILL after ``term_timeout``."""
    sessions: dict[str, int] = {}
    for name, svc in state.get("services", {}).items():
        pid = svc["pid"]
        if _alive(pid) and not _is_ours(pid, PROGRAMS[name]):
            continue  # the pid now belongs to an unrelated process: leave it alone
        sessions[name] = pid
    stopped = {
        name: {"pid": sid, "pids": _session(sid), "signal": None} for name, sid in sessions.items()
    }
    for sig, wait_s in ((signal.SIGTERM, term_timeout), (signal.SIGKILL, 5.0)):
        remaining = {name: _session(sid) for name, sid in sessions.items()}
        remaining = {name: pids for name, pids in remaining.items() if pids}
        for name, pids in remaining.items():
            stopped[name]["signal"] = sig.name
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not any(_session(sid) for sid in sessions.values()):
                # Dead but unreaped children of this process would still answer kill(pid, 0).
                _reap([*sessions.values(), *(p for s in stopped.values() for p in s["pids"])])
                return stopped
            time.sleep(0.2)
    left = {name: _session(sid) for name, sid in sessions.items() if _session(sid)}
    raise StackError(f"processes of the stack survived SIGKILL: {left}")


def _session(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[3] == sid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, session) from /proc/<pid>/stat, or None when there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _is_ours(pid: int, program: str) -> bool:
    """Alive, still the leader of its own session, and running ``program``."""
    stat = _stat(pid)
    if stat is None or stat[0] == "Z" or stat[3] != pid:
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(a.decode(errors="replace")).name == program for a in args[:3])


def _reap(pids: list[int], timeout: float = 5.0) -> None:
    """Collect exit statuses of our own children among ``pids`` (else they linger as zombies).

    A multi-threaded process shows state Z as soon as its main thread exits, but it can be
    reaped only once its last thread has gone, so one WNOHANG pass can miss it: retry until
    each child is collected (or is not ours) or ``timeout`` passes.
    """
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except (ChildProcessError, OSError):
                done = pid  # not our child (or already collected): nothing to reap
            if done == pid:
                pending.discard(pid)
        if not pending or time.monotonic() > deadline:
            return
        time.sleep(0.05)


# --- small helpers ----------------------------------------------------------------------------


def _check_loopback(host: str) -> None:
    try:
        ok = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"host {host!r} is not an IPv4 loopback address: the local stack has no "
            "authentication and fixed dummy S3 credentials, so it only binds 127.0.0.0/8 "
            "(use infra/compose.yaml for a shared deployment)"
        )


def _free_ports(host: str, n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):  # held open together, so the n ports differ
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _executable(name: str) -> str:
    """``name`` next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StackError(
            f"`{name}` not found next to {sys.executable} nor on PATH: install radtrace with "
            "its dev extras (`pip install -e '.[dev]'`) and run this with the venv's python"
        )
    return found


def _stack_dir(home: Path) -> Path:
    return Path(home).expanduser().resolve() / "stack"


@contextlib.contextmanager
def _locked(stack: Path) -> Iterator[None]:
    """Serialise `up`/`down` on one home (two concurrent `up`s would kill each other's work)."""
    stack.mkdir(parents=True, exist_ok=True)
    with open(stack / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_state(stack: Path) -> dict[str, Any] | None:
    try:
        return json.loads((stack / "state.json").read_text())
    except FileNotFoundError:
        return None


def _write_state(stack: Path, state: dict[str, Any]) -> None:
    tmp = stack / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, stack / "state.json")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log file)"
    return text or "(the log is empty)"


def _print(result: dict[str, Any], command: str) -> None:
    if command == "down":
        stopped = result["stopped"]
        print(
            "stopped " + ", ".join(f"{n} (pid {s['pid']})" for n, s in stopped.items())
            if stopped
            else "no stack was running"
        )
        return
    if command == "status" and not result["running"]:
        print("no stack is running (`radtrace stack up` starts one)")
        return
    services = result["services"]
    for name, svc in services.items():
        if command == "status":
            mark = "healthy" if svc["healthy"] else ("alive" if svc["alive"] else "dead")
        else:
            mark = "up"
        print(f"{name:8} {mark:8} pid {svc['pid']:<8} {svc['url']}  log {svc['log']}")
    if command == "up":
        print(("reused the running stack" if result["reused"] else "started") + "; client env:")
        for key, value in result["env"].items():
            print(f"  export {key}={value}")


def main(argv: list[str] | None = None) -> int:
    """``python infra/stack.py up|down|status [--home DIR] [--json]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument(
        "--home", type=Path, default=None, help="default: $RADTRACE_HOME or ~/.radtrace"
    )
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 loopback address (up only)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    home = args.home or default_home()
    try:
        if args.command == "up":
            result = up(home, host=args.host)
        else:
            result = {"down": down, "status": status}[args.command](home)
    except (StackError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result, args.command)
    return 0 if args.command != "status" or result["healthy"] else 3


if __name__ == "__main__":
    sys.exit(main())
