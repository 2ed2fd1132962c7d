"""Pattern marks (radcore.patterns): the patterns, their law, and what marking stores."""

import random

import numpy as np
import pytest
import torch
from scipy import stats

import radcore as rc
from radcore.patterns import add_patterns, pattern_dim, pattern_frequencies, render_patterns
from tests.conftest import load_foolbox_samples


def _carriers(n, dim=128, seed=0):
    return rc.draw_carriers(n, dim, randbytes=random.Random(seed).randbytes)


def test_patterns_are_unit_flip_symmetric_and_keep_the_carriers_geometry():
    car = _carriers(40)
    for h, w in ((28, 28), (32, 32), (17, 40)):
        p = render_patterns(car.vectors, h, w)
        assert p.shape == (40, h, w)
        assert torch.allclose(p.flatten(1).norm(dim=1), torch.ones(40, dtype=p.dtype))
        assert torch.allclose(p, p.flip(2), atol=1e-12)  # the same after a horizontal flip
        assert p.mean((1, 2)).abs().max() < 1e-12  # no constant term: no brightness shift
        # An orthonormal basis: the patterns' inner products are their coefficients'.
        c = car.vectors[:, : pattern_dim(6)].double()
        c = c / c.norm(dim=1, keepdim=True)
        assert torch.allclose(p.flatten(1) @ p.flatten(1).T, c @ c.T, atol=1e-9)
    assert pattern_dim(6) == len(pattern_frequencies(6)) == 17


def test_patterns_of_fresh_carriers_are_isotropic():
    # The black-box test needs control patterns drawn like the true ones: uniform directions.
    m = pattern_dim(6)
    c = render_patterns(_carriers(4000, seed=3).vectors, 28, 28).flatten(1).double()
    basis = render_patterns(torch.eye(128)[:m], 28, 28).flatten(1).double()  # one per frequency
    coef = (c @ basis.T).numpy()  # 4000×m coefficients
    assert np.allclose(coef.mean(0), 0, atol=4 * np.sqrt(1 / m / 4000))
    cov = coef.T @ coef / len(coef)
    assert np.abs(np.diag(cov) - 1 / m).max() < 0.006  # sd of each diagonal entry: 0.0012
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.005  # sd of each: 0.0009
    # Each coefficient of a uniform direction in R^m: (c^2) ~ Beta(1/2, (m-1)/2).
    ks = stats.kstest(coef[:, 0] ** 2, stats.beta(0.5, (m - 1) / 2).cdf)
    assert ks.pvalue > 1e-3


@pytest.mark.parametrize("source", ["fashion_mnist", "cifar10"])
def test_marks_sit_at_the_floor_and_carry_their_class_pattern(source, fashion_mnist_test):
    if source == "fashion_mnist":
        x, y = fashion_mnist_test[0][:200], fashion_mnist_test[1][:200]
    else:
        x, y = load_foolbox_samples("cifar10")
    car = _carriers(10, seed=1)
    h, w = x.shape[-2:]
    q = add_patterns(x.double() / 255, render_patterns(car.vectors[y], h, w), floor=40.0)
    assert q.dtype == torch.uint8 and q.shape == x.shape
    p = rc.psnr(x, q)
    assert float(p.min()) >= 40.0 and float(p.max()) < 40.6 and float(p.mean()) < 40.25
    # Decoding: the stored difference correlates best with its own class's pattern.
    diff = (q.double() - x.double()).mean(1)  # the same pattern on every channel
    score = torch.einsum("bhw,chw->bc", diff, render_patterns(car.vectors, h, w))
    assert float((score.argmax(1) == y).double().mean()) == 1.0


def test_saturated_images_stay_within_the_floor():
    x = torch.cat([torch.zeros(2, 1, 28, 28), torch.ones(2, 1, 28, 28)]).double()
    pats = render_patterns(_carriers(4, seed=2).vectors, 28, 28)
    q = add_patterns(x, pats, floor=40.0)
    p = rc.psnr(x, q)
    assert bool((p >= 40.0).all()) and bool(torch.isfinite(p).all())  # half the pattern survives


