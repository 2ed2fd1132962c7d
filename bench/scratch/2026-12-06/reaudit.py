"""Re-run the response test on a finished demo's registered models, with and without whitening.
Usage: .venv/bin/python bench/scratch/2026-12-06/reaudit.py /tmp/demo_r1.json [...] (the demo's
--json output; the embedded MLflow store under .radtrace keeps every run's models and probes)."""
import json, sys
from radcore.response import response_test, sensitivity
from tasks import tracking
from tasks.audit import load_suspect, logprob_fn
from tasks.probes import load_probe_set

tracking.configure_tracking()
for path in sys.argv[1:]:
    d = json.load(open(path))["details"]
    probes = load_probe_set(tracking.fetch_release_probes(d["release_run"]))
    ref = sensitivity(logprob_fn(load_suspect(d["reference"])), probes)
    coef = probes.coefficients.numpy()
    for m in d["models"]:
        sus = sensitivity(logprob_fn(load_suspect(m["model"])), probes)
        out = {f"whiten={w}": round(response_test(sus, coef, ref, whiten=w).log10_p, 2) for w in (None, 0.1, 0.3, 1.0)}
        out["no reference, whiten=0.3"] = round(response_test(sus, coef, None).log10_p, 2)
        print(path, m["name"], m["model"], out, flush=True)
