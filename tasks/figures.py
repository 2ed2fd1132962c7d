"""Pictures for MLflow runs, as PNG bytes: marked-vs-original grids and histograms.

Every function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global figure state, no display needed) and returns the PNG bytes. The output is
deterministic: the same inputs give the same bytes with the same matplotlib and fonts.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["MAX_COLUMNS", "comparison_figure", "histogram_figure", "null_figure"]

MAX_COLUMNS = 8
_DPI = 100
# No "Software" entry: the bytes do not change with the matplotlib version string.
_PNG_METADATA: dict[str, str | None] = {"Software": None}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return buf.getvalue()


def _as_images(name: str, images: np.ndarray) -> np.ndarray:
    """N×H×W or N×H×W×{1,3} uint8 -> N×H×W or N×H×W×3 uint8 (a trailing 1 is dropped)."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise TypeError(
            f"{name} must be uint8 (0-255), got {a.dtype}: convert with "
            "(x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 3)):
        raise ValueError(
            f"{name} must be N×H×W (gray) or N×H×W×3 (RGB), got shape {a.shape}: "
            "move channels last (e.g. x.permute(0, 2, 3, 1) for N×C×H×W tensors)"
        )
    if not 1 <= a.shape[0] <= MAX_COLUMNS:
        raise ValueError(f"{name} holds {a.shape[0]} images: pass 1 to {MAX_COLUMNS}")
    return a


def comparison_figure(originals: np.ndarray, marked: np.ndarray, amplify: float = 20.0) -> bytes:
    """A 3-row grid: originals, marked copies, and their difference amplified around gray.

    originals, marked: N×H×W (gray) or N×H×W×3 (RGB) uint8 arrays of the same shape, N in 1..8.
    amplify: the difference row shows ``0.5 + amplify * (marked - original) / 255``, clipped to
    [0, 1], so mid-gray means "unchanged".
    Returns PNG bytes about ``max(4, 1.6 N)`` × 5.4 inches at 100 dpi.
    """
    a = _as_images("originals", originals)
    b = _as_images("marked", marked)
    if a.shape != b.shape:
        raise ValueError(
            f"originals {a.shape} and marked {b.shape} differ in shape: pass the same images"
        )
    if not (math.isfinite(amplify) and amplify > 0):
        raise ValueError(f"amplify must be a positive finite number, got {amplify!r}")
    diff = np.clip(0.5 + amplify * (b.astype(np.float64) - a.astype(np.float64)) / 255.0, 0, 1)
    n = a.shape[0]
    fig = Figure(figsize=(max(4.0, 1.6 * n), 5.4))
    axes = fig.subplots(3, n, squeeze=False)
    rows = [
        ("original", a.astype(np.float64) / 255.0),
        ("marked", b.astype(np.float64) / 255.0),
        (f"difference ×{amplify:g}", diff),
    ]
    for r, (label, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(imgs[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label)
    fig.tight_layout()
    return _png(fig)


def _finite(name: str, values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError(f"{name} is empty: pass at least one value")
    bad = int(np.count_nonzero(~np.isfinite(v)))
    if bad:
        raise ValueError(f"{name} holds {bad} non-finite values: drop NaN/inf before plotting")
    return v


def histogram_figure(
    values: Sequence[float], *, title: str, xlabel: str, bins: int | Sequence[float] = 30
) -> bytes:
    """A histogram of ``values`` (finite numbers) with its count and mean in the title.

    bins: a number of equal-width bins or the bin edges, as for ``numpy.histogram``.
    Returns PNG bytes of a 6.4 × 4 inch figure at 100 dpi.
    """
    v = _finite("values", values)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    ax.hist(v, bins=bins, color="tab:blue", edgecolor="white")
    ax.set_title(f"{title}\n(n = {v.size}, mean = {v.mean():.4g})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    return _png(fig)


def null_figure(
    null_stats: Sequence[float], observed: float, *, title: str, xlabel: str, bins: int = 40
) -> bytes:
    """A histogram of a null distribution with the observed statistic as a red vertical line.

    null_stats: the statistic under H0 (e.g. over control carriers), finite numbers.
    observed: the statistic of the real test; the x range always includes it.
    Returns PNG bytes of a 6.4 × 4 inch figure at 100 dpi.
    """
    v = _finite("null_stats", null_stats)
    if not math.isfinite(observed):
        raise ValueError(f"observed must be finite, got {observed!r}")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    ax.hist(v, bins=bins, color="tab:gray", edgecolor="white", label=f"null (n = {v.size})")
    ax.axvline(observed, color="tab:red", linewidth=2, label=f"observed = {observed:.4g}")
    lo, hi = min(float(v.min()), observed), max(float(v.max()), observed)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(loc="best")
    fig.tight_layout()
    return _png(fig)
