"""Per basis direction: the suspects' learnt gain along the key and the rest of their pull,
from harness.py's saved matrices (reference removed, not whitened). KEYS picks the keys used to
estimate (the rest are for checking a choice made on them)."""
import os, sys
import numpy as np
from radcore.patterns import pattern_frequencies
from radcore.response import _prepare, _score
keys = [int(k) for k in os.environ.get("KEYS", "1,2,3,4").split(",")]
Z = {k: np.load(f"/tmp/h8/key{k}_flat_s0.02_q0.1_e8_t3.npz") for k in range(1, 9)}
fr = pattern_frequencies(6)
num = np.zeros(17); den = np.zeros(17); res = []
for k in keys:
    d = _prepare(Z[k]["D_sus"], Z[k]["D_ref"], None); u = Z[k]["coef"]
    num += (d * u).sum(0); den += (u * u).sum(0)
g = num / den
for k in keys:
    d = _prepare(Z[k]["D_sus"], Z[k]["D_ref"], None); u = Z[k]["coef"]; res.append(d - g * u)
sd = np.concatenate(res).std(0)
order = np.argsort(-g / sd)
for j in order:
    print(fr[j], f"gain {g[j]:.4f} rest sd {sd[j]:.4f} snr {g[j]/sd[j]:.2f}")
if len(sys.argv) > 1:  # score the other keys on the top-n directions of this ranking
    for n in (8, 10, 12, 14, 17):
        S = order[:n]; out = []
        for k in range(1, 9):
            if k in keys: continue
            u = Z[k]["coef"][:, S]; u = u / np.linalg.norm(u, axis=1, keepdims=True)
            for nm in ("D_sus", "D_ctl"):
                d = _prepare(Z[k][nm][:, S], Z[k]["D_ref"][:, S], 0.3)
                out.append(_score(d, u)[2])
        print(n, "suspect", np.round(out[0::2], 2), "control", np.round(out[1::2], 2), "mean", round(np.mean(out[0::2]), 2))
# Scoring with the learnt gains (estimated on KEYS) as a fixed, key-independent reweighting of
# the pull: cos(u_c, transform(D)_c) keeps the exact null for any transform fixed without the key.
if len(sys.argv) > 1:
    for name in ("now", "white*g", "white*g/sd", "g only"):
        out = []
        for k in range(1, 9):
            if k in keys: continue
            u = Z[k]["coef"]
            for nm in ("D_sus", "D_ctl"):
                if name == "now": d = _prepare(Z[k][nm], Z[k]["D_ref"], 0.3)
                elif name == "white*g": d = _prepare(Z[k][nm], Z[k]["D_ref"], 0.3) * np.clip(g, 0, None)
                elif name == "white*g/sd": d = _prepare(Z[k][nm], Z[k]["D_ref"], 0.3) * np.clip(g / sd, 0, None)
                else: d = _prepare(Z[k][nm], Z[k]["D_ref"], None) * np.clip(g / sd**2, 0, None)
                out.append(_score(d, u)[2])
        print(name, "suspect", np.round(out[0::2], 2), "control", np.round(out[1::2], 2), "mean", round(np.mean(out[0::2]), 2))
