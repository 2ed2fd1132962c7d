"""Flows ``audit-model`` (one model vs one release) and ``audit-registered-models`` (the
scheduled audit: every registered model vs every release recorded in MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from flows.params import AuditParams, ScheduledAuditParams
from radcore.carriers import Carriers
from tasks.audit import audit_evidence, load_suspect, release_blackbox, whitebox_audit
from tasks.datasets import load_images
from tasks.models import marker_from_spec

__all__ = ["audit_model", "audit_one", "audit_registered_models"]


@task(name="audit", cache_policy=NONE, persist_result=False)
def audit_one(
    model: str,
    release_run: str | None = None,
    heldout: str | None = None,
    num_heldout: int = 2000,
    arch: str | None = None,
    trust_pickle: bool = False,
    alpha: float = 1e-3,
    reference: str | None = None,
    report: str | None = None,
) -> dict[str, Any]:
    """Everything for one (model, release) pair, inside one task: the carriers are read and
    used here and never leave it. Returns a summary without secrets."""
    from tasks import tracking
    from tasks.figures import null_figure

    tracking.configure_tracking()
    releases = tracking.list_releases()
    if release_run is None:
        if not releases:
            raise LookupError("no release is recorded in MLflow: run `radtrace release` first")
        release = releases[0]
    else:
        release = next((r for r in releases if r.run_id == release_run), None)
        if release is None:
            raise LookupError(
                f"release run {release_run} is not in experiment {tracking.RELEASES}: "
                "pick a run of that experiment in MLflow (its run id), or omit --release-run "
                "for the newest release"
            )
    heldout = heldout or tracking.release_params(release.run_id).get("heldout") or None
    if not heldout:
        raise ValueError(
            f"release {release.release_url} recorded no held-out set: pass --heldout with a "
            "shard folder of vanilla images of the same classes"
        )
    carriers_bytes, marker_bytes, marker_info = tracking.fetch_release_secrets(release.run_id)
    carriers = Carriers.from_bytes(carriers_bytes)
    marker = marker_from_spec(marker_info, weights=marker_bytes)
    suspect = load_suspect(model, arch=arch, trust_pickle=trust_pickle)
    images, _ = load_images(heldout, num_heldout)
    result = whitebox_audit(suspect, marker, carriers, images)
    det = result.detection
    bb, reference = release_blackbox(release.run_id, suspect, reference, trust_pickle)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    ref = tracking.ModelRef(suspect.name, suspect.version, suspect.run_id, model)
    evidence = audit_evidence(
        model, suspect, release, heldout, num_heldout, result, bb, reference, alpha, now
    )
    decision, log10_p_adjusted = evidence["verdict"], evidence["log10_p_adjusted"]
    figures = {
        "whitebox_null": null_figure(
            result.null_log10_p,
            det.log10_p,
            title="White-box statistic: observed vs fresh carrier sets",
            xlabel="log10 p",
        )
    }
    if bb is not None:
        figures["blackbox_null"] = null_figure(
            bb.null_z,
            bb.z,
            title=(
                "Black-box z: the key vs its exact null"
                if bb.statistic == "response"
                else "Black-box Stouffer z: true carriers vs permuted carrier roles"
            ),
            xlabel="z",
        )
    metrics = {
        "log10_p_whitebox": det.log10_p,
        "num_heldout": det.num_images,
        "log10_p_adjusted": log10_p_adjusted,
    }
    if bb is not None:
        metrics.update(log10_p_blackbox=bb.log10_p, z_blackbox=bb.z)
        if bb.statistic != "response":  # the response test's p is exact: no separate count
            metrics["log10_p_blackbox_permutation"] = bb.log10_p_permutation
    from tasks.report import evidence_html

    page = evidence_html(evidence, figures)
    if report:
        from tasks import storage

        storage.write_bytes_atomic(report, page.encode())
    run_id = tracking.log_audit_run(
        model=ref,
        release=release,
        metrics=metrics,
        params={
            "model": model,
            "heldout": heldout,
            "alpha": alpha,
            "test": "whitebox+blackbox" if bb is not None else "whitebox",
            "reference": reference or "",
        },
        evidence=evidence,
        figures=figures,
        report_html=page,
    )
    if ref.name is not None and ref.version is not None:
        tracking.tag_model_version(
            ref,
            {
                "radtrace.release": release.release_url,
                "radtrace.log10_p": f"{log10_p_adjusted:.3f}",
                "radtrace.verdict": decision,
                "radtrace.audited_at": now,
                f"radtrace.audit.{release.run_id}": f"{decision}; log10 p {log10_p_adjusted:.3f}",
            },
        )
    if decision == "detected":
        emit_event(
            event="radtrace.audit.detected",
            resource={"prefect.resource.id": f"radtrace.model.{ref.name or model}"},
            payload={"model": model, "release": release.release_url, "log10_p": log10_p_adjusted},
        )
    return {
        "model": model,
        "model_name": ref.name,
        "model_version": ref.version,
        "release": release.release_url,
        "release_run": release.run_id,
        "log10_p_whitebox": det.log10_p,
        "log10_p_blackbox": bb.log10_p if bb is not None else None,
        "log10_p": log10_p_adjusted,
        "verdict": decision,
        "audit_run": run_id,
    }


@flow(name="audit-model")
def audit_model(params: AuditParams) -> dict[str, Any]:
    """Audit one model against one release; logs a run in ``radtrace-audits``."""
    summary = audit_one(
        params.model,
        params.release_run,
        params.heldout,
        params.num_heldout,
        params.arch,
        params.trust_pickle,
        params.alpha,
        params.reference,
        params.report,
    )
    create_table_artifact([summary], key="audit-verdict", description="radtrace audit")
    return summary


@flow(name="audit-registered-models")
def audit_registered_models(params: ScheduledAuditParams) -> dict[str, Any]:
    """Every registered model (filtered) x every recorded release, skipping pairs already
    audited unless ``force``. A failing model is reported and does not stop the others."""
    from tasks import tracking

    logger = get_run_logger()
    tracking.configure_tracking()
    models = tracking.list_model_versions(params.name_filter, params.tag_filter or None)
    releases = tracking.list_releases()
    pairs = [
        (m, r)
        for m in models
        for r in releases
        if params.force or not tracking.audited(m, r.run_id)
    ]
    logger.info(
        "%d models x %d releases: %d pairs to audit", len(models), len(releases), len(pairs)
    )
    futures = [
        audit_one.submit(
            f"models:/{m.name}/{m.version}",
            r.run_id,
            None,
            params.num_heldout,
            None,
            params.trust_pickle,
            params.alpha,
        )
        for m, r in pairs
    ]
    done, failed = [], []
    for (m, r), fut in zip(pairs, futures, strict=True):
        try:
            done.append(fut.result())
        except Exception as exc:  # report it and go on with the others
            failed.append(
                {"model": f"{m.name}/{m.version}", "release": r.release_url, "error": str(exc)}
            )
            logger.error("audit of %s v%s failed: %s", m.name, m.version, exc)
    rows = [
        {
            k: str(s[k])
            for k in ("model", "release", "log10_p_whitebox", "log10_p_blackbox", "verdict")
        }
        for s in done
    ]
    rows += [{"model": f["model"], "release": f["release"], "verdict": "FAILED"} for f in failed]
    if rows:
        create_table_artifact(rows, key="scheduled-audit", description="radtrace scheduled audit")
    return {"audited": done, "failed": failed, "skipped": len(models) * len(releases) - len(pairs)}
