"""The demo draws' keys: how close each release's class keys are (max / mean |cos| between the
class coefficient vectors), beside the suspect's black-box log10 p. Reads the demos' --json
outputs given on the command line and the embedded MLflow store (the carriers never print)."""
import json, sys, tempfile
import numpy as np
from radcore.carriers import load_carriers
from radcore.patterns import pattern_coefficients
from tasks import tracking
for path in sys.argv[1:]:
    d = json.load(open(path)); run = d["details"]["release_run"]
    raw, _, _ = tracking.fetch_release_secrets(run)
    with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
        f.write(raw); f.flush(); V = pattern_coefficients(load_carriers(f.name).vectors).numpy()
    G = np.abs(V @ V.T)[~np.eye(len(V), dtype=bool)]
    sus = d["models"][0]
    print(f"{path.split('/')[-1]:16s} skip {d['details']['params']['skip_hardest']:.2f} BB {sus['log10_p_blackbox']:6.2f} acc {sus['accuracy']:.4f} | max|cos| {G.max():.2f} mean {G.mean():.2f} pairs>0.5 {(G > 0.5).sum() // 2}")
