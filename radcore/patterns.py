"""Pattern marks: a secret low-frequency pixel pattern per class, added at the PSNR floor.

The feature-space marks of the paper (:mod:`radcore.mark`) move the marker's features along a
carrier; a from-scratch suspect at 10 classes and 40 dB picks up little of that (DESIGN.md
section 2, README). A pattern mark puts the class's secret directly in pixel space, where any
trainer can learn it as a cue for the class: measured in bench/scratch/2026-12-04/tex.py on the
hardest 10% of each class at 40 dB, the black-box test reached z 4.4 and 5.2 on two draws of
the key, against 2.7-3.1 for feature marks in the same harness.

The pattern of carrier u (a unit vector in R^d, the release's key) is the image whose
coefficients on the m lowest 2-D DCT-II frequencies that are symmetric under a horizontal flip
(vertical frequency 0..K-1, horizontal 0, 2, 4, ... < K, the constant term left out) are the
first m coordinates of u, rescaled to unit norm. Flip symmetry keeps the pattern the same under
the flip a trainer's augmentation applies; low frequencies survive its pad-and-crop shifts.
The first m coordinates of a uniform direction in R^d, rescaled, are a uniform direction in
R^m, so the control carriers of the black-box test give i.i.d. control patterns drawn like the
true ones, and the test stays exact. The pattern is the same on every colour channel.

Each image gets its class's pattern at the amplitude that puts its stored 8-bit copy just above
the PSNR floor (clipping to [0, 255] taken into account). There is no L-inf budget: the floor
is the quality bound.
"""

from __future__ import annotations

import math

import torch

from radcore.quality import psnr

__all__ = [
    "add_patterns",
    "pattern_amplitude",
    "pattern_basis",
    "pattern_coefficients",
    "pattern_dim",
    "pattern_frequencies",
    "render_patterns",
]


def pattern_frequencies(k: int) -> list[tuple[int, int]]:
    """The (vertical, horizontal) DCT frequencies of a pattern with K = k: flip-symmetric
    (even horizontal frequency), the constant left out."""
    if k < 2:
        raise ValueError(f"pattern frequencies K must be >= 2, got {k}")
    return [(fy, fx) for fy in range(k) for fx in range(0, k, 2) if (fy, fx) != (0, 0)]


def pattern_dim(k: int) -> int:
    """m: how many carrier coordinates a pattern with K = k uses."""
    return len(pattern_frequencies(k))


def _dct_rows(n: int, k: int) -> torch.Tensor:
    """k×n orthonormal DCT-II rows cos(pi (t + 1/2) f / n), f = 0..k-1."""
    t = torch.arange(n, dtype=torch.float64) + 0.5
    f = torch.arange(k, dtype=torch.float64)
    rows = torch.cos(math.pi * f[:, None] * t[None, :] / n)
    return rows / rows.norm(dim=1, keepdim=True)


def _check(height: int, width: int, k: int) -> None:
    if min(height, width) < k:
        raise ValueError(
            f"images of {height}×{width} are too small for K={k} pattern frequencies: "
            f"use K <= {min(height, width)}"
        )


def pattern_basis(height: int, width: int, k: int = 6) -> torch.Tensor:
    """The m orthonormal height×width basis images of the patterns (m×H×W float64): the 2-D
    DCT-II products of :func:`pattern_frequencies`."""
    _check(height, width, k)
    freqs = pattern_frequencies(k)
    rows_y = _dct_rows(height, k)[[fy for fy, _ in freqs]]  # m×H
    rows_x = _dct_rows(width, k)[[fx for _, fx in freqs]]  # m×W
    return torch.einsum("ih,iw->ihw", rows_y, rows_x)


def pattern_coefficients(vectors: torch.Tensor, k: int = 6) -> torch.Tensor:
    """The unit coefficient vectors (B×m float64) of carriers ``vectors`` (B×d): their first
    m coordinates, rescaled."""
    m = pattern_dim(k)
    if vectors.ndim != 2 or vectors.shape[1] < m:
        raise ValueError(
            f"pattern marks with K={k} need carriers of dimension >= {m}, got "
            f"{tuple(vectors.shape)}: use a marker with more features or a smaller K"
        )
    coef = vectors[:, :m].to(torch.float64)
    return coef / coef.norm(dim=1, keepdim=True).clamp_min(1e-12)


def render_patterns(vectors: torch.Tensor, height: int, width: int, k: int = 6) -> torch.Tensor:
    """Unit-norm height×width patterns of carriers ``vectors`` (B×d). Returns B×H×W float64."""
    coef = pattern_coefficients(vectors, k)
    # Distinct frequency pairs of orthonormal rows: the patterns have unit norm.
    return torch.einsum("bi,ihw->bhw", coef, pattern_basis(height, width, k))


def pattern_amplitude(height: int, width: int, floor: float) -> float:
    """The amplitude (on the [0, 1] scale) of a unit pattern whose MSE, before clipping and
    rounding, puts an H×W image at PSNR ``floor``."""
    return math.sqrt(10.0 ** (-floor / 10.0) * height * width)


def _store(x0: torch.Tensor, pattern: torch.Tensor, amp: torch.Tensor) -> torch.Tensor:
    return torch.round((x0 + amp.view(-1, 1, 1, 1) * pattern).clamp(0, 1) * 255).to(torch.uint8)


def add_patterns(x0: torch.Tensor, patterns: torch.Tensor, floor: float) -> torch.Tensor:
    """Add each image's unit pattern at the amplitude that keeps its stored PSNR just >= floor.

    x0: B×C×H×W float in [0, 1]; patterns: B×H×W (unit norm). Returns B×C×H×W uint8. An image
    whose pattern is clipped away entirely (e.g. a saturated image) stays unmarked.
    """
    b, c, h, w = x0.shape
    pattern = patterns.to(x0.device, torch.float64).unsqueeze(1).expand(b, c, h, w)
    x0 = x0.to(torch.float64)
    target = 10.0 ** (-(floor + 0.05) / 10.0)  # MSE on the [0, 1] scale, a little above the floor
    start = pattern_amplitude(h, w, floor + 0.05)  # before clipping and rounding
    amp = torch.full((b,), start, dtype=torch.float64, device=x0.device)
    for _ in range(8):
        q = _store(x0, pattern, amp)
        mse = (q.to(torch.float64) / 255 - x0).pow(2).flatten(1).mean(1)
        amp = amp * (target / mse.clamp_min(1e-12)).sqrt().clamp(0.5, 2.0)
    q = _store(x0, pattern, amp)
    for _ in range(60):
        low = psnr(x0, q) < floor
        if not bool(low.any()):
            return q
        amp = torch.where(low, amp * 0.98, amp)
        q = torch.where(low.view(-1, 1, 1, 1), _store(x0, pattern, amp), q)
    low = (psnr(x0, q) < floor).view(-1, 1, 1, 1)
    return torch.where(low, torch.round(x0 * 255).to(torch.uint8), q)
