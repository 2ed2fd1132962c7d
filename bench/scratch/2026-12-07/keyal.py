"""Per key (7-9): alignment of each class key with the reference's natural pull, the suspect's
per-class cosines (top 2% passed over), and how close the class keys are to each other."""
import math, sys, numpy as np, torch
sys.argv = ["x"]
exec(open("bench/scratch/2026-12-07/variants.py").read().split("rr = resp(")[0])
torch.set_num_threads(1)
R = Dof(resp(torch.load("/tmp/dev/ref_vgg_A.pt", weights_only=False)), "now")
T = "_lowfreq_p40.0_q0.1_f4.0-10.0_n3_s"
for s in (7, 8, 9):
    V = key(s)
    al = (V * R).sum(1) / np.linalg.norm(R, axis=1)
    D = Dof(resp(torch.load(f"/tmp/dev/texband0.02marker{T}{s}.pt", weights_only=False)), "now")
    DD = D - float((D * R).sum() / (R * R).sum()) * R
    cs = (DD * V).sum(1) / np.linalg.norm(DD, axis=1)
    G = V @ V.T; off = np.abs(G[~np.eye(10, dtype=bool)])
    print(s, "cos(v_c,R_c)", np.round(al, 2), "| suspect cos", np.round(cs, 2), "| max|cos(v_c,v_d)|", round(float(off.max()), 2), "mean", round(float(off.mean()), 2))
