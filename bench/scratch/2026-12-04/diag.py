import os, numpy as np, torch
import radcore as rc
from radcore.train import log_probabilities
from radcore.probes import pool_logprobs
from radcore.blackbox import BlackboxConfig, blackbox_from_logprobs, response_matrices
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
K = int(os.environ.get("K", 16))
probes = torch.load(f"/tmp/dev/subprobes_K{K}_30_30_4.0.pt", weights_only=False)
ti = np.arange(10)
lp = lambda m: (lambda x: log_probabilities(m, x, M, S))
mods = {n: torch.load(f"/tmp/dev/{f}", weights_only=False) for n, f in [("ref", "ref_30000_8.pt"), ("ctl", "ctl.pt"), ("sus", f"sub_K{K}_e4.0_f40.0.pt"), ("sus_e4_feat", "sus_e4_f40.0_c17.pt")]}
LP = {n: pool_logprobs(lp(m), probes) for n, m in mods.items()}
R = {n: response_matrices(c, mk, probes.labels) for n, (c, mk) in LP.items()}
for stat in ("own", "cross"):
    for a, b in (("ref", "ctl"), ("ref", "sus"), ("ctl", "sus"), ("ctl", "sus_e4_feat")):
        cs = [np.corrcoef(R[a][stat][j], R[b][stat][j])[0, 1] for j in range(10)]
        print(stat, a, b, "mean corr across carriers", round(float(np.mean(cs)), 3))
    for refname in ("ref", "ctl"):
        for sname in ("sus", "ctl", "sus_e4_feat"):
            if refname == sname: continue
            d = blackbox_from_logprobs(*LP[sname], probes.labels, ti, *LP[refname], BlackboxConfig(statistic=stat, permutations=20000))
            print(f"  {stat} {sname} with reference {refname}: log10p {d.log10_p:.2f} z {d.z:.2f}")
