"""Task: calibration study of both tests on models that never saw the carriers under test.

Black-box, feature releases: the release's probe pool, with C random pool carriers rotated into
the "true" role in each trial (a marked suspect's own true carriers are left out, so every trial
is a real H0). Pattern releases (the response test): fresh carriers per trial against the model's
sensitivity matrix. The naive per-image paired t-test runs on pool rotations (for pattern
releases, on a pool of fresh pattern carriers marked on the probes here), to show why radtrace
does not use it. White-box: fresh carrier sets per trial against the model's aligned classifier
rows.
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
from radcore.mark import MarkConfig
from radcore.markers import Marker
from radcore.nets import last_linear
from radcore.patterns import pattern_coefficients
from radcore.probes import ProbeSet, mark_probes, pool_logprobs
from radcore.response import ResponseProbes, response_null, sensitivity
from tasks.audit import load_suspect, logprob_fn, suspect_transform
from tasks.datasets import load_images
from tasks.models import marker_from_spec
from tasks.probes import load_probe_set

NAIVE_POOL = 40  # fresh pattern carriers for the paired t-test on pattern releases

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
    probes = load_probe_set(data)
    suspect = load_suspect(model)
    ref_model = load_suspect(reference) if reference else None
    gen = torch.Generator().manual_seed(seed)
    carriers_bytes, marker_bytes, marker_info = tracking.fetch_release_secrets(release_run)
    true = Carriers.from_bytes(carriers_bytes)
    marker = marker_from_spec(marker_info, weights=marker_bytes)
    if isinstance(probes, ResponseProbes):
        ours, naive = _response_trials(suspect, ref_model, probes, marker, trials, gen)
    else:
        ours, naive = _pool_trials(suspect, ref_model, probes, trials, exclude_true, gen)
    # White-box: fresh carriers per trial against one alignment of this model.
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


def _naive_trials(
    clean: torch.Tensor,
    marked: torch.Tensor,
    labels: torch.Tensor,
    c: int,
    trials: int,
    gen: torch.Generator,
) -> list[float]:
    """Paired t log10 p of ``trials`` random draws of C pool columns as the "true" carriers."""
    return [
        paired_ttest_log10_p(
            clean, marked, labels, torch.randperm(marked.shape[0], generator=gen)[:c].numpy()
        )
        for _ in range(trials)
    ]


def _pool_trials(
    suspect: Any,
    reference: Any,
    probes: ProbeSet,
    trials: int,
    exclude_true: bool,
    gen: torch.Generator,
) -> tuple[np.ndarray, list[float]]:
    """(black-box log10 p, paired t log10 p) of ``trials`` pool rotations."""
    clean, marked = pool_logprobs(logprob_fn(suspect), probes)
    sus = response_matrices(clean, marked, probes.labels)
    ref = None
    if reference is not None:
        ref = response_matrices(*pool_logprobs(logprob_fn(reference), probes), probes.labels)
    cols = np.arange(probes.pool_size)
    if exclude_true:
        cols = np.setdiff1d(cols, probes.true_index)
    ours = rotation_null(sus, ref, trials, cols, BlackboxConfig(permutations=2000), gen)
    kept = marked[torch.from_numpy(cols)]  # the pool without the excluded carriers
    return ours, _naive_trials(clean, kept, probes.labels, len(probes.true_index), trials, gen)


def _response_trials(
    suspect: Any,
    reference: Any,
    probes: ResponseProbes,
    marker: Marker,
    trials: int,
    gen: torch.Generator,
) -> tuple[np.ndarray, list[float]]:
    """(response-test log10 p with fresh carriers, paired t log10 p on a fresh pattern pool)."""
    c, k = probes.pool_size, probes.pattern_freqs
    fn = logprob_fn(suspect)
    sus = sensitivity(fn, probes)
    ref = sensitivity(logprob_fn(reference), probes) if reference is not None else None

    def fresh() -> np.ndarray:
        return pattern_coefficients(draw_carriers(c, marker.dim).vectors, k).numpy()

    ours = response_null(sus, ref, trials, fresh)
    # The naive test needs copies marked with many carriers: a fresh pool, none of the key's.
    pool = draw_carriers(NAIVE_POOL, marker.dim, marker_id=marker.marker_id)
    cfg = MarkConfig(method="pattern", psnr_floor=probes.psnr_floor, pattern_freqs=k)
    naive_probes = mark_probes(probes.images, probes.labels, pool, np.arange(c), marker, cfg)
    clean, marked = pool_logprobs(fn, naive_probes)
    return ours, _naive_trials(clean, marked, probes.labels, c, trials, gen)
