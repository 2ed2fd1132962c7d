"""radcore: the radioactive-data method in pure PyTorch/NumPy/SciPy.

Carriers, marking networks, differentiable augmentation, marking, alignment, statistics and
white-box detection. No orchestration or storage imports: tensors in, frozen results out, and
the caller picks the device.
"""

from radcore.align import fit_linear_map
from radcore.augment import AugmentConfig, random_augment
from radcore.carriers import Carriers, draw_carriers, load_carriers, save_carriers
from radcore.detect import WhiteboxDetection, detect_whitebox, whitebox_features, whitebox_test
from radcore.mark import MarkConfig, MarkResult, carrier_shift, mark
from radcore.markers import (
    Marker,
    MarkerSpec,
    available_markers,
    get_marker,
    marker_from_classifier,
)
from radcore.quality import psnr, ssim
from radcore.stats import cosine_log_pvalue, fisher_log_pvalue, log10

__all__ = [
    "AugmentConfig",
    "Carriers",
    "MarkConfig",
    "MarkResult",
    "Marker",
    "MarkerSpec",
    "WhiteboxDetection",
    "available_markers",
    "carrier_shift",
    "cosine_log_pvalue",
    "detect_whitebox",
    "draw_carriers",
    "fisher_log_pvalue",
    "fit_linear_map",
    "get_marker",
    "load_carriers",
    "log10",
    "mark",
    "marker_from_classifier",
    "psnr",
    "random_augment",
    "save_carriers",
    "ssim",
    "whitebox_features",
    "whitebox_test",
]
