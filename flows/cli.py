"""The `radtrace` command line. Each command calls one flow (or, before the pipeline lands,
one example); nothing here holds logic of its own."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    help=(
        "radtrace marks image datasets so that a model trained on them carries a statistical "
        "trace, and proves it later with a p-value (Sablayrolles et al., ICML 2020)."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _fail(exc: BaseException, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code)


def _emit(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(data, default=str))
    else:
        for line in lines:
            typer.echo(line)


def _stack_module():
    """infra/stack.py, loaded by path (the local stack script ships beside the code)."""
    path = Path(__file__).resolve().parents[1] / "infra" / "stack.py"
    spec = importlib.util.spec_from_file_location("radtrace_infra_stack", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path} is missing: the local stack needs the repository")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _home() -> Path:
    from tasks.tracking import data_dir

    return data_dir()


def _adopt_stack() -> None:
    """Use a running local stack (radtrace stack up) for anything the user did not configure."""
    state = _home() / "stack" / "state.json"
    if not state.exists():
        return
    stack = _stack_module()
    if not stack.status(_home()).get("healthy"):
        typer.echo(
            f"warning: {state} names a local stack that is not healthy; ignoring it "
            "(`radtrace stack status`, or `radtrace stack down` to forget it)",
            err=True,
        )
        return
    for key, value in stack.client_env(_home()).items():
        os.environ.setdefault(key, value)


@app.callback()
def _root() -> None:
    """Global set-up shared by every command."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


RunnerOpt = typer.Option("threads", help="Task runner: threads (one machine) or dask.")
WorkersOpt = typer.Option(2, min=1, max=512, help="Threads, or Dask workers for a LocalCluster.")
DaskOpt = typer.Option(None, help="Existing Dask scheduler, e.g. tcp://10.0.0.5:8786.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object (for machines).")
MethodOpt = typer.Option(
    "pattern",
    help="How images are marked: pattern (each class's secret low-frequency pixel pattern at "
    "the PSNR floor; the stronger trace on a model trained from scratch) or feature (the "
    "paper's marks along the carrier in the marker's feature space, within --eps).",
)


@app.command()
def shard(
    source: str = typer.Argument(
        ...,
        help="Image folder (one sub-folder per class), WebDataset "
        "tars, or IDX files; a path or s3:// URL.",
    ),
    out: str = typer.Argument(..., help="Folder for the shards (path or s3:// URL)."),
    kind: str = typer.Option("auto", help="auto, folder, tars or idx."),
    max_samples: int = typer.Option(1000, min=1, help="Samples per shard at most."),
    as_json: bool = JsonOpt,
) -> None:
    """Stream a dataset into WebDataset shards; bad files go to quarantine.jsonl."""
    _adopt_stack()
    from flows.data import shard_flow

    try:
        result = shard_flow(source, out, kind, max_samples)
    except (OSError, ValueError, PermissionError) as exc:
        raise _fail(exc) from exc
    _emit(
        result,
        as_json,
        [
            f"{result['num_samples']} samples in {result['num_shards']} shards at {out}",
            f"classes: {', '.join(result['classes'])}",
            f"quarantined: {result['num_quarantined']} (see {out}/quarantine.jsonl)",
        ],
    )


