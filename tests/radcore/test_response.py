"""The response test (radcore.response): its null law, its p-values, its sensitivity matrix."""

import math
import random

import numpy as np
import pytest
import torch
from scipy import stats

import radcore as rc
from radcore.patterns import pattern_basis, pattern_coefficients, pattern_dim
from radcore.probes import ProbeSet, draw_pool
from radcore.response import (
    ResponseProbes,
    cosine_sum_log10_sf,
    is_response_probes,
    make_response_probes,
    response_null,
    response_test,
    sensitivity,
)


def _uniform(rng, shape, m):
    v = rng.standard_normal((*shape, m))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_the_null_law_of_summed_cosines_matches_uniform_directions_and_is_conservative():
    """Cosines of real uniform directions in R^17 with a fixed vector (not Beta draws: this
    checks the Beta law too). The bound must not fall below the Monte Carlo tail (3 sd) and
    stays within 6% of it; with the Beta parameters of R^16 or R^18 the same check fails."""
    rng = np.random.default_rng(0)
    m, c, draws = 17, 10, 1_000_000
    sums = np.zeros(draws)
    for _ in range(c):
        sums += _uniform(rng, (draws,), m)[:, 0]  # cosine with e_1, for one class
    for s in (0.0, 1.0, 2.0, 2.5):
        k = int((sums >= s).sum())
        mc, sd = k / draws, math.sqrt(k) / draws
        bound = 10 ** cosine_sum_log10_sf(s, c, m)
        assert bound >= mc - 3 * sd, (s, bound, mc)
        assert bound <= 1.06 * mc + 3 * sd, (s, bound, mc)
    tail = int((sums >= 2.5).sum()) / draws
    for wrong in (16, 18):
        assert abs(10 ** cosine_sum_log10_sf(2.5, c, wrong) / tail - 1) > 0.15


def test_one_class_bound_is_the_beta_tail():
    for s in (-0.5, 0.2, 0.6, 0.9):
        exact = stats.beta(8, 8).sf((s + 1) / 2)
        bound = 10 ** cosine_sum_log10_sf(s, 1, 17)
        assert exact <= bound <= stats.beta(8, 8).sf((s - 1e-3 + 1) / 2) + 1e-15
    assert cosine_sum_log10_sf(-10, 3, 17) == 0.0
    assert cosine_sum_log10_sf(3.5, 3, 17) == -math.inf
    with pytest.raises(ValueError, match="m >= 2"):
        cosine_sum_log10_sf(0.0, 3, 1)


def test_pvalues_are_uniform_for_any_fixed_model_and_a_fresh_key():
    """H0: the key is drawn independently of the model. Sensitivities with very unequal class
    norms and a strong part along a reference; p over 3,000 keys must be uniform."""
    rng = np.random.default_rng(1)
    m = 17
    ref = rng.standard_normal((10, m))
    sus = 4 * ref + rng.standard_normal((10, m)) * np.linspace(0.1, 5, 10)[:, None]
    for reference in (None, ref):
        p = 10 ** response_null(sus, reference, 3000, lambda: _uniform(rng, (10,), m))
        assert stats.kstest(p, "uniform").pvalue > 0.001
        assert abs((p <= 0.05).mean() - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 3000)
        assert abs((p <= 0.01).mean() - 0.01) < 3 * math.sqrt(0.01 * 0.99 / 3000) + 1e-3


def test_a_model_along_the_key_is_found_and_the_reference_part_is_removed():
    rng = np.random.default_rng(2)
    u = _uniform(rng, (10,), 17)
    ref = rng.standard_normal((10, 17))
    sus = 5 * ref + 0.8 * u + 0.8 * rng.standard_normal((10, 17)) / math.sqrt(17)
    with_ref, without = response_test(sus, u, ref), response_test(sus, u)
    assert with_ref.log10_p < -10 and with_ref.tail == "exact"
    assert with_ref.log10_p < without.log10_p - 5  # the shared part drowned the key
    assert len(with_ref.null_z) == 5000 and abs(np.mean(with_ref.null_z)) < 0.05
    assert abs(np.std(with_ref.null_z) - 1) < 0.05
    # A class with no response at all is left out, not counted as a zero cosine.
    dead = sus.copy()
    dead[3] = 0.0
    partial = response_test(dead, u, None)
    assert partial.z_per_class[3] == 0.0 and math.isfinite(partial.log10_p)
    with pytest.raises(ValueError, match="differ in shape"):
        response_test(sus[:, :5], u)


