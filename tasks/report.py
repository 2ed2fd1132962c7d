"""The evidence report of an audit: one self-contained HTML page (pictures inlined as base64).

It states who was tested against what (model and release identity, with hashes), which tests
ran and why they are valid, each statistic against its null distribution, log10 p, the verdict
and the exact command that reproduces it. No carrier value appears in it.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

__all__ = ["evidence_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; } td, th { padding: .25rem .75rem; border-bottom: 1px solid #ddd;
text-align: left; vertical-align: top; } code { background: #f4f4f4; padding: .1rem .3rem; }
.verdict { font-size: 1.3rem; font-weight: bold; } .detected { color: #b00020; }
.not { color: #1b5e20; } img { max-width: 100%; }
"""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    cells = []
    for key, value in pairs:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        cells.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(text)}</td></tr>")
    return "<table>" + "".join(cells) + "</table>"


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def evidence_html(evidence: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The report page for an audit's ``evidence`` dict (as logged in ``evidence.json``)."""
    model, release, wb = evidence["model"], evidence["release"], evidence["test"]
    bb = evidence.get("blackbox") or {"ran": False}
    detected = evidence["verdict"] == "detected"
    verdict_class = "detected" if detected else "not"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>radtrace audit: {html.escape(str(model['ref']))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>radtrace audit: was this model trained on this release?</h1>",
        f"<p class='verdict {verdict_class}'>{html.escape(evidence['verdict'].upper())} "
        f"(adjusted log10 p = {evidence['log10_p_adjusted']:.2f}, alpha = {evidence['alpha']:g})"
        "</p>",
        f"<p>Decision rule: {html.escape(evidence['decision_rule'])}. Audited at "
        f"{html.escape(evidence['time_utc'])} UTC.</p>",
        "<h2>Model</h2>",
        _rows([(k, model.get(k)) for k in ("ref", "name", "version", "weights_sha256", "arch")]),
        "<h2>Release</h2>",
        _rows(
            [
                ("url", release["url"]),
                ("MLflow run", release["mlflow_run_id"]),
                ("carrier fingerprint (SHA-256)", release["carrier_fingerprint"]),
                ("marker", release["marker_id"]),
            ]
        ),
        "<h2>Black-box test</h2>",
    ]
    if bb.get("ran") and bb["statistic"] == "response":
        parts += [
            f"<p>{html.escape(bb['name'])}. Under H0 the suspect never saw the key, so each "
            "class's cosine is one coordinate of a uniform direction, independent over "
            "classes: the null law of their sum is known exactly and p is computed from it "
            "(a conservative lattice bound), with no control carriers and no extrapolation.</p>",
            _rows(
                [
                    ("log10 p", f"{bb['log10_p']:.3f} ({bb['tail']})"),
                    ("z (summed cosines, standardised)", f"{bb['z']:.3f}"),
                    ("cosine x sqrt(m) per class", [round(v, 2) for v in bb["z_per_class"]]),
                    ("statistic", bb["statistic"]),
                    ("probes, classes", f"{bb['num_probes']}, {bb['pool_size']}"),
                    ("clean reference model", bb.get("reference") or "none"),
                ]
            ),
            _img(figures.get("blackbox_null"), "black-box statistic against its null"),
        ]
    elif bb.get("ran"):
        parts += [
            f"<p>{html.escape(bb['name'])}. Under H0 the suspect never saw any carrier of the "
            "pool, so the true carriers are exchangeable with the controls and the permutation "
            "p-value is exact; beyond the permutations' resolution a normal fitted to the "
            "permutation distribution extrapolates the tail (reported as such).</p>",
            _rows(
                [
                    ("log10 p", f"{bb['log10_p']:.3f} ({bb['tail']})"),
                    (
                        "log10 p, permutations only (exact bound)",
                        f"{bb['log10_p_permutation']:.3f}",
                    ),
                    ("Stouffer z", f"{bb['z']:.3f}"),
                    ("null mean / sd", f"{bb['null_mean']:.3f} / {bb['null_sd']:.3f}"),
                    ("z per class", [round(v, 2) for v in bb["z_per_class"]]),
                    ("statistic", bb["statistic"]),
                    (
                        "probes, pool carriers, permutations",
                        f"{bb['num_probes']}, {bb['pool_size']}, {bb['permutations']}",
                    ),
                    ("clean reference model", bb.get("reference") or "none"),
                ]
            ),
            _img(figures.get("blackbox_null"), "black-box statistic against its null"),
        ]
    else:
        parts.append(f"<p>Not run: {html.escape(bb.get('why', 'no probe set'))}.</p>")
    parts += [
        "<h2>White-box test (Sablayrolles et al. 2020)</h2>",
        f"<p>{html.escape(wb['name'])}.</p>",
        _rows(
            [
                ("log10 p", f"{wb['log10_p']:.3f}"),
                ("held-out images, marker dimension", f"{wb['num_images']}, {wb['dim']}"),
                ("cosines", [round(v, 4) for v in wb["cosines"]]),
                (
                    "share of fresh-carrier draws at or below",
                    wb["empirical_null_share_at_or_below"],
                ),
            ]
        ),
        _img(figures.get("whitebox_null"), "white-box statistic against fresh carrier sets"),
        "<h2>Reproduce</h2>",
        f"<p><code>{html.escape(evidence['reproduce'])}</code></p>",
        "</body></html>",
    ]
    return "\n".join(parts)
