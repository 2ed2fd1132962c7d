"""Probe (not part of `make bench`): black-box power against mark strength (PSNR) at 10% marked.

Issue 5 asks for this trade-off where the PSNR floor and the detection target cannot both hold.
What it measures (2 cores, about 22 minutes; models cached in $RADTRACE_PROBE_CACHE): a marker
(SmallResNet 16-32-64-128, 3 epochs, the demo's) and a clean reference (VGG-style, width 16, 8
epochs) trained on one half of Fashion-MNIST's training set; for each mark strength, a suspect
(same VGG recipe) trained on the other half with 10% of each class marked; a control trained on
the same half unmarked. Probes: 30 per class from the test set (never seen by the marker or the
trainers), marked with the 10 true + 30 control carriers by the release's own procedure (same
eps and floor). For each setting: PSNR of the marks, suspect accuracy, log10 p of the calibrated
black-box test ("own" and "cross" statistics, reference covariate on) for the suspect and for
the control on the same probes, and the naive per-image paired t-test. Seeded carriers: a probe,
never a release.

    .venv/bin/python -m bench.probe_tradeoff            # writes bench/results/tradeoff.json
    RADTRACE_TRADEOFF="4:40,6,8,12" .venv/bin/python -m bench.probe_tradeoff
    RADTRACE_SELECTION=hard .venv/bin/python -m bench.probe_tradeoff   # -> tradeoff_hard.json

``RADTRACE_SELECTION``: ``random`` (the first 10% of each class in a seeded shuffle, the
default) or ``hard`` (the 10% of each class with the highest loss under the marker's own
classifier, what a release does by default since 2026-12-04).

Settings are ``eps`` (8-bit levels) or ``eps:floor`` (PSNR floor in dB on the stored images).
"""

from __future__ import annotations

import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

import radcore as rc
from bench.run import RESULTS_DIR, write_json
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs, paired_ttest_log10_p
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.probes import draw_pool, mark_probes, pool_logprobs, select_probes
from radcore.train import TrainConfig, accuracy, log_probabilities, train_classifier

MEAN, STD = (0.286,), (0.353,)
CACHE = Path(os.environ.get("RADTRACE_PROBE_CACHE", "/tmp/radtrace-probe-cache"))
SETTINGS = os.environ.get("RADTRACE_TRADEOFF", "4:40,6,8,12")
SELECTION = os.environ.get("RADTRACE_SELECTION", "random")
FRACTION, PROBES_PER_CLASS, CONTROLS = 0.1, 30, 30
T0 = time.time()


def log(*parts: object) -> None:
    print(f"[{time.time() - T0:7.1f}s]", *parts, flush=True)


def parse(settings: str) -> list[tuple[float, float | None]]:
    out = []
    for item in settings.split(","):
        eps, _, floor = item.strip().partition(":")
        out.append((float(eps), float(floor) if floor else None))
    return out


def train(arch: str, x, y, epochs: int, seed: int, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_classifier(arch, 10, 1, **kw)
    gen = torch.Generator().manual_seed(seed)
    train_classifier(net, x, y, MEAN, STD, TrainConfig(epochs=epochs), gen)
    return net


def cached(name: str, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    path = CACHE / f"{name}.pt"
    if not path.exists():
        torch.save(make(), path)
    return torch.load(path, weights_only=False)  # our own cache, written just above


def main() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
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
    pool, true_index = draw_pool(carriers, CONTROLS, randbytes=random.Random(18).randbytes)
    xb, yb = xtr[b], ytr[b]
    if SELECTION not in ("random", "hard"):
        raise SystemExit(f"RADTRACE_SELECTION must be random or hard, got {SELECTION!r}")
    if SELECTION == "hard":
        label_logp = marker.class_log_probs(xb.float() / 255).gather(1, yb[:, None]).squeeze(1)

    def chosen(c: int) -> torch.Tensor:
        idx = (yb == c).nonzero().flatten()  # stored order: a seeded shuffle of the training set
        if SELECTION == "hard":
            idx = idx[label_logp[idx].argsort()]  # the lowest log p of the label first
        return idx[: round(FRACTION * len(idx))]

    sel = torch.cat([chosen(c) for c in range(10)])
    pick = select_probes(yte[:1000], PROBES_PER_CLASS, 10)
    held_x, held_y = xte[3000:], yte[3000:]

    def fn(model: torch.nn.Module):
        return lambda x: log_probabilities(model, x, MEAN, STD)

    def blackbox(model, probes, ref_lp) -> dict[str, float]:
        clean, marked = pool_logprobs(fn(model), probes)
        out = {}
        for stat in ("own", "cross"):
            cfg = BlackboxConfig(statistic=stat, permutations=50_000)
            d = blackbox_from_logprobs(clean, marked, probes.labels, true_index, *ref_lp, cfg)
            out[f"log10_p_{stat}"] = round(d.log10_p, 3)
            out[f"z_{stat}"] = round(d.z, 3)
        out["log10_p_paired_t_invalid"] = round(
            paired_ttest_log10_p(clean, marked, probes.labels, true_index), 3
        )
        return out

    rows = []
    for eps, floor in parse(SETTINGS):
        cfg = rc.MarkConfig(eps=eps / 255, psnr_floor=floor)
        tag = f"e{eps:g}_f{floor}" + ("_hard" if SELECTION == "hard" else "")

        def marked_suspect(cfg=cfg) -> torch.nn.Module:
            x = xb.clone()
            for s in range(0, len(sel), 250):
                i = sel[s : s + 250]
                x[i] = rc.mark(x[i], yb[i], carriers, marker, cfg).images
            return train("vgg_small", x, yb, 8, 3, width=16)

        start = time.time()
        sample = sel[::6]  # every class: PSNR and shift of ~500 marks by the same procedure
        marks = rc.mark(xb[sample], yb[sample], carriers, marker, cfg)
        psnr, shift = marks.psnr, marks.shift_own.mean()
        suspect = cached(f"suspect_{tag}", marked_suspect)
        probes = mark_probes(xte[pick], yte[pick], pool, true_index, marker, cfg)
        ref_lp = pool_logprobs(fn(ref), probes)
        row = {
            "eps": eps,
            "psnr_floor": floor,
            "psnr_mean": round(float(psnr.mean()), 2),
            "psnr_min": round(float(psnr.min()), 2),
            "shift_own": round(float(shift), 4),
            "suspect_accuracy": round(accuracy(suspect, held_x, held_y, MEAN, STD), 4),
            "suspect": blackbox(suspect, probes, ref_lp),
            "control": blackbox(ctl, probes, ref_lp),
            "seconds": round(time.time() - start, 1),
        }
        rows.append(row)
        log(row)
    result = {
        "what": "black-box log10 p against mark PSNR at 10% marked (bench/probe_tradeoff.py)",
        "fraction": FRACTION,
        "selection": SELECTION,
        "probes_per_class": PROBES_PER_CLASS,
        "controls": CONTROLS,
        "control_accuracy": round(accuracy(ctl, held_x, held_y, MEAN, STD), 4),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    name = "tradeoff.json" if SELECTION == "random" else f"tradeoff_{SELECTION}.json"
    write_json(RESULTS_DIR / name, result)
    log("written to", RESULTS_DIR / name)


if __name__ == "__main__":
    main()