def _probes(num=40, size=28, channels=1):
    rng = torch.Generator().manual_seed(3)
    images = (60 + 120 * torch.rand(num, channels, size, size, generator=rng)).to(torch.uint8)
    labels = torch.arange(num) % 10
    carriers = rc.draw_carriers(10, 64, randbytes=random.Random(4).randbytes)
    return make_response_probes(images, labels, carriers, 40.0), carriers


def test_the_sensitivity_of_a_linear_pattern_detector_points_along_its_patterns():
    """A model whose class-c logit is the image's inner product with class c's pattern: its
    pull towards c is along u_c, so every cosine is near 1 (rounding to 8 bits adds noise)."""
    probes, carriers = _probes()
    basis = pattern_basis(28, 28).float()  # m×H×W
    templates = torch.einsum("cm,mhw->chw", probes.coefficients.float(), basis)

    def logprob(images):
        x = images.float() / 255.0
        return torch.log_softmax(200 * torch.einsum("nhw,chw->nc", x[:, 0], templates), 1)

    d = sensitivity(logprob, probes)
    assert d.shape == (10, pattern_dim(6))
    cos = (d * probes.coefficients.numpy()).sum(1) / np.linalg.norm(d, axis=1)
    assert cos.min() > 0.95, cos
    assert response_test(d, probes.coefficients.numpy()).log10_p < -30
    with pytest.raises(ValueError, match="has 10 classes"):
        sensitivity(lambda images: logprob(images)[:, :5], probes)


def test_response_probes_round_trip_and_are_told_apart():
    probes, carriers = _probes(channels=3)
    data = probes.to_bytes()
    assert is_response_probes(data)
    back = ResponseProbes.from_bytes(data)
    assert torch.equal(back.images, probes.images) and torch.equal(back.labels, probes.labels)
    assert torch.equal(back.coefficients, pattern_coefficients(carriers.vectors))
    assert back.psnr_floor == 40.0 and back.pattern_freqs == 6
    assert back.pool_fingerprint == carriers.fingerprint and back.pool_size == 10
    pool, ti = draw_pool(carriers, 5, randbytes=random.Random(9).randbytes)
    other = ProbeSet(
        probes.images, probes.labels, probes.images[None].clone(), ti, pool.fingerprint
    )
    assert not is_response_probes(other.to_bytes())
    with pytest.raises(ValueError, match="not a radtrace response probe set"):
        ResponseProbes.from_bytes(other.to_bytes())
    with pytest.raises(ValueError, match="too small"):
        make_response_probes(probes.images[..., :4, :4], probes.labels, carriers, 40.0)


def test_whitening_recovers_a_key_drowned_along_a_few_directions():
    """A pull of 0.5 along each class's direction plus a louder part in three basis directions:
    whitening (step 3) finds the key better on every draw (measured: mean log10 p -7.2 against
    -2.4 without, over these five draws)."""
    raw, white = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        u = _uniform(rng, (10,), 17)
        loud = np.zeros((10, 17))
        loud[:, :3] = 2 * rng.standard_normal((10, 3))
        sus = 0.5 * u + loud + 0.1 * rng.standard_normal((10, 17))
        raw.append(response_test(sus, u, whiten=None).log10_p)
        white.append(response_test(sus, u).log10_p)
    assert all(w < r for w, r in zip(white, raw, strict=True)), (white, raw)
    assert np.mean(white) < np.mean(raw) - 3, (white, raw)
    with pytest.raises(ValueError, match="whiten must be > 0"):
        response_test(sus, u, whiten=0.0)
