"""Alignment of two feature spaces by least squares.

Given features of the same n images from the marker (F_m, n×d) and from a suspect (F_s, n×d'),
find M (d×d') minimising ||(F_m - mean) M - (F_s - mean)||_F. Centring both sides fits an
intercept, which the classifier rows do not need: a suspect's linear layer W (C×d') then maps
back to marker space as W~ = W Mᵀ (C×d).
"""

from __future__ import annotations

import torch

__all__ = ["fit_linear_map"]


def fit_linear_map(marker_feats: torch.Tensor, suspect_feats: torch.Tensor) -> torch.Tensor:
    """Least-squares M with (F_m - μ_m) M ≈ (F_s - μ_s).

    marker_feats: n×d, suspect_feats: n×d', same n and row order. Returns M, d×d' float64.
    Needs n > d for a unique solution; a warning-free minimum-norm solution otherwise.
    """
    if marker_feats.ndim != 2 or suspect_feats.ndim != 2:
        raise ValueError("features must be 2-D (n×d and n×d')")
    if marker_feats.shape[0] != suspect_feats.shape[0]:
        raise ValueError(
            f"need the same images on both sides: {marker_feats.shape[0]} marker rows vs "
            f"{suspect_feats.shape[0]} suspect rows"
        )
    a = marker_feats.detach().to("cpu", torch.float64)
    b = suspect_feats.detach().to("cpu", torch.float64)
    a = a - a.mean(0, keepdim=True)
    b = b - b.mean(0, keepdim=True)
    # gelsd handles rank-deficient A (n <= d) with the minimum-norm solution.
    return torch.linalg.lstsq(a, b, driver="gelsd").solution
