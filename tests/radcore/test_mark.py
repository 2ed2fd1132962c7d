"""Marking real images, offline: Fashion-MNIST (Debian) and foolbox's CIFAR-10 / ImageNet samples.

Specificity is measured as in the issue: mean shift along each image's own carrier over the mean
absolute shift along the other classes' carriers, on the stored 8-bit images, under a fresh
random augmentation shared by each original/marked pair.
"""

import random

import pytest
import torch

import radcore as rc
from radcore.mark import carrier_shift
from tests.conftest import load_foolbox_samples


def _carriers(marker, seed=0, classes=10):
    return rc.draw_carriers(classes, marker.dim, randbytes=random.Random(seed).randbytes)


def _check_stored(result, originals, cfg):
    assert result.images.dtype == torch.uint8
    assert result.images.shape == originals.shape
    step = (result.images.int() - originals.int()).abs().max()
    assert int(step) <= round(cfg.eps * 255)
    assert float(result.psnr.min()) >= cfg.psnr_floor
    # PSNR is measured on the stored values, not on the float optimum.
    assert torch.allclose(result.psnr, rc.psnr(originals, result.images))


@pytest.fixture(scope="module")
def effnet224():
    return rc.get_marker("efficientnet-lite0", input_size=224)


@pytest.mark.slow
def test_imagenet_samples_are_marked_specifically(effnet224):
    x, labels = load_foolbox_samples("imagenet", 224)
    x, y = x[:10], torch.arange(10)  # one image per carrier
    car = _carriers(effnet224)
    cfg = rc.MarkConfig()
    g = torch.Generator().manual_seed(0)
    r = rc.mark(x, y, car, effnet224, cfg, generator=g)
    _check_stored(r, x, cfg)
    assert r.shift_ratio >= 5.0, f"own/other shift ratio {r.shift_ratio:.2f}"
    # The same marks read along the wrong class's carrier carry no signal.
    wrong = (y + 3) % 10
    own_wrong, _ = carrier_shift(x, r.images, wrong, car, effnet224, generator=g)
    assert abs(float(own_wrong.mean())) < 0.2 * float(r.shift_own.mean())


@pytest.mark.parametrize("source", ["fashion_mnist", "cifar10"])
def test_small_images_marked_within_budget_and_along_own_carrier(source, fashion_mnist_test):
    if source == "fashion_mnist":
        x, y = fashion_mnist_test[0][:30], fashion_mnist_test[1][:30]  # gray 28×28
        marker = rc.get_marker("efficientnet-lite0", input_size=64)
    else:
        x, y = load_foolbox_samples("cifar10")  # RGB 32×32
        marker = rc.get_marker("efficientnet-lite0", input_size=96)
    car = _carriers(marker, seed=1)
    cfg = rc.MarkConfig()
    g = torch.Generator().manual_seed(1)
    r = rc.mark(x, y, car, marker, cfg, generator=g)
    _check_stored(r, x, cfg)
    assert r.images.shape[1] == x.shape[1]  # grayscale stays grayscale
    # Measured on 10-class small images: ratios of 2-4 (see the issue note); far below the 5 that
    # ImageNet images reach, but a random perturbation of the same size gives none at all.
    assert r.shift_ratio >= 1.5, f"own/other shift ratio {r.shift_ratio:.2f}"
    noise = torch.randint(-1, 2, x.shape, generator=g)
    noisy = (x.int() + noise).clamp(0, 255).to(torch.uint8)
    own_noise, other_noise = carrier_shift(x, noisy, y, car, marker, generator=g)
    assert float(own_noise.mean()) < 0.2 * float(r.shift_own.mean())


def test_psnr_floor_holds_on_stored_values(fashion_mnist_test):
    x, y = fashion_mnist_test[0][:16], fashion_mnist_test[1][:16]
    marker = rc.get_marker("efficientnet-lite0", input_size=32)
    cfg = rc.MarkConfig(eps=10 / 255, psnr_floor=42.0, steps=3)
    r = rc.mark(x, y, _carriers(marker), marker, cfg, generator=torch.Generator().manual_seed(2))
    _check_stored(r, x, cfg)
    assert float(r.psnr.min()) < 60  # still marked, not returned untouched


def test_float_input_and_errors(fashion_mnist_test):
    x, y = fashion_mnist_test[0][:4], fashion_mnist_test[1][:4]
    marker = rc.get_marker("efficientnet-lite0", input_size=32)
    car = _carriers(marker)
    cfg = rc.MarkConfig(steps=1)
    r = rc.mark(x.float() / 255, y, car, marker, cfg)
    assert r.images.dtype == torch.uint8
    with pytest.raises(ValueError, match="divide 8-bit values by 255"):
        rc.mark(x.float(), y, car, marker, cfg)
    with pytest.raises(ValueError, match="class indices"):
        rc.mark(x, y + 10, car, marker, cfg)
    with pytest.raises(ValueError, match="draw carriers for this marker"):
        rc.mark(x, y, rc.draw_carriers(10, 16), marker, cfg)
    with pytest.raises(ValueError, match="eps"):
        rc.MarkConfig(eps=0)