def test_mark_with_the_pattern_method_and_its_errors(fashion_mnist_test):
    x, y = fashion_mnist_test[0][:20], fashion_mnist_test[1][:20]
    marker = rc.get_marker("efficientnet-lite0", input_size=32)
    car = rc.draw_carriers(10, marker.dim, randbytes=random.Random(4).randbytes)
    cfg = rc.MarkConfig(method="pattern", psnr_floor=40.0)
    r = rc.mark(x, y, car, marker, cfg)
    again = rc.mark(x, y, car, marker, cfg)
    assert torch.equal(r.images, again.images)  # no random draw in pattern marks
    assert float(r.psnr.min()) >= 40.0
    expected = add_patterns(x.double() / 255, render_patterns(car.vectors[y], 28, 28), 40.0)
    assert torch.equal(r.images, expected)
    with pytest.raises(ValueError, match="set psnr_floor"):
        rc.MarkConfig(method="pattern", psnr_floor=None)
    with pytest.raises(ValueError, match="method must be one of"):
        rc.MarkConfig(method="pixels")
    with pytest.raises(ValueError, match="dimension >= 17"):
        render_patterns(torch.randn(3, 8), 28, 28)
    with pytest.raises(ValueError, match="too small"):
        render_patterns(_carriers(3).vectors, 4, 28)


@pytest.mark.slow
def test_a_model_that_learnt_the_patterns_is_found_by_the_blackbox_test(fashion_mnist_test):
    """The whole chain on a model that can only fit its labels through the marks: random labels,
    every training image carrying its label's pattern. Release and probe marks must agree (same
    rendering, same scaling) for the test to find it; a clean model on the same labels must not."""
    from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs
    from radcore.datasets import load_fashion_mnist
    from radcore.nets import build_classifier
    from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
    from radcore.train import TrainConfig, log_probabilities, train_classifier

    mean, std = (0.286,), (0.353,)
    x, _ = load_fashion_mnist("train")
    x = x[:2000]
    y = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    marker = rc.get_marker("efficientnet-lite0", input_size=32)
    car = rc.draw_carriers(10, marker.dim, randbytes=random.Random(7).randbytes)
    cfg = rc.MarkConfig(method="pattern", psnr_floor=30.0)
    marked = add_patterns(x.double() / 255, render_patterns(car.vectors[y], 28, 28), 30.0)

    def fit(images):
        torch.manual_seed(1)
        net = build_classifier("vgg_small", 10, 1, width=8)
        gen = torch.Generator().manual_seed(1)
        train_classifier(net, images, y, mean, std, TrainConfig(epochs=4, batch_size=100), gen)
        return lambda im: log_probabilities(net, im, mean, std)

    xt, yt = fashion_mnist_test
    pick = select_probes(yt, 10, 10)
    pool, true_index = draw_pool(car, 30, randbytes=random.Random(8).randbytes)
    probes = mark_probes(xt[pick], yt[pick], pool, true_index, marker, cfg)
    bb = BlackboxConfig(permutations=20_000)
    planted, unmarked = fit(marked), fit(x)
    found = blackbox_from_logprobs(
        *pool_logprobs(planted, probes), probes.labels, true_index, cfg=bb
    )
    clean = blackbox_from_logprobs(
        *pool_logprobs(unmarked, probes), probes.labels, true_index, cfg=bb
    )
    assert found.log10_p < -4, found.log10_p  # measured: -5.15 (z 4.17); the clean model -0.19
    assert clean.log10_p > -3, clean.log10_p
    # The response test on the same models: no controls, its null exact.
    from radcore.response import make_response_probes, response_test, sensitivity

    rp = make_response_probes(xt[pick], yt[pick], car, 30.0)
    coef = rp.coefficients.numpy()
    hit = response_test(sensitivity(planted, rp), coef)
    miss = response_test(sensitivity(unmarked, rp), coef)
    assert hit.log10_p < -6, hit.log10_p  # measured: -10.56 (z 6.22); the clean model -0.08
    assert miss.log10_p > -3, miss.log10_p
