"""Calibration on real trained models (a small version of `radtrace experiment`'s study).

A marker and a clean reference trained on one part of Fashion-MNIST, a clean subject trained
on another, probe images from the test split marked with a pool of carriers that no model has
seen. Every rotation of pool carriers into the "true" role is an audit under H0: radtrace's
black-box p-values must be uniform; the per-image paired t-test must show that it is not. The
response test (pattern releases) is audited the same way, with a fresh key per trial.
"""

import random

import numpy as np
import pytest
import torch
from scipy import stats

import radcore as rc
from radcore.blackbox import (
    BlackboxConfig,
    paired_ttest_log10_p,
    response_matrices,
    rotation_null,
)
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.patterns import pattern_coefficients
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.response import make_response_probes, response_null, sensitivity
from radcore.train import TrainConfig, log_probabilities, train_classifier

pytestmark = pytest.mark.slow
MEAN, STD = (0.286,), (0.353,)


def _train(arch, images, labels, seed, **kwargs):
    torch.manual_seed(seed)
    net = build_classifier(arch, 10, 1, **kwargs)
    cfg = TrainConfig(epochs=3, batch_size=100)
    train_classifier(net, images, labels, MEAN, STD, cfg, torch.Generator().manual_seed(seed))
    return net


@pytest.fixture(scope="module")
def world(fashion_mnist_test):
    x, y = load_fashion_mnist("train")
    xt, yt = fashion_mnist_test
    marker_net = _train("small_resnet", x[:3000], y[:3000], 1, widths=(8, 16, 32, 64))
    reference = _train("vgg_small", x[:3000], y[:3000], 2, width=8)
    subject = _train("vgg_small", x[3000:6000], y[3000:6000], 3, width=8)
    marker = rc.marker_from_classifier(marker_net, in_channels=1, mean=MEAN, std=STD)
    carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(5).randbytes)
    pool, true_index = draw_pool(carriers, 30, randbytes=random.Random(6).randbytes)
    pick = select_probes(yt, 16, 10)
    cfg = rc.MarkConfig(eps=6 / 255, steps=6, psnr_floor=None)
    gen = torch.Generator().manual_seed(0)
    probes = mark_probes(xt[pick], yt[pick], pool, true_index, marker, cfg, generator=gen)
    pattern_cfg = rc.MarkConfig(method="pattern", psnr_floor=40.0)
    patterns = mark_probes(xt[pick], yt[pick], pool, true_index, marker, pattern_cfg)
    return subject, reference, probes, patterns


@pytest.fixture(scope="module")
def response_world(world, fashion_mnist_test):
    """Response probes of the test split (50 per class: the release default)."""
    xt, yt = fashion_mnist_test
    pick = select_probes(yt, 50, 10)
    carriers = rc.draw_carriers(10, 64, randbytes=random.Random(7).randbytes)
    return make_response_probes(xt[pick], yt[pick], carriers, 40.0)


def _fn(model):
    return lambda images: log_probabilities(model, images, MEAN, STD)


@pytest.mark.parametrize("method", ["feature", "pattern"])
def test_blackbox_is_calibrated_and_the_paired_ttest_is_not(world, method):
    subject, reference, feature_probes, pattern_probes = world
    probes = feature_probes if method == "feature" else pattern_probes
    clean, marked = pool_logprobs(_fn(subject), probes)
    sus = response_matrices(clean, marked, probes.labels)
    ref = response_matrices(*pool_logprobs(_fn(reference), probes), probes.labels)
    gen = torch.Generator().manual_seed(1)
    ours = 10 ** rotation_null(sus, ref, 200, None, BlackboxConfig(permutations=1000), gen)
    naive = 10 ** np.array(
        [
            paired_ttest_log10_p(clean, marked, probes.labels, torch.randperm(40)[:10].numpy())
            for _ in range(200)
        ]
    )
    assert stats.kstest(ours, "uniform").pvalue > 0.001
    assert (ours <= 0.05).mean() < 0.1
    # The same null audits, images as units: the t-test flags clean models far more often than
    # its nominal 5% (a one-sided binomial test of the false-positive count rejects 0.05).
    false_positives = int((naive <= 0.05).sum())
    assert stats.binomtest(false_positives, len(naive), 0.05, "greater").pvalue < 1e-3
    assert stats.binomtest(int((ours <= 0.05).sum()), len(ours), 0.05, "greater").pvalue > 1e-3


def test_the_response_test_is_calibrated_on_trained_models(world, response_world):
    """Null audits of the response test on the clean subject with its reference: a fresh key per
    trial (seeded here; os.urandom in a release), the model's sensitivity measured once."""
    subject, reference, _, _ = world
    sus = sensitivity(_fn(subject), response_world)
    ref = sensitivity(_fn(reference), response_world)
    source = random.Random(11)

    def fresh():
        car = rc.draw_carriers(10, 64, randbytes=source.randbytes)
        return pattern_coefficients(car.vectors).numpy()

    for reference_part in (ref, None):
        p = 10 ** response_null(sus, reference_part, 1000, fresh)
        assert stats.kstest(p, "uniform").pvalue > 0.001
        assert stats.binomtest(int((p <= 0.05).sum()), len(p), 0.05, "greater").pvalue > 1e-3
        assert stats.binomtest(int((p <= 0.01).sum()), len(p), 0.01, "greater").pvalue > 1e-3
