"""Differentiable, batched data augmentation for marking.

One affine sampling grid per image (random resized crop, translation, horizontal flip) applied
with ``grid_sample``: gradients flow to the input, parameters are redrawn at every call, and all
of it runs on the input's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "random_augment"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transform.

    scale: area fraction kept by the crop; ratio: crop aspect ratio (w/h);
    translate: maximum shift as a fraction of the side (a trainer's pad-and-crop);
    flip_p: probability of a horizontal flip.
    """

    scale: tuple[float, float] = (0.7, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    translate: float = 0.1
    flip_p: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.translate < 1 or not 0 <= self.flip_p <= 1:
            raise ValueError("translate must be in [0, 1) and flip_p in [0, 1]")


def random_augment(
    images: torch.Tensor,
    cfg: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply a fresh random crop/translate/flip to each image.

    images: B×C×H×W float. Returns B×C×H×W, differentiable with respect to ``images``.
    generator: a CPU torch.Generator for reproducible draws (parameters are drawn on the CPU
    and moved to the images' device).
    """
    b = images.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    area = uniform(*cfg.scale)
    log_ratio = uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    aspect = torch.exp(log_ratio)
    # Crop width and height as fractions of the side; clamp so the crop stays inside.
    sw = torch.sqrt(area * aspect).clamp(max=1.0)
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    # Centre anywhere the crop fits, plus a translation (zero padding outside the image).
    cx = (1 - sw) * uniform(-1.0, 1.0) + 2 * cfg.translate * uniform(-1.0, 1.0)
    cy = (1 - sh) * uniform(-1.0, 1.0) + 2 * cfg.translate * uniform(-1.0, 1.0)
    flip = torch.where(torch.rand(b, generator=generator) < cfg.flip_p, -1.0, 1.0)

    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = cy
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # B×H×W×2
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
