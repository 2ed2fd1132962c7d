"""Marking: push each image's features along its own class carrier.

For an image x of class c, find δ with ||δ||_inf <= eps that maximises the shift of the marking
network's features along the carrier u_c under a random augmentation t redrawn every step:

    x~ = clamp(x + δ, 0, 1)
    loss = -(φ(t(x~)) - φ(x)) · u_c + λ_ft ||φ(t(x~)) - φ(x)||_2 + λ_img ||x~ - x||_2^2

(Sablayrolles et al. 2020, eq. 5). Defaults follow what worked in radtrace's Fashion-MNIST
probe (DESIGN.md section 2): λ_ft = λ_img = 0, Adam with lr eps/3, 12 steps, δ started uniform
in ±eps/2. With λ_ft > 0 the penalty is taken on φ(t(x~)) - φ(t(x)) under the same t, so that
it measures what δ does rather than what the augmentation does. The result is rounded to 8 bits,
kept within eps of the original, and every image below the PSNR floor has its δ shrunk until it
meets the floor on the stored 8-bit values.

``method="pattern"`` marks each image with its class carrier's pixel pattern instead
(:mod:`radcore.patterns`): no optimisation, no L-inf budget, the amplitude set by the PSNR floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from radcore.augment import AugmentConfig, random_augment
from radcore.carriers import Carriers
from radcore.markers import Marker
from radcore.patterns import add_patterns, render_patterns
from radcore.quality import psnr

__all__ = ["METHODS", "MarkConfig", "MarkResult", "carrier_shift", "mark"]

METHODS = ("feature", "pattern")


@dataclass(frozen=True)
class MarkConfig:
    """Marking hyper-parameters. eps is on the [0, 1] scale (4/255 = four 8-bit levels).

    method: "feature" (the paper's, along the carrier in the marker's feature space) or
    "pattern" (the carrier's pixel pattern at the PSNR floor; only psnr_floor and
    pattern_freqs apply, see :mod:`radcore.patterns`).
    """

    eps: float = 4 / 255
    steps: int = 12
    lr: float | None = None  # Adam step size; None means eps / 3
    lambda_ft: float = 0.0
    lambda_img: float = 0.0
    psnr_floor: float | None = 38.0  # dB on the stored 8-bit image; None disables
    init: float = 0.5  # δ starts uniform in ±init·eps
    round_every: int = 0  # round to 8 bits every k steps (the paper: 10); 0 = only at the end
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method: str = "feature"
    pattern_freqs: int = 6  # K of radcore.patterns: 6 uses 17 carrier coordinates

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "pattern" and self.psnr_floor is None:
            raise ValueError(
                "pattern marks are scaled to the PSNR floor: set psnr_floor (e.g. 40 dB)"
            )
        if self.pattern_freqs < 2:
            raise ValueError(f"pattern_freqs must be >= 2, got {self.pattern_freqs}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must be in (0, 1] on the [0, 1] scale, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lambda_ft < 0 or self.lambda_img < 0:
            raise ValueError("lambda_ft and lambda_img must be >= 0")
        if not 0 <= self.init <= 1:
            raise ValueError(f"init must be in [0, 1] (a fraction of eps), got {self.init}")
        if self.psnr_floor is not None and self.psnr_floor <= 0:
            raise ValueError(f"psnr_floor must be positive dB or None, got {self.psnr_floor}")


@dataclass(frozen=True, eq=False)
class MarkResult:
    """Marked images and what was measured on them (all on the stored 8-bit values).

    images: B×C×H×W uint8. psnr: B float64 dB against the originals.
    shift_own: B, feature shift along the image's own carrier under a fresh augmentation.
    shift_other: B, mean |shift| along the other classes' carriers, same augmentation.
    Pattern marks do not target the marker's features and leave both at zero (not measured),
    so that marking needs no network at all.
    """

    images: torch.Tensor
    psnr: torch.Tensor
    shift_own: torch.Tensor
    shift_other: torch.Tensor

    @property
    def shift_ratio(self) -> float:
        """mean(shift_own) / mean(shift_other): how specific the mark is to its carrier."""
        return float(self.shift_own.mean() / self.shift_other.mean().clamp_min(1e-12))


def _as_unit_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("float images must lie in [0, 1]; divide 8-bit values by 255")
    return images.float()


def _check_inputs(x: torch.Tensor, labels: torch.Tensor, carriers: Carriers, marker: Marker):
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be B×C×H×W with C = 1 or 3, got {tuple(x.shape)}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
    if carriers.dim != marker.dim:
        raise ValueError(
            f"carriers have d={carriers.dim} but marker {marker.marker_id} gives d={marker.dim}: "
            "draw carriers for this marker"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= carriers.num_classes):
        raise ValueError(
            f"labels must be class indices in [0, {carriers.num_classes - 1}] "
            f"(one carrier per class); got range [{int(labels.min())}, {int(labels.max())}]"
        )


def _quantize(x0: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Round to 8 bits, staying in [0, 255] and within eps of the original. Returns uint8."""
    q = torch.round(x.clamp(0, 1) * 255)
    lo = torch.ceil((x0 - eps) * 255 - 1e-4).clamp(0, 255)
    hi = torch.floor((x0 + eps) * 255 + 1e-4).clamp(0, 255)
    return torch.minimum(torch.maximum(q, lo), hi).to(torch.uint8)


