"""The `radtrace` command line. Each command calls one flow (or, before the pipeline lands,
one example); nothing here holds logic of its own."""

from __future__ import annotations

import json
import os

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


@app.callback()
def _root() -> None:
    """Global set-up shared by every command."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


@app.command()
def demo(
    num_train: int = typer.Option(300, min=20, help="Fashion-MNIST training images used."),
    fraction: float = typer.Option(
        1.0, min=0.01, max=1.0, help="Fraction of them marked (per class)."
    ),
    num_heldout: int = typer.Option(
        500, min=50, help="Held-out vanilla test images for the white-box test."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Mark Fashion-MNIST images and detect them with the white-box test (about a minute on a CPU).

    Two linear classifiers are trained on the marker's features, one on the marked images and
    one on the same images unmarked; the white-box test should flag the first only.
    """
    from flows.demo import run_demo

    try:
        result = run_demo(num_train, fraction, num_heldout, progress=not as_json)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    typer.echo(
        f"\nmarked {result.num_marked}/{result.num_train} images; carriers "
        f"{result.carrier_fingerprint[:16]}… (the key itself stays in memory)\n"
        f"PSNR mean {result.psnr_mean:.2f} dB, min {result.psnr_min:.2f} dB; SSIM "
        f"{result.ssim_mean:.4f}; shift own/other carriers {result.shift_ratio:.2f}\n"
    )
    header = f"{'model':<18}{'marked':>8}{'accuracy':>10}{'log10 p (white-box)':>22}{'verdict':>14}"
    typer.echo(header)
    typer.echo("-" * len(header))
    for m in result.models:
        verdict = "DETECTED" if m["log10_p_whitebox"] < -3 else "not detected"
        typer.echo(
            f"{m['name']:<18}{m['marked_fraction']:>8.2f}{m['accuracy']:>10.4f}"
            f"{m['log10_p_whitebox']:>22.2f}{verdict:>14}"
        )


def main() -> None:
    app()
