"""Marking throughput on this machine, and the fraction of its measured peak that it reaches.

Two settings, each timed with ``radcore.mark``:

- ``small_marker``: radtrace's default ``MarkConfig()`` (12 steps, eps 4/255) with the marker a
  data owner trains on Fashion-MNIST (``SmallResNet(10, 1)`` on 28×28 grayscale), batch 250.
- ``paper``: the paper's setting, torchvision ResNet-18 at 224×224 with 90 steps, eps 10/255.

FLOPs are the marker's forward + backward to the input only (its weights need no gradient),
counted by ``FlopCounterMode`` per image and step; the augmentation is left out (negligible).
Peak is the larger of an fp32 matmul probe and a 3×3 convolution probe from the same run.
Marker weights are random: the numbers are for timing only.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from time import perf_counter

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import radcore
from radcore.datasets import load_fashion_mnist
from radcore.nets import SmallResNet

__all__ = ["NAME", "marker_flops", "peak_probes", "run", "summarize", "time_marking"]

NAME = "marking"
NUM_CLASSES = 10
SMALL_BATCH = 250
SMALL_TIMED_BATCHES = 2
PAPER_BATCH = 4  # the paper-scale batch: 90 ResNet-18 steps take ~30 s on 2 idle cores
# Besides its steps, mark() runs three plain forwards per image: φ(x) once, then the
# carrier-shift check on the original and the marked image.
EXTRA_FORWARDS = 3

Batch = tuple[torch.Tensor, torch.Tensor]  # uint8 images B×C×H×W, int64 labels B


def _best_gflops(fn: Callable[[], object], flops: float, reps: int) -> float:
    """GFLOP/s of fn's fastest run after one warm-up call."""
    fn()
    best = math.inf
    for _ in range(reps):
        t = perf_counter()
        fn()
        best = min(best, perf_counter() - t)
    return flops / best / 1e9


