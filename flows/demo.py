"""Flow ``demo``: the main job end to end on Fashion-MNIST with embedded defaults.

    shard (owner half, public half, held-out test images)
      -> the data owner trains its marker and a clean reference on the owner half
      -> release of the public half with a fraction of each class marked (+ black-box probes)
      -> a suspect trained on the release, a control trained on the clean public half
         (same architecture and recipe, both registered in MLflow)
      -> both audited, black-box and white-box -> a table

The marker never sees the public half, the probes or the alignment images (all three are
disjoint from the owner half), and the suspect's architecture differs from the marker's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows.audit import audit_model
from flows.params import AuditParams, ReleaseParams
from flows.release import release_dataset
from radcore.datasets import FASHION_MNIST_CLASSES
from radcore.train import TrainConfig
from tasks.models import arch_record
from tasks.steps import shard_idx_range
from tasks.training import train_on_shards

__all__ = [
    "TABLE_KEYS",
    "DemoParams",
    "audit_row",
    "demo_flow",
    "owner_setup",
    "release_for",
    "train_suspect",
]

FMNIST_MEAN, FMNIST_STD = (0.286,), (0.353,)
MARKER_ARCH = {"arch": "small_resnet", "widths": [16, 32, 64, 128]}
SUSPECT_ARCH = {"arch": "vgg_small", "width": 16}
# The columns of the demo table (and of each model in `radtrace demo --json`).
TABLE_KEYS = (
    "name",
    "marked_fraction",
    "accuracy",
    "log10_p_blackbox",
    "log10_p_whitebox",
    "verdict",
)


class DemoParams(BaseModel):
    """Sizes of the demo. The defaults are the full demo; ``quick()`` is the 5-minute one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_per_half: int = Field(30_000, ge=1000, le=30_000, description="Owner and public images.")
    fraction: float = Field(0.1, gt=0.0, le=1.0, description="Share of each class marked.")
    eps_255: float = Field(4.0, gt=0.0, le=32.0)
    psnr_floor: float = Field(40.0, ge=20.0, le=80.0)
    method: Literal["pattern", "feature"] = Field("pattern", description="How images are marked.")
    skip_hardest: float = Field(0.02, ge=0.0, lt=1.0, description="See ReleaseParams.")
    marker_epochs: int = Field(3, ge=1, le=100)
    epochs: int = Field(8, ge=1, le=200, description="Epochs of the reference and suspects.")
    probes_per_class: int = Field(50, ge=5, le=500)
    num_controls: int = Field(100, ge=5, le=1000)
    num_heldout: int = Field(2000, ge=200, le=5000, description="White-box alignment images.")
    alpha: float = Field(1e-3, gt=0.0, lt=1.0)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoParams:
        base = dict(
            num_per_half=20_000,
            marker_epochs=2,
            epochs=6,
            probes_per_class=30,
            num_controls=60,
            num_heldout=1000,
            skip_hardest=0.0,  # less trace to spare at these sizes; accuracy cost 0.2 at 0
        )
        return cls(**{**base, **overrides})


def _arch(spec: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in spec.items() if k != "arch"}
    n = len(FASHION_MNIST_CLASSES)
    return arch_record(spec["arch"], n, 1, FMNIST_MEAN, FMNIST_STD, **kwargs)


def owner_setup(params: DemoParams, workdir: str) -> dict[str, Any]:
    """Shards (owner half, public half, held-out, test) and the data owner's two models."""
    n = params.num_per_half
    shards = {
        "owner": shard_idx_range(f"{workdir}/shards/owner-{n}", "train", 0, n).url,
        "public": shard_idx_range(f"{workdir}/shards/public-{n}", "train", 30_000, n).url,
        "heldout": shard_idx_range(f"{workdir}/shards/heldout", "test", 0, 2000).url,
        "test": shard_idx_range(f"{workdir}/shards/test", "test", 2000, None).url,
    }
    marker = train_on_shards(
        shards["owner"],
        _arch(MARKER_ARCH),
        TrainConfig(params.marker_epochs),
        test=shards["test"],
        registered_name="radtrace-demo-marker",
        seed=1,
    )
    reference = train_on_shards(
        shards["owner"],
        _arch(SUSPECT_ARCH),
        TrainConfig(epochs=params.epochs),
        test=shards["test"],
        registered_name="radtrace-demo-reference",
        seed=2,
    )
    return {**shards, "marker": marker, "reference": reference}


