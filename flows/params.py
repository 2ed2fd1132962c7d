"""Flow parameters: one pydantic model per flow, with limits, so bad input fails before work.

Prefect validates these when a flow run starts (from the CLI, a deployment or the UI), before
any task or worker is taken.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AuditParams", "ReleaseParams", "ScheduledAuditParams", "TrainParams"]


def _url(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"{what} is empty: give a path, file://... or s3://bucket/prefix")
    return value.rstrip("/") if value not in ("/",) else value


class ReleaseParams(BaseModel):
    """Mark a fraction of a dataset and publish the release (flow ``release-dataset``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(
        description="Dataset: an image folder (one sub-folder per class), WebDataset tars, "
        "IDX files, or an existing shard folder (with index.json); a path or s3:// URL."
    )
    out: str = Field(description="Release folder to write (path or s3:// URL).")
    shards: str | None = Field(
        None,
        description="Where the clean source shards go (default: <out>.source-shards); reused "
        "when it already holds shards of this source.",
    )
    kind: Literal["auto", "folder", "tars", "idx"] = "auto"
    fraction: float = Field(0.1, ge=0.0, le=1.0, description="Share of each class marked.")
    marker: str = Field(
        "efficientnet-lite0",
        description="Marking network: a registry name, a folder with model.safetensors + "
        "arch.json, or an MLflow model URI (models:/name@alias).",
    )
    marker_input_size: int | None = Field(None, ge=8, le=1024)
    method: Literal["pattern", "feature"] = Field(
        "pattern",
        description="How images are marked: 'pattern' (each class's secret low-frequency pixel "
        "pattern at the PSNR floor: the stronger trace on a from-scratch model) or 'feature' "
        "(the paper's marks along the carrier in the marker's feature space, within eps).",
    )
    eps_255: float = Field(
        4.0, gt=0.0, le=32.0, description="L-inf budget in 8-bit levels (feature marks)."
    )
    steps: int = Field(12, ge=1, le=1000, description="Optimisation steps (feature marks).")
    psnr_floor: float | None = Field(
        40.0, ge=20.0, le=80.0, description="Minimum PSNR (dB); pattern marks are set to it."
    )
    batch_size: int = Field(250, ge=1, le=8192)
    selection: Literal["auto", "hard", "random"] = Field(
        "auto",
        description="Which images of a class get marked: 'hard' (those the marker's classifier "
        "finds hardest: stronger traces), 'random', or 'auto' (hard when the marker "
        "classifies the dataset's classes).",
    )
    skip_hardest: float = Field(
        0.02,  # tasks.release.SKIP_HARDEST (kept free of torch here; a test ties the two)
        ge=0.0,
        lt=1.0,
        description="With hard selection: the share of each class at the very top of the "
        "ranking that is passed over (often ambiguous or mislabelled images). Marking from the "
        "very top (0) leaves a stronger trace but cost the suspect 0.5-1.2 points of accuracy "
        "in the demo's measurements; 0.02 at most 0.8 (README).",
    )
    max_samples_per_shard: int = Field(1000, ge=1, le=1_000_000)
    carriers_out: str | None = Field(
        None,
        description="Private URL for the carriers file (default: under $RADTRACE_HOME/"
        "carriers/). Never publish it next to the release.",
    )
    heldout: str | None = Field(
        None,
        description="Shard folder of vanilla held-out images of the same classes, recorded "
        "with the release for later audits; the black-box probes are drawn from it.",
    )
    probes_per_class: int = Field(
        50, ge=0, le=10_000, description="Black-box probes per class (0: no black-box test)."
    )
    num_controls: int = Field(
        100,
        ge=5,
        le=10_000,
        description="Feature marks: control carriers marked on the probes beside the true "
        "(more: a sharper test). Pattern marks use the response test, which needs none.",
    )
    reference: str | None = Field(
        None,
        description="A clean reference model the data owner trained (never on the release), "
        "recorded for black-box audits: models:/name@alias or a model folder.",
    )

    @field_validator("source", "out")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        return _url(v, "URL")


class AuditParams(BaseModel):
    """Audit one model against one release (flow ``audit-model``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        description="models:/name@alias, models:/name/<version>, a registered model name, "
        "runs:/<id>/model, or a checkpoint (folder with model.safetensors + arch.json, or a "
        ".pt state dict with --arch)."
    )
    release_run: str | None = Field(
        None, description="MLflow run id of the release (default: the newest release)."
    )
    heldout: str | None = Field(
        None, description="Held-out vanilla shard folder (default: the one the release recorded)."
    )
    num_heldout: int = Field(2000, ge=20, le=1_000_000)
    arch: str | None = Field(None, description="arch.json for a bare .pt checkpoint.")
    trust_pickle: bool = Field(
        False, description="Allow loading a pickled MLflow model (runs arbitrary code)."
    )
    alpha: float = Field(1e-3, gt=0.0, lt=1.0, description="Verdict threshold on the p-value.")
    report: str | None = Field(None, description="Write an HTML evidence report to this path.")
    reference: str | None = Field(
        None, description="Clean reference model for the black-box test (default: the release's)."
    )


class ScheduledAuditParams(BaseModel):
    """Audit every registered model against every release (flow ``audit-registered-models``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name_filter: str | None = Field(None, description="Only models whose name contains this.")
    tag_filter: dict[str, str] = Field(default_factory=dict)
    force: bool = Field(False, description="Audit pairs that were audited before, again.")
    num_heldout: int = Field(2000, ge=20, le=1_000_000)
    trust_pickle: bool = False
    alpha: float = Field(1e-3, gt=0.0, lt=1.0)


class TrainParams(BaseModel):
    """Train and register one classifier (flow ``train-model``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shards: str = Field(
        description="Shard folder of labelled images (`radtrace shard`); for a marker, the data "
        "owner's own images, never the release."
    )
    name: str = Field(description="Registered model name in MLflow (a new version each run).")
    arch: Literal["small_resnet", "vgg_small"] = Field(
        "small_resnet",
        description="small_resnet (the demo's marker) or vgg_small (the demo's suspects).",
    )
    epochs: int = Field(8, ge=1, le=200)
    batch_size: int = Field(128, ge=1, le=8192)
    test: str | None = Field(None, description="Shard folder of test images: accuracy logged.")
    seed: int = Field(0, ge=0)

    @field_validator("shards")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        return _url(v, "shards")

    @field_validator("name")
    @classmethod
    def _has_name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name is empty: give the registered model name")
        return v.strip()
