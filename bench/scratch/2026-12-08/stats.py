"""Statistic variants on harness.py's saved sensitivity matrices, each with its exact null.

'now': the product (radcore.response.response_test). 'w_norm': the same cosines summed with
class weights w_c = |D''_c| / mean |D''| (D'': the suspect's whitened, reference-corrected pull;
a function of the models and probes only, so under H0 the cosines stay i.i.d. given the
weights and the weighted sum's law is exact). 'w_excess': w_c = |D'_c| / |R_c| (the suspect's
pull left after the reference, over the reference's own pull), normalised. 'w_sq': w_c = |D''_c|^2.
The p-value of a weighted sum: lattice convolution of the scaled cosine laws (conservative by
C h / 2, as radcore.response). Usage: stats.py /tmp/h8/key*_flat_*.npz
"""
import math, sys
import numpy as np
from scipy import stats
from radcore.response import _prepare, response_test

def weighted_log10_sf(s, w, m, h=1e-3):
    law = stats.beta((m - 1) / 2, (m - 1) / 2)
    total = None; lo = 0.0
    for wc in w:
        n = int(math.ceil(2 * wc / h)) + 1
        edges = -wc + h * np.arange(n + 1)  # covers [-wc, wc]
        u = (np.clip(edges / wc, -1, 1) + 1) / 2
        cdf, sf = law.cdf(u), law.sf(u)
        mass = np.where(edges[:-1] >= 0, sf[:-1] - sf[1:], cdf[1:] - cdf[:-1])
        lo += -wc + h / 2
        total = mass if total is None else np.convolve(total, mass)
    tail = np.cumsum(total[::-1])[::-1]
    i = math.ceil((s - len(w) * h / 2 - lo) / h - 1e-9)
    if i <= 0: return 0.0
    if i >= len(tail): return -math.inf
    return float(np.log10(tail[i]))

def variants(D, R, U):
    d2 = _prepare(D, R, 0.3); d1 = _prepare(D, R, None)
    cos = (d2 * U).sum(1) / np.linalg.norm(d2, axis=1)
    m = U.shape[1]
    out = {"now": response_test(D, U, R).log10_p}
    nr = np.linalg.norm(d2, axis=1)
    for name, w in (("w_norm", nr), ("w_sq", nr**2),
                    ("w_excess", np.linalg.norm(d1, axis=1) / np.linalg.norm(R, axis=1))):
        w = w / w.mean()
        out[name] = weighted_log10_sf(float((w * cos).sum()), w, m)
    return out, cos

if __name__ == "__main__":
    rows = []
    for path in sys.argv[1:]:
        z = np.load(path)
        s, cs = variants(z["D_sus"], z["D_ref"], z["coef"])
        c, _ = variants(z["D_ctl"], z["D_ref"], z["coef"])
        rows.append((s, c))
        print(path.split("/")[-1], f"acc {100*(z['acc_sus']-z['acc_ctl']):+.2f}",
              " ".join(f"{k} {s[k]:.2f}/{c[k]:.2f}" for k in s), "cos", np.round(cs, 2).tolist(), flush=True)
    for k in rows[0][0]:
        print(k, "mean suspect", round(np.mean([r[0][k] for r in rows]), 2), "control", round(np.mean([r[1][k] for r in rows]), 2))