@app.command()
def train(
    shards: str = typer.Argument(
        ...,
        help="Shard folder of labelled images (`radtrace shard`); for a marker or a "
        "reference, your own images, never the release.",
    ),
    name: str = typer.Option(..., "--name", help="Registered model name in MLflow."),
    arch: str = typer.Option(
        "small_resnet", help="small_resnet (the demo's marker) or vgg_small (its suspects)."
    ),
    epochs: int = typer.Option(8, min=1, max=200, help="Training epochs."),
    test: str | None = typer.Option(
        None, help="Shard folder of test images: their accuracy is logged."
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the initialisation and the batch order."),
    as_json: bool = JsonOpt,
) -> None:
    """Train a classifier on shards and register it in MLflow (e.g. your marker).

    Pad-and-crop + flip, SGD with Nesterov momentum, one-cycle schedule. Give the result to
    `radtrace release --marker models:/NAME/VERSION`.
    """
    _adopt_stack()
    from pydantic import ValidationError

    from flows.params import TrainParams
    from flows.train import train_model

    try:
        params = TrainParams(
            shards=shards, name=name, arch=arch, epochs=epochs, test=test, seed=seed
        )
        result = train_model(params)
    except ValidationError as exc:
        raise _fail(exc) from exc
    except (OSError, ValueError, PermissionError, RuntimeError) as exc:
        raise _fail(exc) from exc
    acc = "not measured (no --test)" if result["accuracy"] is None else f"{result['accuracy']:.4f}"
    _emit(
        result,
        as_json,
        [
            f"registered {result['uri']} ({params.arch}, {len(result['classes'])} classes, "
            f"{params.epochs} epochs); test accuracy {acc}",
            f"MLflow run {result['run_id']}",
            f"mark with it: radtrace release SOURCE OUT --marker {result['uri']}",
        ],
    )


@app.command()
def release(
    source: str = typer.Argument(..., help="Dataset or shard folder (path or s3:// URL)."),
    out: str = typer.Argument(..., help="Release folder to write (path or s3:// URL)."),
    fraction: float = typer.Option(0.1, min=0.0, max=1.0, help="Share of each class marked."),
    marker: str = typer.Option(
        "efficientnet-lite0",
        help="Registry name, model folder, or MLflow model URI (models:/name@alias). Pattern "
        "marks want a classifier of these classes trained on your own images (`radtrace "
        "train`): it picks the hardest images to mark. An ImageNet marker cannot, and the "
        "release then marks a random selection (a weaker trace).",
    ),
    marker_input_size: int | None = typer.Option(None, help="Resize for the marker (px)."),
    method: str = MethodOpt,
    eps: float = typer.Option(4.0, help="L-inf budget of feature marks in 8-bit levels."),
    steps: int = typer.Option(12, min=1, help="Optimisation steps of feature marks."),
    psnr_floor: float = typer.Option(
        40.0, help="Minimum PSNR (dB) of each stored image; pattern marks are set to it."
    ),
    batch_size: int = typer.Option(250, min=1, help="Images per marking batch."),
    selection: str = typer.Option(
        "auto",
        help="Which images of a class to mark: hard (those the marker's classifier finds "
        "hardest: stronger traces), random, or auto (hard when the marker is a classifier "
        "of these classes).",
    ),
    skip_hardest: float | None = typer.Option(
        None,
        min=0.0,
        max=0.99,
        help="With hard selection: share of each class at the very top of the ranking passed "
        "over (often ambiguous or mislabelled images); default 0.02. 0 leaves a stronger trace "
        "but cost a suspect 0.5-1.2 points of accuracy in the demo; 0.02 at most 0.8 (README).",
    ),
    heldout: str | None = typer.Option(
        None, help="Shard folder of vanilla held-out images recorded for later audits."
    ),
    probes_per_class: int = typer.Option(
        50, min=0, help="Black-box probes per class, drawn from --heldout (0: none)."
    ),
    num_controls: int = typer.Option(
        100,
        min=5,
        help="Feature marks: control carriers marked on the probes (more: a sharper test). "
        "Pattern marks use the response test, which needs none.",
    ),
    reference: str | None = typer.Option(
        None, help="Clean reference model (models:/... or folder) recorded for black-box audits."
    ),
    carriers_out: str | None = typer.Option(None, help="Private URL for the carriers file."),
    shards: str | None = typer.Option(
        None, help="Where source shards go (default <out>.source-shards)."
    ),
    runner: str = RunnerOpt,
    workers: int = WorkersOpt,
    dask_address: str | None = DaskOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Mark a fraction of a dataset and publish the release (manifest last), logged to MLflow.

    Rerunning the same command after a crash finishes the release without redoing finished
    shards: the carriers of the first attempt are found again (same --carriers-out, or the
    default file named after OUT under .radtrace/carriers/).
    """
    _adopt_stack()
    from pydantic import ValidationError

    from flows.params import ReleaseParams
    from flows.release import release_dataset
    from flows.runners import task_runner

    try:
        params = ReleaseParams(
            source=source,
            out=out,
            fraction=fraction,
            marker=marker,
            marker_input_size=marker_input_size,
            method=method,
            eps_255=eps,
            steps=steps,
            psnr_floor=psnr_floor,
            batch_size=batch_size,
            selection=selection,
            **({} if skip_hardest is None else {"skip_hardest": skip_hardest}),
            heldout=heldout,
            probes_per_class=probes_per_class,
            num_controls=num_controls,
            reference=reference,
            carriers_out=carriers_out,
            shards=shards,
        )
        flow = release_dataset.with_options(
            task_runner=task_runner(runner, workers, dask_address)  # type: ignore[arg-type]
        )
        result = flow(params)
    except ValidationError as exc:
        raise _fail(exc) from exc
    except (OSError, ValueError, PermissionError, RuntimeError, LookupError) as exc:
        raise _fail(exc) from exc
    _emit(
        result,
        as_json,
        [
            f"released {result['num_samples']} samples ({result['num_marked']} marked) at {out}",
            f"PSNR mean {result['psnr_mean']} dB, min {result['psnr_min']} dB; "
            f"quarantined {result['num_quarantined']}",
            f"carriers {result['carrier_fingerprint'][:16]}… stored privately at "
            f"{result['carriers_file']} (keep it secret; it is also in the MLflow run)",
            f"MLflow run {result['mlflow_run_id']} in experiment radtrace-releases",
        ],
    )


@app.command()
def verify(
    release_url: str = typer.Argument(..., metavar="RELEASE", help="Release folder or URL."),
    source: str | None = typer.Option(
        None, help="Its source shard folder: also compare pixels and count the marked samples."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check a release against its manifest; exit code 1 names each problem."""
    _adopt_stack()
    from flows.data import verify_flow

    try:
        report = verify_flow(release_url, source)
    except (OSError, ValueError, PermissionError) as exc:
        raise _fail(exc) from exc
    lines = [
        f"{'OK' if report['ok'] else 'FAILED'}: {release_url}: {report['num_samples']} "
        f"samples in {report['num_shards']} shards, {report['num_marked_declared']} marked"
    ]
    lines += [f"  - {p}" for p in report["problems"]]
    _emit(report, as_json, lines)
    if not report["ok"]:
        raise typer.Exit(1)


@app.command()
def audit(
    model: str = typer.Argument(
        ...,
        help="models:/name@alias, a registered name, runs:/<id>/"
        "model, a model folder, or a .pt state dict (with --arch).",
    ),
    release_run: str | None = typer.Option(
        None, help="MLflow run id of the release (default: the newest)."
    ),
    heldout: str | None = typer.Option(
        None, help="Held-out vanilla shard folder (default: the one the release recorded)."
    ),
    num_heldout: int = typer.Option(2000, min=20, help="Held-out images used."),
    arch: str | None = typer.Option(None, help="arch.json for a bare .pt checkpoint."),
    trust_pickle: bool = typer.Option(
        False,
        "--trust-pickle",
        help="Allow a pickled MLflow model (runs code from the file: trusted sources only).",
    ),
    alpha: float = typer.Option(1e-3, help="Verdict threshold on the p-value."),
    reference: str | None = typer.Option(
        None, help="Clean reference model for the black-box test (default: the release's)."
    ),
    report: str | None = typer.Option(
        None, help="Also write a self-contained HTML evidence report to this path."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Was MODEL trained on a release? Black-box and white-box tests, logged to MLflow.

    The black-box test runs when the release recorded a probe set; the audit is a run in the
    MLflow experiment radtrace-audits (evidence, pictures, report) and tags the model version.
    """
    _adopt_stack()
    from pydantic import ValidationError

    from flows.audit import audit_model
    from flows.params import AuditParams

    try:
        result = audit_model(
            AuditParams(
                model=model,
                release_run=release_run,
                heldout=heldout,
                num_heldout=num_heldout,
                arch=arch,
                trust_pickle=trust_pickle,
                alpha=alpha,
                reference=reference,
                report=report,
            )
        )
    except ValidationError as exc:
        raise _fail(exc) from exc
    except (OSError, ValueError, PermissionError, LookupError) as exc:
        raise _fail(exc) from exc
    _emit(
        result,
        as_json,
        [
            f"{model} vs {result['release']}: black-box log10 p = "
            + (f"{bb:.2f}" if (bb := result["log10_p_blackbox"]) is not None else "n/a")
            + f", white-box log10 p = {result['log10_p_whitebox']:.2f}"
            f" -> {result['verdict'].upper()} (alpha {alpha:g}, Bonferroni over the tests)",
            f"MLflow audit run {result['audit_run']} in experiment radtrace-audits"
            + (f"; report written to {report}" if report else ""),
        ],
    )


stack_app = typer.Typer(
    help="A local stack on loopback: S3 (moto), MLflow server, Prefect "
    "server. Other radtrace commands use it while it runs.",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


@stack_app.command("up")
def stack_up(as_json: bool = JsonOpt) -> None:
    """Start the servers (or report the running ones); state in .radtrace/stack/state.json."""
    try:
        state = _stack_module().up(_home())
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise _fail(exc, 1) from exc
    lines = [
        f"{name}: {svc.get('url')} (pid {svc.get('pid')})"
        for name, svc in state.get("services", {}).items()
    ]
    _emit(state, as_json, lines + ["radtrace commands in this folder now use this stack."])


@stack_app.command("down")
def stack_down(as_json: bool = JsonOpt) -> None:
    """Stop every server of the stack and wait until none is left."""
    try:
        result = _stack_module().down(_home())
    except (OSError, RuntimeError) as exc:
        raise _fail(exc, 1) from exc
    _emit(
        result,
        as_json,
        [f"stopped {name}" for name in result.get("stopped", {})] or ["no stack was running"],
    )


@stack_app.command("status")
def stack_status(as_json: bool = JsonOpt) -> None:
    """Whether each server is alive and healthy (exit code 3 when not)."""
    result = _stack_module().status(_home())
    lines = [
        f"{name}: {'healthy' if svc.get('healthy') else 'NOT healthy'} ({svc.get('url')})"
        for name, svc in result.get("services", {}).items()
    ] or ["no stack is running"]
    _emit(result, as_json, lines)
    if not result.get("healthy"):
        raise typer.Exit(3)


@app.command()
def deploy(
    pool: str = typer.Option("radtrace-process", help="Process work pool to create/use."),
) -> None:
    """Register the deployments of prefect.yaml with the running Prefect server."""
    _adopt_stack()
    if not os.environ.get("PREFECT_API_URL"):
        raise _fail(
            RuntimeError("no Prefect server: run `radtrace stack up` or set PREFECT_API_URL")
        )
    root = Path(__file__).resolve().parents[1]
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run(
        [prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"],
        check=True,
        cwd=root,
    )
    env = {**os.environ, "RADTRACE_PROJECT_DIR": str(root)}
    done = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=root, env=env)
    if done.returncode:
        raise typer.Exit(done.returncode)


@app.command()
def demo(
    quick: bool = typer.Option(
        False,
        "--quick",
        help="Smaller sizes (20,000 images per half, 6 epochs): about 4 minutes on 2 cores.",
    ),
    fraction: float = typer.Option(0.1, min=0.01, max=1.0, help="Share of each class marked."),
    method: str = MethodOpt,
    skip_hardest: float | None = typer.Option(
        None,
        min=0.0,
        max=0.99,
        help="Share of each class's hardest images passed over (default: 0.02; 0 with --quick, "
        "whose smaller suspect has less trace to spare and lost 0.2 points at 0).",
    ),
    workdir: str | None = typer.Option(
        None, help="Where shards, releases and models go (default: .radtrace/demo)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """The main job end to end on Fashion-MNIST, on embedded defaults.

    Embedded defaults: local files, sqlite MLflow, Prefect's ephemeral API; the data is
    Debian's dataset-fashion-mnist.
    The data owner trains a marker and a clean reference on one half of the training set,
    releases the other half with FRACTION of each class marked, then a suspect is trained on
    the release and a control on the same images unmarked (same architecture and recipe).
    Both are registered in MLflow and audited with the black-box and the white-box test.
    Full size: about 7 minutes on 2 cores (measured 6.8-7.9 min, 2026-12-04).
    """
    _adopt_stack()
    from flows.demo import TABLE_KEYS, DemoParams, demo_flow

    try:
        sizes = DemoParams.quick if quick else DemoParams
        chosen = {} if skip_hardest is None else {"skip_hardest": skip_hardest}
        params = sizes(fraction=fraction, method=method, **chosen)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise _fail(exc) from exc
    root = workdir or str(_home() / "demo" / ("quick" if quick else "full"))
    try:
        result = demo_flow(params, root)
    except (OSError, ValueError) as exc:
        raise _fail(exc) from exc
    if as_json:
        out = {
            "release": result["release"],
            "psnr_mean": result["psnr_mean"],
            "psnr_min": result["psnr_min"],
            "models": [{k: m[k] for k in TABLE_KEYS} for m in result["models"]],
            "details": result,
        }
        typer.echo(json.dumps(out, default=str))
        return
    typer.echo(
        f"\nrelease {result['release']}: {result['num_marked']} of {result['num_samples']} "
        f"images marked; PSNR mean {result['psnr_mean']:.2f} dB, min {result['psnr_min']:.2f} dB"
    )
    header = (
        f"{'model':<10}{'marked':>8}{'accuracy':>10}{'log10 p black-box':>19}"
        f"{'log10 p white-box':>19}{'verdict':>15}"
    )
    typer.echo(header + "\n" + "-" * len(header))
    for m in result["models"]:
        bb = m["log10_p_blackbox"]
        typer.echo(
            f"{m['name']:<10}{m['marked_fraction']:>8.2f}{m['accuracy']:>10.4f}"
            f"{(f'{bb:.2f}' if bb is not None else 'n/a'):>19}{m['log10_p_whitebox']:>19.2f}"
            f"{m['verdict']:>15}"
        )
    if result["params"]["method"] == "pattern":
        typer.echo(
            "(pattern marks: the white-box test looks for feature marks and has no power on "
            "these; the black-box test is the evidence. README, 'Marks'.)"
        )
    t = result["timings_s"]
    typer.echo(
        f"\ntimings (s): {', '.join(f'{k} {v}' for k, v in t.items())}\n"
        f"verdict rule: detected when min(p) x 2 <= {result['params']['alpha']:g} (Bonferroni "
        "over the two tests)\n"
        "MLflow: `.venv/bin/mlflow ui --backend-store-uri sqlite:///.radtrace/mlflow.db`, then "
        "experiments radtrace-releases (marks, PSNR, pictures) and radtrace-audits (evidence, "
        f"null plots); release run {result['release_run']}"
    )


@app.command()
def experiment(
    fractions: str = typer.Option("0.02,0.05,0.1,0.2", help="Comma-separated fractions marked."),
    quick: bool = typer.Option(False, "--quick", help="The demo's quick sizes for every model."),
    calibration_trials: int = typer.Option(
        200, min=0, help="Null audits per model and release for the calibration study."
    ),
    method: str = MethodOpt,
    eps: float = typer.Option(4.0, help="L-inf budget of feature marks in 8-bit levels."),
    psnr_floor: float = typer.Option(40.0, help="Minimum PSNR (dB) of each marked image."),
    results: str = typer.Option("bench/results/fractions.json", help="JSON output file."),
    workdir: str | None = typer.Option(None, help="Default: .radtrace/experiment."),
    as_json: bool = JsonOpt,
) -> None:
    """Detection and accuracy against the fraction marked, plus a calibration study.

    Both tests, every fraction; the calibration runs null audits on models that never saw the
    carriers. Written to MLflow (radtrace-experiments) and to RESULTS.
    """
    _adopt_stack()
    from flows.demo import DemoParams
    from flows.experiment import ExperimentParams, experiment_flow

    try:
        qs = tuple(float(f) for f in fractions.split(",") if f.strip())
        params = ExperimentParams(
            fractions=qs,
            sizes=(DemoParams.quick if quick else DemoParams)(
                eps_255=eps, psnr_floor=psnr_floor, method=method
            ),
            calibration_trials=calibration_trials,
            results=results,
        )
        root = workdir or str(_home() / "experiment" / ("quick" if quick else "full"))
        result = experiment_flow(params, root)
    except (OSError, ValueError) as exc:
        raise _fail(exc) from exc
    lines = [f"{'fraction':>9}{'model':>10}{'accuracy':>10}{'black-box':>11}{'white-box':>11}"]
    for r in result["rows"]:
        bb = r["log10_p_blackbox"]
        lines.append(
            f"{r['release_fraction']:>9g}{r['name']:>10}{r['accuracy']:>10.4f}"
            f"{(f'{bb:.2f}' if bb is not None else 'n/a'):>11}{r['log10_p_whitebox']:>11.2f}"
        )
    for c in result["calibration"]:
        for test in ("blackbox", "paired_ttest", "whitebox"):
            s = c[test]
            lines.append(
                f"calibration q={c['release_fraction']:g} {c['name']} {test}: "
                f"FPR@0.01 {s['fpr_0.01']:.3f}, FPR@0.05 {s['fpr_0.05']:.3f}, "
                f"KS {s['ks_statistic']:.3f} over {s['trials']} null audits"
            )
    _emit(result, as_json, lines + [f"written to {results}"])


def main() -> None:
    app()
