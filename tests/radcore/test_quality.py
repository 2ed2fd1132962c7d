import math

import pytest
import torch

from radcore.quality import psnr, ssim


def test_psnr_known_values():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0] += 1  # every pixel off by one level: MSE = (1/255)^2
    p = psnr(a, b)
    assert p[0].item() == pytest.approx(20 * math.log10(255), rel=1e-12)
    assert math.isinf(p[1].item())


def test_ssim_identity_symmetry_and_monotone():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-9)
    n1 = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    n2 = (x + 0.10 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s1, s2 = ssim(x, n1).item(), ssim(x, n2).item()
    assert 1 > s1 > s2 > 0
    assert ssim(n1, x).item() == pytest.approx(s1, rel=1e-12)


def test_ssim_of_constant_shift_matches_luminance_term():
    # For a constant image pair the structure terms are exactly 1; SSIM is the luminance term.
    x = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)
    y = torch.full((1, 1, 16, 16), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-9)
