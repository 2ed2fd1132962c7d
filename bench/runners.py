"""Wall time of a 10,000-image release (10% marked) with threads vs Dask (2 workers).

Both runs go through the real local stack (`radtrace stack up`: a Prefect server, which Dask
workers need) and the `radtrace release` CLI, one after the other in the same run, writing to
local folders with the same carriers, from the same source shards. The marker is a small
random-weight classifier (timing only). The Dask figure includes starting the LocalCluster
(two worker processes that import torch and connect to Prefect).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter

import torch

__all__ = ["NAME", "run", "summarize"]

NAME = "runners"
NUM_IMAGES = 10_000
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _cli(args: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [str(BIN / "radtrace"), *args, "--json"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"radtrace {args[0]} failed: {done.stderr[-2000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def run() -> dict:
    from radcore.nets import SmallResNet
    from tasks.models import arch_record, state_bytes
    from tasks.shards import ShardConfig, shard_source
    from tasks.sources import open_idx

    with tempfile.TemporaryDirectory(prefix="radtrace-bench-runners-") as tmp:
        work = Path(tmp)
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "PREFECT_"))
        }
        env.update(
            RADTRACE_HOME=str(work / "home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            DO_NOT_TRACK="1",
        )
        shard_source(open_idx(limit=NUM_IMAGES), str(work / "src"), ShardConfig(max_samples=1000))
        torch.manual_seed(0)
        marker = work / "marker"
        marker.mkdir()
        net = SmallResNet(10, 1, widths=(16, 32, 64, 128))
        (marker / "model.safetensors").write_bytes(state_bytes(net))
        arch = arch_record("small_resnet", 10, 1, (0.286,), (0.353,), widths=[16, 32, 64, 128])
        (marker / "arch.json").write_text(json.dumps(arch))
        stack = _cli(["stack", "up"], env)
        env.update(stack["env"])
        times = {}
        try:
            common = [
                "--marker",
                str(marker),
                "--carriers-out",
                str(work / "key.safetensors"),
                "--probes-per-class",
                "0",
            ]
            for name, extra in (
                ("threads", ["--runner", "threads", "--workers", "2"]),
                ("dask", ["--runner", "dask", "--workers", "2"]),
            ):
                t = perf_counter()
                _cli(
                    ["release", str(work / "src"), str(work / f"rel-{name}"), *common, *extra], env
                )
                times[name] = perf_counter() - t
        finally:
            _cli(["stack", "down"], env)
        same = all(
            (work / "rel-threads" / p.name).read_bytes() == p.read_bytes()
            for p in sorted((work / "rel-dask").glob("shard-*.tar"))
        )
    return {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "images": NUM_IMAGES,
        "fraction": 0.1,
        "wall_seconds": times,
        "dask_over_threads": times["dask"] / times["threads"],
        "shards_byte_identical": same,
        "loadavg_1min": os.getloadavg()[0],
        "notes": "radtrace release CLI through a real Prefect server (radtrace stack up); "
        "threads: ThreadPoolTaskRunner(2); dask: LocalCluster of 2 single-threaded worker "
        "processes, started inside the timed run. Wall time includes the CLI start, sharding "
        "check, MLflow logging and the manifest.",
    }


def summarize(result: dict) -> str:
    t = result["wall_seconds"]
    return (
        f"release of {result['images']} images: threads {t['threads']:.1f} s, dask (2 workers) "
        f"{t['dask']:.1f} s (x{result['dask_over_threads']:.2f}); byte-identical: "
        f"{result['shards_byte_identical']}"
    )
