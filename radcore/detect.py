"""White-box detection (Sablayrolles et al. 2020, sec. 4.2).

With the suspect's weights at hand: align its penultimate feature space to the marker's on
vanilla held-out images, map its classifier rows W (C×d') back to marker space (W~ = W Mᵀ),
and score each class by c_i = cos(W~_i, u_i). Under H0 (the suspect never saw the carriers)
u_i is a uniform direction independent of W~_i, so each c_i has the Beta null of
:func:`radcore.stats.cosine_log_pvalue`; classes combine with Fisher's method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from radcore.align import fit_linear_map
from radcore.carriers import Carriers
from radcore.markers import Marker
from radcore.nets import last_linear, penultimate
from radcore.stats import cosine_log_pvalue, fisher_log_pvalue, log10

__all__ = [
    "WhiteboxDetection",
    "detect_whitebox",
    "mapped_rows",
    "score_mapped_rows",
    "whitebox_features",
    "whitebox_test",
]


@dataclass(frozen=True)
class WhiteboxDetection:
    """Result of the white-box test.

    log10_p: combined (Fisher) log10 p-value; cosines / log10_p_per_class: one per class.
    """

    log10_p: float
    cosines: tuple[float, ...]
    log10_p_per_class: tuple[float, ...]
    num_images: int
    dim: int


def detect_whitebox(
    marker_feats: torch.Tensor,
    suspect_feats: torch.Tensor,
    suspect_weight: torch.Tensor,
    carriers: Carriers,
) -> WhiteboxDetection:
    """The test on precomputed features.

    marker_feats: n×d, suspect_feats: n×d' (same images, same order, never marked, never seen
    by the marker's training); suspect_weight: C×d', the suspect's classification layer.
    """
    c, d = carriers.num_classes, carriers.dim
    if marker_feats.shape[1] != d:
        raise ValueError(f"marker features have d={marker_feats.shape[1]}, carriers d={d}")
    if suspect_weight.ndim != 2 or suspect_weight.shape[0] != c:
        raise ValueError(
            f"suspect classifier has {suspect_weight.shape[0]} outputs but the release has {c} "
            "classes: audit it against a release with the same classes"
        )
    if suspect_weight.shape[1] != suspect_feats.shape[1]:
        raise ValueError("suspect_weight columns must match the suspect feature dimension")
    w_tilde = mapped_rows(marker_feats, suspect_feats, suspect_weight)  # C×d
    return score_mapped_rows(w_tilde, carriers, int(marker_feats.shape[0]))


def score_mapped_rows(
    w_tilde: torch.Tensor, carriers: Carriers, num_images: int = 0
) -> WhiteboxDetection:
    """The cosine test on classifier rows already mapped to marker space (W~ = W Mᵀ, C×d).

    Useful to score many carrier sets against one alignment (an empirical null).
    """
    c, d = carriers.num_classes, carriers.dim
    if w_tilde.shape != (c, d):
        raise ValueError(f"mapped rows must be {c}×{d}, got {tuple(w_tilde.shape)}")
    w_tilde = w_tilde.to(torch.float64)
    u = carriers.vectors.to(torch.float64)
    cos = torch.nn.functional.cosine_similarity(w_tilde, u, dim=1).numpy()
    cos = np.clip(cos, -1.0, 1.0)
    log_p = cosine_log_pvalue(cos, d)
    return WhiteboxDetection(
        log10_p=float(log10(fisher_log_pvalue(log_p))),
        cosines=tuple(float(v) for v in cos),
        log10_p_per_class=tuple(float(v) for v in log10(log_p)),
        num_images=num_images,
        dim=d,
    )


def mapped_rows(
    marker_feats: torch.Tensor, suspect_feats: torch.Tensor, suspect_weight: torch.Tensor
) -> torch.Tensor:
    """W~ = W Mᵀ (C×d float64): the suspect's classifier rows in marker space."""
    m = fit_linear_map(marker_feats, suspect_feats)  # d×d'
    return suspect_weight.detach().to("cpu", torch.float64) @ m.T


@torch.no_grad()
def whitebox_features(
    marker: Marker,
    suspect: nn.Module,
    images: torch.Tensor,
    suspect_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Marker and suspect penultimate features of the same images, in batches.

    images: n×C×H×W float in [0, 1] (or uint8). suspect_transform: the suspect's own input
    preprocessing (e.g. its normalisation); identity when None. Returns (n×d, n×d') on the CPU.
    """
    suspect.eval()
    fm, fs = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        fm.append(marker(x).cpu())
        xs = suspect_transform(x) if suspect_transform is not None else x
        fs.append(penultimate(suspect, xs)[0].cpu())
    return torch.cat(fm), torch.cat(fs)


def whitebox_test(
    marker: Marker,
    suspect: nn.Module,
    images: torch.Tensor,
    carriers: Carriers,
    suspect_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
) -> WhiteboxDetection:
    """Features of held-out vanilla images -> :func:`detect_whitebox`."""
    fm, fs = whitebox_features(marker, suspect, images, suspect_transform, batch_size)
    return detect_whitebox(fm, fs, last_linear(suspect).weight, carriers)
