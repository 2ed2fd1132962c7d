"""The response test with several clean references removed at step 2 (least squares of the
suspect's C×m pull on the references' pulls, fitted without the key: still exact under H0), then
whitened and scored as the product does. Sets: 'own' (the product: the demo's reference), and
combinations with refs.py's models. Usage: multiref.py /tmp/h8/key*_flat_*.npz
"""
import sys
import numpy as np
from radcore.response import _prepare, _score

refs = dict(np.load("/tmp/h8/refs.npz"))

def prep(D, R_list):
    if len(R_list) == 1:
        return _prepare(D, R_list[0], 0.3)
    A = np.stack([r.ravel() for r in R_list], 1)
    beta, *_ = np.linalg.lstsq(A, D.ravel(), rcond=None)
    return _prepare(D - (A @ beta).reshape(D.shape), None, 0.3)

sets = {"own": ["own"], "pubvgg": ["pubvgg"], "pubres": ["pubres"], "own+ownvgg2": ["own", "ownvgg2"],
        "own+pubvgg": ["own", "pubvgg"], "own+pubres": ["own", "pubres"], "all4": ["own", "pubvgg", "pubres", "ownvgg2"]}
sets = {k: v for k, v in sets.items() if all(r == "own" or r in refs for r in v)}
tot = {k: ([], []) for k in sets}
for path in sys.argv[1:]:
    z = np.load(path); row = []
    for name, members in sets.items():
        R = [z["D_ref"] if r == "own" else refs[r] for r in members]
        s = _score(prep(z["D_sus"], R), z["coef"])[2]; c = _score(prep(z["D_ctl"], R), z["coef"])[2]
        tot[name][0].append(s); tot[name][1].append(c); row.append(f"{name} {s:.2f}/{c:.2f}")
    print(path.split("/")[-1][:5], " | ".join(row), flush=True)
print("means", " | ".join(f"{k} {np.mean(a):.2f}/{np.mean(b):.2f}" for k, (a, b) in tot.items()))