def peak_probes() -> dict[str, float]:
    """fp32 matmul (2048²) and 3×3 conv (32×128→128×56×56) throughput; peak is the larger."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = _best_gflops(lambda: torch.mm(a, b), 2 * n**3, reps=5)
    bs, ch, hw = 32, 128, 56
    x, w = torch.randn(bs, ch, hw, hw), torch.randn(ch, ch, 3, 3)
    conv_flops = 2 * bs * ch * hw * hw * ch * 9
    conv = _best_gflops(lambda: F.conv2d(x, w, padding=1), conv_flops, reps=3)
    return {"matmul_2048_gflops": mm, "conv3x3_gflops": conv, "peak_gflops": max(mm, conv)}


def marker_flops(marker: radcore.Marker, images: torch.Tensor) -> tuple[float, float]:
    """(forward, forward + backward to the input) FLOPs per image on a uint8 batch."""
    x = images.float() / 255
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        marker(x)
    fwd = fc.get_total_flops()
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as fc:
        marker(x).sum().backward()
    return fwd / len(x), fc.get_total_flops() / len(x)


def time_marking(
    marker: radcore.Marker,
    warmup: Batch,
    timed: list[Batch],
    cfg: radcore.MarkConfig,
    warmup_cfg: radcore.MarkConfig,
) -> list[float]:
    """Seconds per timed batch of ``radcore.mark``, after one warm-up batch."""
    carriers = radcore.draw_carriers(NUM_CLASSES, marker.dim, marker_id=marker.marker_id)
    gen = torch.Generator().manual_seed(0)
    radcore.mark(*warmup, carriers, marker, warmup_cfg, generator=gen)
    seconds = []
    for images, labels in timed:
        t = perf_counter()
        radcore.mark(images, labels, carriers, marker, cfg, generator=gen)
        seconds.append(perf_counter() - t)
    return seconds


def _setting(
    phi: radcore.Marker,
    batches: list[Batch],
    cfg: radcore.MarkConfig,
    warmup_cfg: radcore.MarkConfig,
    peak_gflops: float,
    **info: object,
) -> dict[str, object]:
    seconds = time_marking(phi, batches[0], batches[1:], cfg, warmup_cfg)
    images = sum(len(b[0]) for b in batches[1:])
    ips = images / sum(seconds)
    fwd, fwd_bwd = marker_flops(phi, batches[0][0][:8])
    step_gflops = ips * cfg.steps * fwd_bwd / 1e9
    all_gflops = ips * (cfg.steps * fwd_bwd + EXTRA_FORWARDS * fwd) / 1e9
    return {
        **info,
        "image_size": list(batches[0][0].shape[1:]),
        "batch_size": len(batches[0][0]),
        "steps": cfg.steps,
        "eps_255": round(cfg.eps * 255, 6),
        "psnr_floor": cfg.psnr_floor,
        "timed_batches": len(seconds),
        "batch_seconds": [round(s, 4) for s in seconds],
        "images_per_second": ips,
        "flops_per_image_step": fwd_bwd,
        "forward_flops_per_image": fwd,
        "achieved_gflops": step_gflops,
        "achieved_fraction_of_peak": step_gflops / peak_gflops,
        "achieved_fraction_incl_extra_forwards": all_gflops / peak_gflops,
    }


def _fashion_batches(n: int, size: int, gen: torch.Generator) -> tuple[list[Batch], str]:
    """n batches of Fashion-MNIST test images, or random uint8 ones if it is not installed."""
    try:
        images, labels = load_fashion_mnist("test")
        source = f"fashion-mnist test[0:{n * size}]"
    except FileNotFoundError:
        images = torch.randint(0, 256, (n * size, 1, 28, 28), generator=gen, dtype=torch.uint8)
        labels = torch.randint(0, NUM_CLASSES, (n * size,), generator=gen)
        source = "random uint8 (Fashion-MNIST not installed)"
    batches = [(images[i : i + size], labels[i : i + size]) for i in range(0, n * size, size)]
    return batches, source


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run() -> dict[str, object]:
    """Measure both settings and the peak probes; returns the JSON-ready result."""
    gen = torch.Generator().manual_seed(0)
    load_before = os.getloadavg()[0]
    peak = peak_probes()

    net = SmallResNet(NUM_CLASSES, 1)
    small = radcore.marker_from_classifier(net, in_channels=1, mean=(0.286,), std=(0.353,))
    batches, source = _fashion_batches(1 + SMALL_TIMED_BATCHES, SMALL_BATCH, gen)
    cfg = radcore.MarkConfig()
    small_result = _setting(
        small, batches, cfg, cfg, peak["peak_gflops"],
        marker="SmallResNet(10, 1) via marker_from_classifier", images=source,
    )  # fmt: skip

    resnet = radcore.get_marker("resnet18", allow_random=True, input_size=224)
    rgb = [
        (
            torch.randint(0, 256, (PAPER_BATCH, 3, 224, 224), generator=gen, dtype=torch.uint8),
            torch.randint(0, NUM_CLASSES, (PAPER_BATCH,), generator=gen),
        )
        for _ in range(2)
    ]
    paper_cfg = radcore.MarkConfig(eps=10 / 255, steps=90, psnr_floor=None)
    paper_result = _setting(
        resnet, rgb, paper_cfg, radcore.MarkConfig(eps=10 / 255, steps=2, psnr_floor=None),
        peak["peak_gflops"], marker="torchvision resnet18 (random weights)",
        images="random uint8 RGB", warmup="one batch of 2 steps",
    )  # fmt: skip

    return {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
        "loadavg_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "peak": peak,
        "small_marker": small_result,
        "paper": paper_result,
        "notes": (
            "Random marker weights (timing only). images_per_second covers all of mark() "
            "(steps, augmentation, 8-bit rounding, PSNR floor, carrier-shift check). "
            "flops_per_image_step counts the marker's forward + backward to the input only "
            "(FlopCounterMode; weights frozen; augmentation not counted). "
            "achieved_fraction_of_peak = images_per_second * steps * flops_per_image_step / "
            f"peak; the _incl_extra_forwards variant adds mark()'s {EXTRA_FORWARDS} plain "
            "forwards per image. Peak = max(matmul, conv3x3 probe), same run. Other load on the "
            "machine (see loadavg_1min) lowers every number here."
        ),
    }


def summarize(result: dict) -> str:
    """A few human-readable lines."""
    peak = result["peak"]
    lines = [
        f"marking on {result['cpu_model']}, {result['num_threads']} threads, "
        f"torch {result['torch_version']}",
        f"  peak {peak['peak_gflops']:.1f} GFLOP/s (matmul {peak['matmul_2048_gflops']:.1f}, "
        f"conv3x3 {peak['conv3x3_gflops']:.1f})",
    ]
    for key in ("small_marker", "paper"):
        r = result[key]
        size = "x".join(str(s) for s in r["image_size"])
        lines.append(
            f"  {key}: {r['images_per_second']:.2f} img/s ({size}, batch {r['batch_size']}, "
            f"{r['steps']} steps), {r['flops_per_image_step'] / 1e6:.1f} MFLOP/img/step, "
            f"{r['achieved_gflops']:.1f} GFLOP/s = {r['achieved_fraction_of_peak']:.1%} of peak"
        )
    return "\n".join(lines)
