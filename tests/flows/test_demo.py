"""`radtrace demo` end to end at the smallest sizes, through the CLI (the full and quick runs
are measured in the README: their figures are not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.demo import TABLE_KEYS, DemoParams
from flows.params import ReleaseParams
from tasks.release import SKIP_HARDEST, ReleaseConfig

pytestmark = pytest.mark.usefixtures("prefect_api")

TINY = dict(
    num_per_half=1000,
    marker_epochs=1,
    epochs=1,
    probes_per_class=5,
    num_controls=5,
    num_heldout=200,
)


def test_demo_prints_its_table_and_json(home: Path, tmp_path: Path, monkeypatch):
    def tiny(cls, **overrides):
        return cls(**{**TINY, **overrides})

    monkeypatch.setattr(DemoParams, "quick", classmethod(tiny))
    workdir = str(tmp_path / "demo")
    table = CliRunner().invoke(app, ["demo", "--quick", "--workdir", workdir])
    assert table.exit_code == 0, table.output
    for text in ("suspect", "control", "PSNR mean", "pattern marks", "radtrace-audits"):
        assert text in table.output
    args = ["demo", "--quick", "--workdir", workdir, "--json", "--skip-hardest", "0.05"]
    raw = CliRunner().invoke(app, args)
    assert raw.exit_code == 0, raw.output
    out = json.loads(raw.output.strip().splitlines()[-1])
    assert {"release", "psnr_mean", "psnr_min", "models"} <= set(out)
    assert [m["name"] for m in out["models"]] == ["suspect", "control"]
    assert all(set(m) == set(TABLE_KEYS) for m in out["models"])
    assert [m["marked_fraction"] for m in out["models"]] == [0.1, 0.0]
    assert out["psnr_min"] >= 40.0 and out["details"]["params"]["method"] == "pattern"
    assert out["details"]["params"]["skip_hardest"] == 0.05
    assert all(m["log10_p_blackbox"] <= 0 for m in out["models"])


def test_skip_hardest_has_one_default():
    # The release flow, the CLI and the full demo pass over the top 2%; --quick marks from the top.
    release = ReleaseParams(source="in", out="out")
    assert release.skip_hardest == ReleaseConfig().skip_hardest == SKIP_HARDEST == 0.02
    assert DemoParams().skip_hardest == SKIP_HARDEST
    assert DemoParams.quick().skip_hardest == 0.0
    assert DemoParams.quick(skip_hardest=0.03).skip_hardest == 0.03


def test_demo_refuses_a_bad_method(home: Path):
    bad = CliRunner().invoke(app, ["demo", "--quick", "--method", "pixels"])
    assert bad.exit_code != 0 and "method" in bad.output
