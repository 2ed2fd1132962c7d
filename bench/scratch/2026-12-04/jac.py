import time, random, torch
import radcore as rc
from radcore.augment import random_augment
from radcore.datasets import load_fashion_mnist
import sys; sys.path.insert(0, "/tmp/dev")
from hard import mark_hard, marker, net, carriers, log
from radcore.mark import carrier_shift
from radcore.quality import psnr
x, y = load_fashion_mnist("train")
xa = x[:400].float() / 255  # marker's own half? use first 400 (any)
def jac_gram(xs, aug=True):
    G = torch.zeros(marker.dim, marker.dim, dtype=torch.float64)
    xs = xs.clone().requires_grad_(True)
    xin = random_augment(xs, rc.AugmentConfig()) if aug else xs
    f = marker(xin)
    J = []
    for k in range(marker.dim):
        g, = torch.autograd.grad(f[:, k].sum(), xs, retain_graph=True)
        J.append(g.flatten(1))
    J = torch.stack(J, 1).double()  # B x d x P
    return torch.einsum("bkp,blp->kl", J, J) / xs.shape[0]
G = jac_gram(xa)
ev, V = torch.linalg.eigh(G); ev, V = ev.flip(0), V.flip(1)
log("eig share top 4/8/16/32:", [round(float(ev[:k].sum()/ev.sum()), 3) for k in (4, 8, 16, 32)])
torch.save({"G": G, "V": V, "ev": ev}, "/tmp/dev/jacG.pt")
xt, yt = x[30000:30500], y[30000:30500]
import numpy as np
for k in (8, 16, 32, 128):
    g = torch.Generator().manual_seed(3)
    c = torch.randn(10, k, generator=g, dtype=torch.float64)
    vec = (c @ V[:, :k].T); vec = (vec / vec.norm(dim=1, keepdim=True)).float()
    car = rc.Carriers(vec, marker_id=marker.marker_id) if hasattr(rc, "Carriers") else None
    import hard; hard.carriers = car
    q = mark_hard(xt, yt, 0)
    own, oth = carrier_shift(xt, q, yt, car, marker)
    log(f"k {k}: psnr {psnr(xt.float()/255, q).mean():.2f} own {own.mean():.3f} other {oth.mean():.3f}")
