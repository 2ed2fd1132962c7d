"""White-box detection on synthetic features, where the truth is known."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import radcore as rc
from radcore.detect import detect_whitebox

D_MARKER, D_SUSPECT, C = 256, 320, 10


def _world(seed: int, shift: float, n_train: int = 4000, n_val: int = 1000):
    """Marker-space features of a 10-class problem, a suspect whose features are a random
    linear image of them, and a suspect classifier trained on (optionally) carrier-shifted data."""
    g = torch.Generator().manual_seed(seed)
    carriers = rc.draw_carriers(C, D_MARKER, randbytes=random.Random(seed).randbytes)
    means = 0.3 * torch.randn(C, D_MARKER, generator=g)  # classes ~5 apart, noise sd 1

    def sample(n):
        y = torch.randint(0, C, (n,), generator=g)
        return means[y] + torch.randn(n, D_MARKER, generator=g), y

    a = torch.randn(D_MARKER, D_SUSPECT, generator=g) / D_MARKER**0.5  # marker -> suspect space
    f_train, y_train = sample(n_train)
    f_train = f_train + shift * carriers.vectors[y_train]  # the "radioactive" training data
    w = torch.zeros(C, D_SUSPECT, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    xs = f_train @ a

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w.T + b, y_train) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    f_val, _ = sample(n_val)  # vanilla held-out images
    return f_val, f_val @ a, w.detach(), carriers


def test_marked_suspect_is_detected():
    f_m, f_s, w, carriers = _world(seed=0, shift=1.5)
    det = detect_whitebox(f_m, f_s, w, carriers)
    assert det.log10_p < -10, det.log10_p
    assert min(det.cosines) > 0
    assert len(det.log10_p_per_class) == C


@pytest.mark.parametrize("seed", range(6))
def test_clean_suspect_is_not_flagged(seed):
    f_m, f_s, w, carriers = _world(seed=100 + seed, shift=0.0)
    assert detect_whitebox(f_m, f_s, w, carriers).log10_p > -3


def test_clean_pvalues_are_uniform_over_fresh_carriers():
    # One clean suspect, 200 carrier sets it never saw: combined p-values must be uniform.
    from scipy import stats as sps

    f_m, f_s, w, _ = _world(seed=7, shift=0.0, n_val=400)
    # Seeded carrier draws: the test gives the same verdict on every run (os.urandom would
    # make it fail 1% of runs by construction).
    p = [
        10
        ** detect_whitebox(
            f_m, f_s, w, rc.draw_carriers(C, D_MARKER, randbytes=random.Random(1000 + i).randbytes)
        ).log10_p
        for i in range(200)
    ]
    assert sps.kstest(p, "uniform").pvalue > 0.01


def test_alignment_recovers_a_random_invertible_map():
    g = torch.Generator().manual_seed(3)
    f_m = torch.randn(2000, 32, generator=g, dtype=torch.float64)
    a = torch.randn(32, 32, generator=g, dtype=torch.float64)
    bias = torch.randn(32, generator=g, dtype=torch.float64)
    assert abs(torch.linalg.det(a)) > 1e-3
    m = rc.fit_linear_map(f_m, f_m @ a + bias)
    assert torch.allclose(m, a, atol=1e-8)
    noisy = f_m @ a + 0.01 * torch.randn(2000, 32, generator=g, dtype=torch.float64)
    rel = (rc.fit_linear_map(f_m, noisy) - a).norm() / a.norm()
    assert rel < 0.01


def test_whitebox_test_end_to_end_on_networks():
    """Through real modules: a marker network and a suspect classifier (untrained, so H0)."""
    from radcore.nets import SmallResNet, VGGSmall

    torch.manual_seed(0)
    marker = rc.marker_from_classifier(
        SmallResNet(C, 1, widths=(8, 16)), in_channels=1, mean=(0.5,), std=(0.5,)
    )
    suspect = VGGSmall(C, 1, width=8)
    images = torch.rand(64, 1, 28, 28)
    carriers = rc.draw_carriers(C, marker.dim)
    det = rc.whitebox_test(marker, suspect, images, carriers, batch_size=16)
    assert det.num_images == 64 and det.dim == marker.dim == 16
    assert np.isfinite(det.log10_p) and det.log10_p <= 0


def test_class_count_mismatch_names_the_fix():
    f_m, f_s, w, carriers = _world(seed=1, shift=0.0, n_train=200, n_val=100)
    with pytest.raises(ValueError, match="same classes"):
        detect_whitebox(f_m, f_s, w[:5], carriers)
