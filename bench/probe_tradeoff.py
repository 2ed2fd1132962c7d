"""Probe (not part of `make bench`): black-box power against mark strength at 10% marked.

What it measures (2 cores, about 12 minutes; models cached in $RADTRACE_PROBE_CACHE): a marker
(SmallResNet 16-32-64-128, 3 epochs) and a clean reference (VGG-style, width 16, 8 epochs)
trained on one half of Fashion-MNIST's training set; suspects (same VGG recipe) trained on the
other half with 10% of each class marked at (eps 6/255, no PSNR floor) and (eps 4/255, floor
40 dB); a control trained on the same half unmarked; 300 probes (30 per class) marked with the
10 true + 30 control carriers at probe eps 4/255 and 10/255. Prints log10 p of the black-box
test for each statistic ("own", "cross"), with and without the reference covariate, and the
naive per-image paired t-test. Seeded carriers: a probe, never a release.

    .venv/bin/python -m bench.probe_tradeoff
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import torch

import radcore as rc
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs, paired_ttest_log10_p
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.train import TrainConfig, accuracy, log_probabilities, train_classifier

MEAN, STD = (0.286,), (0.353,)
CACHE = os.environ.get("RADTRACE_PROBE_CACHE", "/tmp/radtrace-probe-cache")
T0 = time.time()


def log(*parts: object) -> None:
    print(f"[{time.time() - T0:7.1f}s]", *parts, flush=True)


def train(arch: str, x, y, epochs: int, seed: int, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_classifier(arch, 10, 1, **kw)
    gen = torch.Generator().manual_seed(seed)
    train_classifier(net, x, y, MEAN, STD, TrainConfig(epochs=epochs), gen)
    return net


def cached(name: str, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    path = f"{CACHE}/{name}.pt"
    if not os.path.exists(path):
        torch.save(make(), path)
    return torch.load(path, weights_only=False)  # our own cache, written just above


def main() -> None:
    os.makedirs(CACHE, exist_ok=True)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
    a, b = perm[:30000], perm[30000:]
    marker_net = cached(
        "marker", lambda: train("small_resnet", xtr[a], ytr[a], 3, 1, widths=(16, 32, 64, 128))
    )
    marker = rc.marker_from_classifier(marker_net, in_channels=1, mean=MEAN, std=STD)
    ref = cached("ref", lambda: train("vgg_small", xtr[a], ytr[a], 8, 2, width=16))
    ctl = cached("ctl", lambda: train("vgg_small", xtr[b], ytr[b], 8, 3, width=16))
    carriers = rc.draw_carriers(10, marker.dim, randbytes=random.Random(17).randbytes)
    yb = ytr[b]
    sel = torch.cat(
        [(yb == c).nonzero().flatten()[: round(0.1 * int((yb == c).sum()))] for c in range(10)]
    )

    def marked_suspect(eps: float, floor: float | None) -> torch.nn.Module:
        xb, psnr, own, other = xtr[b].clone(), [], [], []
        cfg = rc.MarkConfig(eps=eps / 255, psnr_floor=floor)
        for s in range(0, len(sel), 250):
            i = sel[s : s + 250]
            r = rc.mark(xb[i], yb[i], carriers, marker, cfg)
            xb[i] = r.images
            psnr.append(r.psnr), own.append(r.shift_own), other.append(r.shift_other)
        p = torch.cat(psnr)
        log(
            f"eps {eps} floor {floor}: PSNR mean {p.mean():.2f} min {p.min():.2f}, shift own "
            f"{torch.cat(own).mean():.3f} other {torch.cat(other).mean():.3f}"
        )
        return train("vgg_small", xb, yb, 8, 3, width=16)

    suspects = {}
    for eps, floor in ((6, None), (4, 40.0)):
        model = cached(f"suspect_e{eps}_f{floor}", lambda e=eps, f=floor: marked_suspect(e, f))
        suspects[f"suspect eps {eps} floor {floor}"] = model
        acc = accuracy(model, xte[3000:], yte[3000:], MEAN, STD)
        log(f"eps {eps} floor {floor}: accuracy {acc:.4f}")
    pick = select_probes(yte[:1000], 30, 10)

    def fn(model: torch.nn.Module):
        return lambda x: log_probabilities(model, x, MEAN, STD)

    for probe_eps in (4, 10):
        pool, ti = draw_pool(carriers, 30, randbytes=random.Random(18 + probe_eps).randbytes)
        cfg = rc.MarkConfig(eps=probe_eps / 255, psnr_floor=None)
        probes = mark_probes(xte[pick], yte[pick], pool, ti, marker, cfg)
        ref_clean, ref_marked = pool_logprobs(fn(ref), probes)
        for name, model in {"control": ctl, **suspects}.items():
            clean, marked = pool_logprobs(fn(model), probes)
            out = []
            for stat in ("own", "cross"):
                for use_ref in (True, False):
                    bb = BlackboxConfig(statistic=stat, use_reference=use_ref, permutations=50000)
                    d = blackbox_from_logprobs(
                        clean, marked, probes.labels, ti, ref_clean, ref_marked, bb
                    )
                    out.append(f"{stat}/{'ref' if use_ref else 'noref'} {d.log10_p:.2f}")
            naive = paired_ttest_log10_p(clean, marked, probes.labels, ti)
            log(f"probe eps {probe_eps}, {name}: {'; '.join(out)}; paired t {naive:.2f}")


if __name__ == "__main__":
    main()
