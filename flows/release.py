"""Flow ``release-dataset``: shard -> carriers -> mark every shard in parallel -> manifest ->
MLflow run -> Prefect artifact."""

from __future__ import annotations

import hashlib
import io
import sys
import time
from typing import Any

import numpy as np
from PIL import Image
from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed
from tqdm import tqdm

from flows.params import ReleaseParams
from radcore.mark import MarkConfig
from tasks import storage
from tasks.models import marker_spec_from_ref
from tasks.probes import prepare_probes, probes_url_for
from tasks.release import ReleaseConfig, ReleasePlan
from tasks.shards import dumps
from tasks.steps import (
    draw_and_store_carriers,
    finish_release,
    mark_shard,
    plan_shards,
    shard_dataset,
)
from tasks.tario import iter_tar_samples

__all__ = ["release_dataset"]

_PICTURE_COUNT = 8
_RANDOM_SELECTION_WARNING = (
    "marker %s does not classify these %d classes, so the marks go to a keyed random share of "
    "each class, where marks leave a weak trace (README, 'Uses'). For a strong trace, "
    "train a marker on images you do not release (`radtrace train OWNER_SHARDS --name "
    "my-marker`) and pass --marker models:/my-marker/1; --selection random silences this"
)


def _carriers_url(params: ReleaseParams) -> str:
    """``carriers_out``, else a private file under $RADTRACE_HOME named after the release URL,
    so that rerunning an interrupted release finds the carriers it started with."""
    if params.carriers_out:
        return params.carriers_out
    from tasks.tracking import data_dir

    tag = hashlib.sha256(params.out.encode()).hexdigest()[:16]
    return str(data_dir() / "carriers" / f"{tag}.safetensors")


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im)


