"""The black-box test on synthetic responses where the truth is known.

The synthetic world has what the probe on real models found (DESIGN.md section 2): every
carrier moves every class by its own random amount on every model (the carrier, not the image,
is the unit of randomness), a clean reference model shares part of that effect, and each image
adds its own noise. A valid test stays uniform under H0; the per-image paired t-test does not.
"""

import numpy as np
import pytest
import torch
from scipy import stats

from radcore.blackbox import (
    BlackboxConfig,
    blackbox_from_logprobs,
    paired_ttest_log10_p,
    response_matrices,
)

C, PER_CLASS, POOL = 10, 20, 40


def _world(seed: int, signal: float = 0.0, statistic: str = "cross"):
    """(suspect clean, suspect marked, reference clean, reference marked, labels, true_index)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(PER_CLASS)
    n = len(labels)

    def model_clean():
        logits = torch.randn(n, C, generator=g) + 4.0 * torch.nn.functional.one_hot(labels, C)
        return torch.log_softmax(logits, 1)

    shared = 0.3 * torch.randn(POOL, 1, C, generator=g)  # carrier effect on every model

    def marked(clean, own_part):
        effect = shared + own_part * torch.randn(POOL, 1, C, generator=g)
        return clean.unsqueeze(0) + effect + 0.3 * torch.randn(POOL, n, C, generator=g)

    s_clean, r_clean = model_clean(), model_clean()
    s_marked, r_marked = marked(s_clean, 0.15), marked(r_clean, 0.15)
    true_index = torch.randperm(POOL, generator=g)[:C].numpy()
    if signal:
        for j, w in enumerate(true_index):
            rows = labels == j if statistic == "own" else labels != j
            s_marked[w, rows, j] += signal
    return s_clean, s_marked, r_clean, r_marked, labels, true_index


def test_response_matrices_match_a_direct_loop():
    s_clean, s_marked, _, _, labels, _ = _world(0)
    m = response_matrices(s_clean, s_marked, labels)
    delta = (s_marked - s_clean).double()
    for j in (0, 7):
        for w in (3, 11):
            own = delta[w, labels == j, j].mean()
            cross = delta[w, labels != j, j].mean()
            others = labels != j
            shift = delta[w, others][torch.arange(int(others.sum())), labels[others]].mean()
            assert m["own"][j, w] == pytest.approx(float(own))
            assert m["cross"][j, w] == pytest.approx(float(cross))
            assert m["own_shift"][j, w] == pytest.approx(float(shift))


@pytest.mark.parametrize("statistic", ["own", "cross"])
def test_pvalues_are_uniform_under_h0_and_the_paired_ttest_is_not(statistic):
    cfg = BlackboxConfig(statistic=statistic, permutations=2000)
    ours, ttest = [], []
    for seed in range(300):
        s_clean, s_marked, r_clean, r_marked, labels, ti = _world(seed)
        det = blackbox_from_logprobs(s_clean, s_marked, labels, ti, r_clean, r_marked, cfg)
        ours.append(10**det.log10_p)
        ttest.append(10 ** paired_ttest_log10_p(s_clean, s_marked, labels, ti))
    ours, ttest = np.array(ours), np.array(ttest)
    assert stats.kstest(ours, "uniform").pvalue > 0.01
    # 300 draws at 0.05: a valid test gives 15 ± 3.8; 30 or more is beyond 3.9 sd.
    assert (ours <= 0.05).sum() < 30
    assert (ttest <= 0.05).mean() > 0.2  # images as units: far too many false positives


def test_a_planted_carrier_response_is_detected():
    cfg = BlackboxConfig(permutations=20_000)
    s_clean, s_marked, r_clean, r_marked, labels, ti = _world(1, signal=0.6)
    det = blackbox_from_logprobs(s_clean, s_marked, labels, ti, r_clean, r_marked, cfg)
    assert det.log10_p < -4 and det.z > 4
    assert det.num_probes == C * PER_CLASS and det.num_carriers == POOL


def test_reference_covariate_adds_power_when_models_share_carrier_effects():
    with_ref, without = [], []
    for seed in range(10):
        s_clean, s_marked, r_clean, r_marked, labels, ti = _world(100 + seed, signal=0.25)
        plain = BlackboxConfig(permutations=500, use_reference=False)
        for cfg, out in ((BlackboxConfig(permutations=500), with_ref), (plain, without)):
            out.append(
                blackbox_from_logprobs(s_clean, s_marked, labels, ti, r_clean, r_marked, cfg).z
            )
    assert np.mean(with_ref) > np.mean(without) + 0.5


def test_bad_inputs_say_what_to_fix():
    s_clean, s_marked, _, _, labels, ti = _world(2)
    with pytest.raises(ValueError, match="distinct"):
        blackbox_from_logprobs(s_clean, s_marked, labels, [0] * C)
    with pytest.raises(ValueError, match="N×n×C"):
        blackbox_from_logprobs(s_clean, s_marked[:, :5], labels, ti)
    with pytest.raises(ValueError, match="statistic"):
        BlackboxConfig(statistic="loss")
