"""A small end-to-end example of the method on real images, on the CPU, in about a minute.

Fashion-MNIST (Debian's package) -> EfficientNet-Lite0 marker (ImageNet weights, offline) ->
draw carriers -> mark a fraction of a training subset -> train two linear classifiers on the
marker's features (the paper's sec. 5.1 setting): one on the marked subset, one on the same
images unmarked -> white-box test of both on held-out vanilla test images.

This is the pre-pipeline demo; the full job (shards, releases, MLflow, suspects trained from
scratch, the black-box test) replaces it when the pipeline lands.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

import radcore as rc
from radcore.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from radcore.train import train_linear_probe

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoResult:
    carrier_fingerprint: str
    num_train: int
    num_marked: int
    psnr_mean: float
    psnr_min: float
    ssim_mean: float
    shift_ratio: float
    models: tuple[dict, ...]

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def _features(marker: rc.Marker, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    return torch.cat([marker(c.float() / 255) for c in chunks])


def run_demo(
    num_train: int = 300,
    fraction: float = 1.0,
    num_heldout: int = 500,
    input_size: int = 48,
    batch_size: int = 50,
    progress: bool = True,
) -> DemoResult:
    """Run the example; returns what it measured (the carriers themselves never leave)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    x_train, y_train = load_fashion_mnist("train")
    x_test, y_test = load_fashion_mnist("test")
    x_train, y_train = x_train[:num_train], y_train[:num_train]
    heldout = x_test[:num_heldout]

    marker = rc.get_marker("efficientnet-lite0", input_size=input_size)
    carriers = rc.draw_carriers(len(FASHION_MNIST_CLASSES), marker.dim, marker_id=marker.marker_id)

    # Mark a fraction of the training subset (every class alike: the first images of each class).
    chosen = torch.zeros(num_train, dtype=torch.bool)
    for c in range(len(FASHION_MNIST_CLASSES)):
        idx = (y_train == c).nonzero().flatten()
        chosen[idx[: round(fraction * len(idx))]] = True
    marked = x_train.clone()
    sel = chosen.nonzero().flatten()
    results = []
    batches = range(0, len(sel), batch_size)
    for start in tqdm(batches, desc="marking", unit="batch", disable=not progress):
        i = sel[start : start + batch_size]
        r = rc.mark(x_train[i], y_train[i], carriers, marker, rc.MarkConfig())
        marked[i] = r.images
        results.append(r)
    psnr = torch.cat([r.psnr for r in results])
    own = torch.cat([r.shift_own for r in results])
    other = torch.cat([r.shift_other for r in results])
    ssim = rc.ssim(x_train[sel], marked[sel])

    models = []
    held_feats = _features(marker, heldout)
    test_feats = _features(marker, x_test[num_heldout:])
    for name, data in (("probe-on-marked", marked), ("probe-on-clean", x_train)):
        head = train_linear_probe(_features(marker, data), y_train, len(FASHION_MNIST_CLASSES))
        acc = (head(test_feats).argmax(1) == y_test[num_heldout:]).float().mean().item()
        det = rc.detect_whitebox(held_feats, held_feats, head.weight, carriers)
        models.append(
            {
                "name": name,
                "marked_fraction": fraction if name == "probe-on-marked" else 0.0,
                "accuracy": round(acc, 4),
                "log10_p_whitebox": round(det.log10_p, 2),
                "mean_cosine": round(sum(det.cosines) / len(det.cosines), 4),
            }
        )
    return DemoResult(
        carrier_fingerprint=carriers.fingerprint,
        num_train=num_train,
        num_marked=int(chosen.sum()),
        psnr_mean=round(float(psnr.mean()), 2),
        psnr_min=round(float(psnr.min()), 2),
        ssim_mean=round(float(ssim.mean()), 4),
        shift_ratio=round(float(own.mean() / other.mean()), 2),
        models=tuple(models),
    )
