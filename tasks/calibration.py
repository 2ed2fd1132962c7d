"""Task: calibration study of both tests on models that never saw the carriers under test.

Black-box: the release's probe pool, with C random pool carriers rotated into the "true" role in
each trial (a marked suspect's own true carriers are left out, so every trial is a real H0).
The naive per-image paired t-test runs on the same rotations, to show why radtrace does not use
it. White-box: fresh carrier sets per trial against the model's aligned classifier rows.
Reported: the false-positive rate at alpha 0.01 and 0.05 and the Kolmogorov-Smirnov statistic
of the p-values against the uniform law.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NONE
from scipy import stats

from radcore.blackbox import (
    BlackboxConfig,
    paired_ttest_log10_p,
    response_matrices,
    rotation_null,
)
from radcore.carriers import Carriers, draw_carriers
from radcore.detect import mapped_rows, score_mapped_rows, whitebox_features
from radcore.nets import last_linear
from radcore.probes import ProbeSet, pool_logprobs
from tasks.audit import load_suspect, logprob_fn, suspect_transform
from tasks.datasets import load_images
from tasks.models import marker_from_spec

__all__ = ["calibrate_model", "summarise_pvalues"]


def summarise_pvalues(log10_p: np.ndarray) -> dict[str, Any]:
    """FPR at 0.01 / 0.05 and the KS statistic (and its p) against uniform."""
    p = np.power(10.0, np.asarray(log10_p, dtype=np.float64))
    ks = stats.kstest(p, "uniform")
    return {
        "trials": int(len(p)),
        "fpr_0.01": float((p <= 0.01).mean()),
        "fpr_0.05": float((p <= 0.05).mean()),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
    }


@task(name="calibrate", cache_policy=NONE, persist_result=False)
def calibrate_model(
    model: str,
    release_run: str,
    reference: str | None,
    heldout: str,
    trials: int = 200,
    exclude_true: bool = False,
    num_heldout: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Null audits of ``model`` (see the module docstring). ``exclude_true``: the model was
    trained on this release, so its true carriers stay out of the rotations."""
    from tasks import tracking

    tracking.configure_tracking()
    data = tracking.fetch_release_probes(release_run)
    if data is None:
        raise ValueError(f"release run {release_run} has no black-box probe set to calibrate on")
    probes = ProbeSet.from_bytes(data)
    suspect = load_suspect(model)
    clean, marked = pool_logprobs(logprob_fn(suspect), probes)
    sus = response_matrices(clean, marked, probes.labels)
    ref = None
    if reference:
        rc_, rm_ = pool_logprobs(logprob_fn(load_suspect(reference)), probes)
        ref = response_matrices(rc_, rm_, probes.labels)
    cols = np.arange(probes.pool_size)
    if exclude_true:
        cols = np.setdiff1d(cols, probes.true_index)
    gen = torch.Generator().manual_seed(seed)
    ours = rotation_null(sus, ref, trials, cols, BlackboxConfig(permutations=2000), gen)
    c = len(probes.true_index)
    kept = marked[torch.from_numpy(cols)]  # the pool without the excluded carriers
    naive = [
        paired_ttest_log10_p(
            clean, kept, probes.labels, torch.randperm(len(cols), generator=gen)[:c].numpy()
        )
        for _ in range(trials)
    ]
    # White-box: fresh carriers per trial against one alignment of this model.
    carriers_bytes, marker_bytes, marker_info = tracking.fetch_release_secrets(release_run)
    true = Carriers.from_bytes(carriers_bytes)
    marker = marker_from_spec(marker_info, weights=marker_bytes)
    images, _ = load_images(heldout, num_heldout)
    fm, fs = whitebox_features(marker, suspect.model, images, suspect_transform(suspect.arch))
    w_tilde = mapped_rows(fm, fs, last_linear(suspect.model).weight)
    white = [
        score_mapped_rows(w_tilde, draw_carriers(true.num_classes, true.dim)).log10_p
        for _ in range(trials)
    ]
    return {
        "model": model,
        "blackbox": summarise_pvalues(ours),
        "paired_ttest": summarise_pvalues(np.array(naive)),
        "whitebox": summarise_pvalues(np.array(white)),
    }