def _examples(plan: ReleasePlan, manifest: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Up to 8 (original, marked) pairs from the first shards that hold marks."""
    originals, marked = [], []
    for entry in manifest["shards"]:
        if entry["marked"] == 0:
            continue
        src = {
            s["__key__"]: s["png"]
            for s in iter_tar_samples(storage.join(plan.index.url, entry["name"]))
        }
        for s in iter_tar_samples(storage.join(plan.out, entry["name"])):
            a, b = _pixels(src[s["__key__"]]), _pixels(s["png"])
            if a.shape == b.shape and not np.array_equal(a, b):
                originals.append(a)
                marked.append(b)
            if len(marked) == _PICTURE_COUNT:
                break
        if len(marked) == _PICTURE_COUNT:
            break
    shapes = {a.shape for a in originals}
    if len(shapes) > 1:  # pictures need one size: keep the most common
        common = max(shapes, key=[a.shape for a in originals].count)
        keep = [i for i, a in enumerate(originals) if a.shape == common]
        originals, marked = [originals[i] for i in keep], [marked[i] for i in keep]
    return np.stack(originals), np.stack(marked)


def _log_to_mlflow(
    params: ReleaseParams,
    plan: ReleasePlan,
    manifest: dict[str, Any],
    receipts: list,
    carriers_url: str,
    marker_spec: dict[str, Any],
    seconds: float,
    probes: dict[str, Any] | None,
) -> str:
    from tasks import tracking
    from tasks.figures import comparison_figure, histogram_figure

    tracking.configure_tracking()
    quality = manifest["quality"]
    figures = {}
    if manifest["num_marked"]:
        originals, marked = _examples(plan, manifest)
        figures["examples"] = comparison_figure(originals, marked)
        psnr = [v for r in receipts for v in r.psnr]
        figures["psnr_histogram"] = histogram_figure(
            psnr, title="PSNR of the marked images (stored 8-bit)", xlabel="PSNR (dB)"
        )
    marker_bytes = None
    if marker_spec["kind"] == "classifier":
        marker_bytes = storage.read_bytes(marker_spec["weights"])
    marker_info = {k: v for k, v in marker_spec.items() if k != "weights"}
    marker_info["marker_id"] = manifest["marker_id"]
    run_params = {
        "release": params.out,
        "source": params.source,
        "num_samples": manifest["num_samples"],
        "num_classes": len(manifest["classes"]),
        "classes": ",".join(manifest["classes"]),
        "fraction": params.fraction,
        "num_marked": manifest["num_marked"],
        "marker": params.marker,
        "marker_id": manifest["marker_id"],
        "eps_255": params.eps_255,
        "psnr_floor": params.psnr_floor,
        "method": params.method,
        "steps": params.steps,
        "selection": manifest["mark"]["selection"],
        "skip_hardest": manifest["mark"]["skip_hardest"],
        "batch_size": params.batch_size,
        "carrier_fingerprint": manifest["carrier_fingerprint"],
        "heldout": params.heldout or "",
        "reference": params.reference or "",
        "probes_per_class": params.probes_per_class if probes else 0,
        "probe_pool_size": probes["pool_size"] if probes else 0,
    }
    metrics = {
        "num_quarantined": manifest["num_quarantined"],
        "images_per_second": manifest["num_samples"] / max(seconds, 1e-9),
        "marked_per_second": manifest["num_marked"] / max(seconds, 1e-9),
    }
    for key in ("psnr_mean", "psnr_min", "ssim_mean", "shift_own_mean", "shift_other_mean"):
        if quality.get(key) is not None:
            metrics[key] = float(quality[key])
    return tracking.log_release_run(
        {**manifest, "release": params.out},
        carriers_bytes=storage.read_bytes(carriers_url),
        marker_bytes=marker_bytes,
        marker_info=marker_info,
        params=run_params,
        metrics=metrics,
        figures=figures,
        run_name=f"release {params.out.rsplit('/', 1)[-1]}",
        probes_bytes=storage.read_bytes(probes["url"]) if probes else None,
    )


@flow(name="release-dataset", log_prints=False)
def release_dataset(params: ReleaseParams) -> dict[str, Any]:
    """Publish a marked release of ``params.source`` at ``params.out``; returns a summary.

    Safe to rerun after a crash: finished shards are skipped, the rest redone, and the manifest
    is written once every shard is there. A rerun reuses the carriers of the first attempt
    when ``carriers_out`` points at them.
    """
    logger = get_run_logger()
    storage.check_source(params.source)
    storage.check_destination(params.out)
    marker_spec = marker_spec_from_ref(params.marker, params.marker_input_size)
    cfg = ReleaseConfig(
        fraction=params.fraction,
        mark=MarkConfig(
            eps=params.eps_255 / 255,
            steps=params.steps,
            psnr_floor=params.psnr_floor,
            method=params.method,
        ),
        batch_size=params.batch_size,
        selection=params.selection,
        skip_hardest=params.skip_hardest,
    )
    if storage.exists(storage.join(params.source, "index.json")):
        shards_url = params.source
    else:
        shards_url = params.shards or params.out + ".source-shards"
    index = shard_dataset(params.source, shards_url, params.kind, params.max_samples_per_shard)
    logger.info(
        "source: %d samples in %d shards, %d classes, %d quarantined",
        index.num_samples,
        len(index.shards),
        len(index.classes),
        index.num_quarantined,
    )
    carriers_url = _carriers_url(params)
    if not storage.exists(carriers_url):
        fingerprint = draw_and_store_carriers(len(index.classes), marker_spec, carriers_url)
        logger.info("drew carriers %s… (stored privately)", fingerprint[:16])
    plan = plan_shards(shards_url, params.out, carriers_url, marker_spec, cfg)
    if params.selection == "auto" and plan.cfg.selection == "random":
        logger.warning(_RANDOM_SELECTION_WARNING, plan.marker_id, len(index.classes))
    start = time.perf_counter()
    shard_tasks = plan.tasks()
    futures = mark_shard.map(
        shard_tasks, unmapped(carriers_url), unmapped(marker_spec), list(range(len(shard_tasks)))
    )
    done: dict[str, Any] = {}
    with tqdm(
        total=index.num_samples, unit="img", desc="marking shards", disable=not sys.stderr.isatty()
    ) as bar:
        for future in as_completed(futures):
            receipt = future.result()
            done[receipt.name] = receipt
            bar.update(receipt.count)
    receipts = [done[t.name] for t in shard_tasks]
    seconds = time.perf_counter() - start
    manifest = finish_release(plan, receipts)
    probes = None
    if params.heldout and params.probes_per_class:
        probes = prepare_probes(
            params.heldout,
            carriers_url,
            marker_spec,
            cfg.mark,
            params.probes_per_class,
            params.num_controls,
            probes_url_for(carriers_url),
            params.batch_size,
        )
        logger.info(
            "black-box probes: %d images x %d carriers", probes["num_probes"], probes["pool_size"]
        )
    run_id = _log_to_mlflow(
        params, plan, manifest, receipts, carriers_url, marker_spec, seconds, probes
    )
    manifest["mlflow_run_id"] = run_id
    storage.write_bytes_atomic(storage.join(params.out, "manifest.json"), dumps(manifest))
    quality = manifest["quality"]
    summary = {
        "release": params.out,
        "mlflow_run_id": run_id,
        "num_samples": manifest["num_samples"],
        "num_marked": manifest["num_marked"],
        "num_quarantined": manifest["num_quarantined"],
        "psnr_mean": quality.get("psnr_mean"),
        "psnr_min": quality.get("psnr_min"),
        "carrier_fingerprint": manifest["carrier_fingerprint"],
        "carriers_file": carriers_url,
        "seconds_marking": round(seconds, 3),
    }
    create_table_artifact(
        [{"field": k, "value": str(v)} for k, v in summary.items() if k != "carriers_file"],
        key="release-summary",
        description=f"radtrace release {params.out}",
    )
    return summary