def release_for(params: DemoParams, setup: dict[str, Any], workdir: str, fraction: float):
    """A release of the public half with ``fraction`` of each class marked (fresh carriers)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return release_dataset(
        ReleaseParams(
            source=setup["public"],
            out=f"{workdir}/releases/fmnist-q{fraction:g}-{stamp}",
            fraction=fraction,
            marker=setup["marker"]["uri"],
            eps_255=params.eps_255,
            psnr_floor=params.psnr_floor,
            method=params.method,
            skip_hardest=params.skip_hardest,
            heldout=setup["heldout"],
            probes_per_class=params.probes_per_class,
            num_controls=params.num_controls,
            reference=setup["reference"]["uri"],
        )
    )


def train_suspect(params: DemoParams, setup: dict[str, Any], shards: str, name: str):
    """The suspect recipe (same seed for every suspect: only the data differs)."""
    return train_on_shards(
        shards,
        _arch(SUSPECT_ARCH),
        TrainConfig(epochs=params.epochs),
        test=setup["test"],
        registered_name=f"radtrace-demo-{name}",
        seed=3,
    )


def audit_row(
    params: DemoParams, name: str, model: dict[str, Any], fraction: float, release_run: str
) -> dict[str, Any]:
    """Audit one trained model against one release; one row of the demo table."""
    audit = audit_model(
        AuditParams(
            model=model["uri"],
            release_run=release_run,
            num_heldout=params.num_heldout,
            alpha=params.alpha,
        )
    )
    return {
        "name": name,
        "model": model["uri"],
        "marked_fraction": fraction,
        "accuracy": model["accuracy"],
        "log10_p_blackbox": audit["log10_p_blackbox"],
        "log10_p_whitebox": audit["log10_p_whitebox"],
        "log10_p": audit["log10_p"],
        "verdict": audit["verdict"],
        "audit_run": audit["audit_run"],
    }


@flow(name="demo")
def demo_flow(params: DemoParams, workdir: str) -> dict[str, Any]:
    """Run the demo under ``workdir``; returns the summary ``radtrace demo --json`` prints."""
    logger = get_run_logger()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 1)
        logger.info("%s done in %.1f s", name, timings[name])

    setup = owner_setup(params, workdir)
    lap("shards and owner models")
    release = release_for(params, setup, workdir, params.fraction)
    lap("release")
    suspect = train_suspect(params, setup, release["release"], "suspect")
    control = train_suspect(params, setup, setup["public"], "control")
    lap("suspects")
    run = release["mlflow_run_id"]
    rows = [
        audit_row(params, "suspect", suspect, params.fraction, run),
        audit_row(params, "control", control, 0.0, run),
    ]
    lap("audits")
    summary = {
        "release": release["release"],
        "release_run": run,
        "psnr_mean": release["psnr_mean"],
        "psnr_min": release["psnr_min"],
        "num_marked": release["num_marked"],
        "num_samples": release["num_samples"],
        "marker": setup["marker"]["uri"],
        "marker_accuracy": setup["marker"]["accuracy"],
        "reference": setup["reference"]["uri"],
        "reference_accuracy": setup["reference"]["accuracy"],
        "models": rows,
        "timings_s": timings,
        "params": params.model_dump(),
    }
    create_table_artifact(
        [{k: str(r[k]) for k in TABLE_KEYS} for r in rows],
        key="demo-results",
        description=f"radtrace demo: release {release['release']}",
    )
    return summary
