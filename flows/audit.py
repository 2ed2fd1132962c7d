"""Flows ``audit-model`` (one model vs one release) and ``audit-registered-models`` (the
scheduled audit: every registered model vs every release recorded in MLflow)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from flows.params import AuditParams, ScheduledAuditParams
from radcore.blackbox import BlackboxDetection
from radcore.carriers import Carriers
from radcore.probes import ProbeSet
from tasks.audit import blackbox_audit, combined_verdict, load_suspect, whitebox_audit
from tasks.datasets import load_images
from tasks.models import marker_from_spec

__all__ = ["audit_model", "audit_one", "audit_registered_models"]


def _command(model: str, release_run: str, heldout: str, num: int, alpha: float) -> str:
    parts = ["radtrace", "audit", model, "--release-run", release_run, "--heldout", heldout]
    parts += ["--num-heldout", str(num), "--alpha", str(alpha)]
    return shlex.join(parts)


def _blackbox(
    release: Any, suspect: Any, reference: str | None, trust_pickle: bool
) -> tuple[BlackboxDetection | None, str | None]:
    """The black-box test when the release recorded a probe set; the clean reference is the
    audit's ``reference``, else the one the release recorded, else none."""
    from tasks import tracking

    data = tracking.fetch_release_probes(release.run_id)
    if data is None:
        return None, None
    probes = ProbeSet.from_bytes(data)
    reference = reference or tracking.release_params(release.run_id).get("reference") or None
    ref_model = load_suspect(reference, trust_pickle=trust_pickle) if reference else None
    return blackbox_audit(suspect, probes, ref_model), reference


def _blackbox_evidence(bb: BlackboxDetection | None, reference: str | None) -> dict[str, Any]:
    if bb is None:
        return {"ran": False, "why": "the release recorded no black-box probe set"}
    return {
        "ran": True,
        "name": "black-box: per-class response of the suspect to probes marked with the true "
        "carrier vs control carriers, regressed on a clean reference; Stouffer over classes; "
        "p by permuting carrier roles (radcore.blackbox)",
        "statistic": bb.statistic,
        "reference": reference,
        "num_probes": bb.num_probes,
        "pool_size": bb.num_carriers,
        "z": bb.z,
        "z_per_class": list(bb.z_per_class),
        "permutations": bb.permutations,
        "null_mean": bb.null_mean,
        "null_sd": bb.null_sd,
        "log10_p": bb.log10_p,
        "log10_p_permutation": bb.log10_p_permutation,
        "tail": bb.tail,
    }


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
    bb, reference = _blackbox(release, suspect, reference, trust_pickle)
    tests = [det.log10_p] + ([bb.log10_p] if bb is not None else [])
    decision, log10_p_adjusted = combined_verdict(tests, alpha)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    ref = tracking.ModelRef(suspect.name, suspect.version, suspect.run_id, model)
    evidence = {
        "model": {
            "ref": model,
            "name": suspect.name,
            "version": suspect.version,
            "weights_sha256": suspect.weights_sha256,
            "arch": suspect.arch,
        },
        "release": {
            "url": release.release_url,
            "mlflow_run_id": release.run_id,
            "carrier_fingerprint": release.carrier_fingerprint,
            "marker_id": release.marker_id,
        },
        "test": {
            "name": "white-box (Sablayrolles et al. 2020, sec. 4.2): least-squares alignment, "
            "cosine of mapped classifier rows with carriers, Beta null, Fisher combination",
            "heldout": heldout,
            "num_images": det.num_images,
            "dim": det.dim,
            "cosines": list(det.cosines),
            "log10_p_per_class": list(det.log10_p_per_class),
            "log10_p": det.log10_p,
            "empirical_null_draws": len(result.null_log10_p),
            "empirical_null_share_at_or_below": result.null_p_below,
        },
        "blackbox": _blackbox_evidence(bb, reference),
        "decision_rule": "detected when min(p) x (number of tests) <= alpha (Bonferroni)",
        "log10_p_adjusted": log10_p_adjusted,
        "alpha": alpha,
        "verdict": decision,
        "time_utc": now,
        "reproduce": _command(model, release.run_id, heldout, num_heldout, alpha),
    }
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
            title="Black-box Stouffer z: true carriers vs permuted carrier roles",
            xlabel="z",
        )
    metrics = {
        "log10_p_whitebox": det.log10_p,
        "num_heldout": det.num_images,
        "log10_p_adjusted": log10_p_adjusted,
    }
    if bb is not None:
        metrics.update(
            log10_p_blackbox=bb.log10_p,
            z_blackbox=bb.z,
            log10_p_blackbox_permutation=bb.log10_p_permutation,
        )
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
