"""evidence.json of an audit: the Bonferroni verdict over both tests and the command that
repeats it."""

from __future__ import annotations

import shlex
from types import SimpleNamespace

from torch import nn

from radcore.detect import WhiteboxDetection
from tasks.audit import Suspect, WhiteboxAudit, audit_evidence, reproduce_command

RELEASE = SimpleNamespace(
    run_id="abc123", release_url="s3://rel/v1/", carrier_fingerprint="f" * 64, marker_id="m"
)
SUSPECT = Suspect(nn.Linear(2, 2), {"name": "vgg_small"}, "models:/s@a", "0" * 64, "s", "1")


def _whitebox(log10_p: float) -> WhiteboxAudit:
    det = WhiteboxDetection(log10_p, (0.1, 0.2), (-0.5, -0.5), 100, 8)
    return WhiteboxAudit(det, (-0.1, -0.4, -1.2))


def test_reproduce_command_round_trips_through_the_shell_and_names_the_reference():
    cmd = reproduce_command("models:/a b@x", "r1", "/held out/", 500, 0.001, "models:/ref@1")
    assert shlex.split(cmd) == [
        "radtrace", "audit", "models:/a b@x", "--release-run", "r1", "--heldout", "/held out/",
        "--num-heldout", "500", "--alpha", "0.001", "--reference", "models:/ref@1",
    ]  # fmt: skip
    assert "--reference" not in reproduce_command("m", "r1", "h", 500, 0.001, None)


def test_evidence_without_blackbox_uses_the_whitebox_p_alone():
    ev = audit_evidence("m", SUSPECT, RELEASE, "h", 100, _whitebox(-4.0), None, None, 1e-3, "t")
    assert ev["blackbox"]["ran"] is False
    assert ev["log10_p_adjusted"] == -4.0 and ev["verdict"] == "detected"
    assert ev["test"]["empirical_null_share_at_or_below"] == 0.0
    assert ev["reproduce"].startswith("radtrace audit m --release-run abc123")


def test_evidence_with_blackbox_is_bonferroni_over_two_tests():
    bb = SimpleNamespace(
        statistic="own", num_probes=300, num_carriers=40, z=3.1, z_per_class=(1.0,),
        permutations=1000, null_mean=0.0, null_sd=1.0, log10_p=-3.2, log10_p_permutation=-3.0,
        tail="permutation",
    )  # fmt: skip
    ev = audit_evidence("m", SUSPECT, RELEASE, "h", 100, _whitebox(-0.5), bb, "r", 1e-3, "t")
    # min p = 10^-3.2, two tests: adjusted 10^(-3.2 + log10 2) = 10^-2.899 > alpha.
    assert abs(ev["log10_p_adjusted"] - (-3.2 + 0.30103)) < 1e-4
    assert ev["verdict"] == "not detected"
    assert ev["blackbox"]["ran"] is True and ev["blackbox"]["reference"] == "r"