def _enforce_psnr_floor(
    x0: torch.Tensor, delta: torch.Tensor, q: torch.Tensor, floor: float, eps: float
) -> torch.Tensor:
    """Shrink δ of the images whose stored PSNR is below the floor until it holds."""
    scale = torch.ones(x0.shape[0], device=x0.device)
    for _ in range(30):
        p = psnr(x0, q)
        low = p < floor
        if not bool(low.any()):
            return q
        # MSE scales with the square of δ: aim a little above the floor.
        factor = torch.pow(10.0, (p - floor - 0.05) / 20.0).clamp(0.0, 0.98).float()
        scale = torch.where(low, scale * factor, scale)
        shrunk = x0 + delta * scale.view(-1, 1, 1, 1)
        q = torch.where(low.view(-1, 1, 1, 1), _quantize(x0, shrunk, eps), q)
    # Still below after 30 rounds (only when rounding noise alone breaks the floor): unmarked.
    low = (psnr(x0, q) < floor).view(-1, 1, 1, 1)
    return torch.where(low, _quantize(x0, x0, eps), q)


@torch.no_grad()
def carrier_shift(
    originals: torch.Tensor,
    marked: torch.Tensor,
    labels: torch.Tensor,
    carriers: Carriers,
    marker: Marker,
    augment: AugmentConfig | None = AugmentConfig(),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature shift of marked vs original images along every carrier, under one shared random
    augmentation per image pair (None: no augmentation).

    Returns (own B, other B): the shift along the image's own carrier and the mean absolute
    shift along the other classes' carriers.
    """
    x0, xm = _as_unit_float(originals), _as_unit_float(marked)
    c = x0.shape[1]
    both = torch.cat([x0, xm], dim=1)  # one grid per image for the pair: channels 0..c-1, c..2c-1
    if augment is not None:
        both = random_augment(both, augment, generator)
    v = carriers.vectors.to(x0.device)
    proj = (marker(both[:, c:]) - marker(both[:, :c])) @ v.T  # B×C
    own = proj.gather(1, labels.view(-1, 1).to(proj.device)).squeeze(1)
    others = torch.ones_like(proj, dtype=torch.bool).scatter_(
        1, labels.view(-1, 1).to(proj.device), False
    )
    n_other = max(carriers.num_classes - 1, 1)
    other = (proj.abs() * others).sum(1) / n_other
    return own, other


def mark(
    images: torch.Tensor,
    labels: torch.Tensor,
    carriers: Carriers,
    marker: Marker,
    cfg: MarkConfig = MarkConfig(),
    generator: torch.Generator | None = None,
) -> MarkResult:
    """Mark a batch that may mix classes, each image along its own class carrier.

    images: B×C×H×W, uint8 or float in [0, 1], C = 1 or 3, on the marker's device.
    labels: B int64 class indices. generator: CPU generator for reproducible draws.
    """
    x0 = _as_unit_float(images)
    labels = labels.to(torch.long)
    _check_inputs(x0, labels, carriers, marker)
    if cfg.method == "pattern":
        return _mark_pattern(x0, labels, carriers, cfg)
    u = carriers.vectors.to(x0.device)[labels.to(x0.device)]  # B×d: each image's own carrier
    lr = cfg.lr if cfg.lr is not None else cfg.eps / 3

    with torch.no_grad():
        f0 = marker(x0)  # B×d
    noise = torch.rand(x0.shape, generator=generator).to(x0.device)
    delta = ((noise * 2 - 1) * cfg.init * cfg.eps).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    paired = cfg.lambda_ft > 0  # the feature penalty needs φ(t(x)) under the same t
    c = x0.shape[1]
    for step in range(cfg.steps):
        xt = (x0 + delta).clamp(0, 1)
        if paired:
            both = random_augment(torch.cat([x0, xt], dim=1), cfg.augment, generator)
            with torch.no_grad():
                ref = marker(both[:, :c])
            diff = marker(both[:, c:]) - ref  # B×d, the shift δ causes under this t
        else:
            # Without the penalty only the gradient of φ(t(x~)) · u matters; φ(x) is a constant.
            diff = marker(random_augment(xt, cfg.augment, generator)) - f0  # B×d
        loss = -(diff * u).sum(1)
        if cfg.lambda_ft:
            loss = loss + cfg.lambda_ft * diff.norm(dim=1)
        if cfg.lambda_img:
            loss = loss + cfg.lambda_img * (xt - x0).pow(2).flatten(1).sum(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # images are independent: the sum gives per-image gradients
        opt.step()
        with torch.no_grad():
            delta.clamp_(-cfg.eps, cfg.eps)
            if cfg.round_every and (step + 1) % cfg.round_every == 0:
                delta.copy_(_quantize(x0, x0 + delta, cfg.eps).float() / 255 - x0)

    with torch.no_grad():
        delta = delta.detach()
        q = _quantize(x0, x0 + delta, cfg.eps)
        if cfg.psnr_floor is not None:
            q = _enforce_psnr_floor(x0, delta, q, cfg.psnr_floor, cfg.eps)
        own, other = carrier_shift(x0, q, labels, carriers, marker, cfg.augment, generator)
    return MarkResult(images=q, psnr=psnr(x0, q), shift_own=own, shift_other=other)


@torch.no_grad()
def _mark_pattern(
    x0: torch.Tensor, labels: torch.Tensor, carriers: Carriers, cfg: MarkConfig
) -> MarkResult:
    assert cfg.psnr_floor is not None  # MarkConfig refuses a pattern method without a floor
    h, w = x0.shape[-2:]
    patterns = render_patterns(carriers.vectors[labels.cpu()], h, w, cfg.pattern_freqs)
    q = add_patterns(x0, patterns, cfg.psnr_floor)
    zero = torch.zeros(x0.shape[0], dtype=torch.float32)
    return MarkResult(images=q, psnr=psnr(x0, q), shift_own=zero, shift_other=zero)
