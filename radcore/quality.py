"""Image quality: PSNR and SSIM, per image.

Inputs are B×C×H×W, either uint8 (0-255) or float in [0, 1]; both are compared on the [0, 1]
scale. SSIM follows Wang et al. 2004 (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03), averaged
over channels and positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "to_unit"]


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 0-255 or float [0, 1] -> float64 [0, 1]."""
    if images.dtype == torch.uint8:
        return images.to(torch.float64) / 255.0
    return images.to(torch.float64)


def psnr(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (peak 1.0 on the [0, 1] scale). Identical images give +inf.

    reference, distorted: B×C×H×W of the same shape. Returns B float64.
    """
    if reference.shape != distorted.shape:
        raise ValueError(f"shape mismatch: {tuple(reference.shape)} vs {tuple(distorted.shape)}")
    mse = (to_unit(reference) - to_unit(distorted)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return g[:, None] * g[None, :]


def ssim(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (mean over channels and valid positions). Returns B float64.

    Images smaller than the 11×11 window use a window of their smallest side.
    """
    if reference.shape != distorted.shape:
        raise ValueError(f"shape mismatch: {tuple(reference.shape)} vs {tuple(distorted.shape)}")
    x, y = to_unit(reference), to_unit(distorted)
    c = x.shape[1]
    size = min(11, x.shape[-1], x.shape[-2])
    w = _gaussian_window(size).to(x.device).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)
