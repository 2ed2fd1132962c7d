"""Flow ``experiment``: the paper-style table of detection against the fraction marked, plus the
calibration study of both tests on models that never saw the carriers.

For every fraction: a release of the public half with fresh carriers, a suspect trained on it,
its audit. One control (trained on the clean public half) is audited against every release
and calibrated by rotating carriers of the probe pool into the "true" role. Results go to
MLflow (experiment ``radtrace-experiments``) and to ``bench/results/fractions.json``.
"""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows.demo import DemoParams, audit_row, owner_setup, release_for, train_suspect
from tasks.calibration import calibrate_model

__all__ = ["ExperimentParams", "experiment_flow"]


class ExperimentParams(BaseModel):
    """Fractions to sweep, the demo sizes, and the number of calibration trials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fractions: tuple[float, ...] = Field((0.02, 0.05, 0.1, 0.2), min_length=1, max_length=20)
    sizes: DemoParams = Field(default_factory=DemoParams)
    calibration_trials: int = Field(200, ge=0, le=100_000)
    results: str = Field("bench/results/fractions.json", description="Where the JSON goes.")


@flow(name="experiment")
def experiment_flow(
    params: ExperimentParams, workdir: str = ".radtrace/experiment/full"
) -> dict[str, Any]:
    """Run the sweep under ``workdir``; returns (and writes) the table and calibration."""
    from tasks import storage, tracking

    logger = get_run_logger()
    bad = [f for f in params.fractions if not 0 < f <= 1]
    if bad:
        raise ValueError(f"fractions must lie in (0, 1]; got {bad}")
    sizes = params.sizes
    setup = owner_setup(sizes, workdir)
    control = train_suspect(sizes, setup, setup["public"], "control")
    rows, calibration = [], []
    for fraction in params.fractions:
        release = release_for(sizes, setup, workdir, fraction)
        run = release["mlflow_run_id"]
        suspect = train_suspect(sizes, setup, release["release"], f"suspect-q{fraction:g}")
        for name, model, q in (("suspect", suspect, fraction), ("control", control, 0.0)):
            row = audit_row(sizes, name, model, q, run)
            row.update(
                release_fraction=fraction,
                psnr_mean=release["psnr_mean"],
                psnr_min=release["psnr_min"],
            )
            rows.append(row)
            logger.info(
                "q=%g %s: black-box %s, white-box %.2f",
                fraction,
                name,
                row["log10_p_blackbox"],
                row["log10_p_whitebox"],
            )
        if params.calibration_trials:
            for name, model, exclude in (("control", control, False), ("suspect", suspect, True)):
                cal = calibrate_model(
                    model["uri"],
                    run,
                    setup["reference"]["uri"],
                    setup["heldout"],
                    params.calibration_trials,
                    exclude_true=exclude,
                    num_heldout=sizes.num_heldout,
                )
                calibration.append({"release_fraction": fraction, "name": name, **cal})
    result = {
        "rows": rows,
        "calibration": calibration,
        "marker_accuracy": setup["marker"]["accuracy"],
        "reference_accuracy": setup["reference"]["accuracy"],
        "sizes": sizes.model_dump(),
    }
    data = (json.dumps(result, indent=2, default=str) + "\n").encode()
    storage.write_bytes_atomic(params.results, data)  # a crash never leaves half a table
    tracking.log_experiment_run(
        "fraction sweep",
        params={
            "fractions": ",".join(f"{f:g}" for f in params.fractions),
            "calibration_trials": params.calibration_trials,
            **sizes.model_dump(),
        },
        metrics={
            f"log10_p_blackbox_q{r['release_fraction']:g}": r["log10_p_blackbox"]
            for r in rows
            if r["name"] == "suspect"
        },
        files={"fractions.json": data},
    )
    create_table_artifact(
        [
            {
                k: str(r[k])
                for k in (
                    "release_fraction",
                    "name",
                    "accuracy",
                    "log10_p_blackbox",
                    "log10_p_whitebox",
                    "verdict",
                    "psnr_mean",
                )
            }
            for r in rows
        ],
        key="fraction-sweep",
        description="radtrace: detection against the fraction marked",
    )
    return result
