"""A release killed with SIGKILL midway finishes on the next run: nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.release import release
from tasks.shards import read_index
from tasks.tario import iter_tar_samples
from tasks.verify import verify_release
from tests.tasks.release_helpers import FAST, fmnist_shards, seeded_carriers, tiny_marker

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from tasks.release import release
from tests.tasks.release_helpers import FAST, seeded_carriers, tiny_marker
release(sys.argv[1], sys.argv[2], seeded_carriers(), tiny_marker(), FAST)
"""


@pytest.mark.integration
def test_sigkill_midway_then_rerun_completes_exactly(tmp_path: Path):
    src, out = tmp_path / "src", tmp_path / "rel"
    index = fmnist_shards(str(src), num=480, per_shard=20)  # 24 shards
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(src), str(out)], cwd=ROOT, env=env)
    receipts = out / "_receipts"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if receipts.exists() and len(list(receipts.glob("*.json"))) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the release finished (or died) before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(list(receipts.glob("*.json")))
    assert 3 <= done_before < len(index.shards)
    assert not (out / "manifest.json").exists()
    assert not verify_release(str(out)).ok  # visibly incomplete

    manifest = release(str(src), str(out), seeded_carriers(), tiny_marker(), FAST)
    report = verify_release(str(out), source=str(src))
    assert report.ok, report.problems
    keys = [
        s["__key__"] for e in manifest["shards"] for s in iter_tar_samples(str(out / e["name"]))
    ]
    assert len(keys) == len(set(keys)) == read_index(str(src)).num_samples == 480
    assert sorted(p.name for p in out.glob("shard-*.tar")) == [s.name for s in index.shards]
    assert not list(out.rglob("*.tmp"))  # no half-written file left behind
    receipts_json = [json.loads(p.read_text()) for p in receipts.glob("*.json")]
    assert sum(r["count"] for r in receipts_json) == 480
