import sys, time, os, math
import numpy as np, torch
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy, log_probabilities
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
T0 = time.time()
def log(*a): print(f"[{time.time()-T0:7.1f}s]", *a, flush=True)
PSNR = float(os.environ.get("PSNR", 40)); Q = float(os.environ.get("Q", 0.1))
MODES = os.environ.get("MODES", "rad,lowf").split(",")
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
perm = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))
A, B = perm[:30000], perm[30000:]
n = 28
def dct_basis(K):
    k = torch.arange(K).double(); t = torch.arange(n).double()
    b = torch.cos(math.pi * (t[None, :] + 0.5) * k[:, None] / n); return (b / b.norm(dim=1, keepdim=True)).float()
def draw(mode, m, g):
    if mode == "rad":
        p = torch.randint(0, 2, (m, 1, n, n), generator=g).float() * 2 - 1
    elif mode.startswith("lowf"):
        K = int(mode[4:] or 8); b = dct_basis(K)
        c = torch.randn(m, K, K, generator=g); p = torch.einsum("mab,ai,bj->mij", c, b, b).unsqueeze(1)
    return p / p.flatten(1).norm(dim=1)[:, None, None, None]
def apply(x_u8, p, psnr):
    x = x_u8.float(); target = 255**2 / 10**(psnr/10)
    a = torch.full((x.shape[0],1,1,1), math.sqrt(target)*n)
    for _ in range(8):
        y = (x + a * p).clamp(0, 255).round()
        mse = ((y - x)**2).mean((1,2,3), keepdim=True).clamp_min(1e-6)
        a = a * (target / mse).sqrt().clamp(0.5, 2.0)
    y = (x + a * p).clamp(0, 255).round(); mse = ((y - x)**2).mean((1,2,3))
    return y.to(torch.uint8), 10*torch.log10(255**2/mse.clamp_min(1e-9))
def train(x, y, seed, epochs=8):
    torch.manual_seed(seed); net = build_classifier("vgg_small", 10, 1, width=16)
    train_classifier(net, x, y, M, S, TrainConfig(epochs=epochs), torch.Generator().manual_seed(seed)); return net
def nll(m, x, y):
    return -log_probabilities(m, x, M, S).gather(1, y[:, None]).squeeze(1).double()
def test(D):
    T = D.sum(); h = -(T**2) / (2 * (D**2).sum()) / math.log(10) if T > 0 else 0.0
    z = D.mean() / D.std() * math.sqrt(len(D))
    return f"mean D {D.mean():.4f} sd {D.std():.4f} z {z:.2f} pos {(D>0).float().mean():.3f} log10p(hoeffding) {float(h):.2f}"
ctl = torch.load("/tmp/dev/ctl.pt", weights_only=False)
yb = ytr[B]
sel = torch.cat([(yb==c).nonzero().flatten()[: int(round(Q*(yb==c).sum().item()))] for c in range(10)])
for mode in MODES:
    g = torch.Generator().manual_seed(11)
    xb = xtr[B].clone()
    x1, ps = apply(xb[sel], draw(mode, len(sel), g), PSNR + 0.2)
    x2, ps2 = apply(xb[sel], draw(mode, len(sel), g), PSNR + 0.2)  # fresh alternative, never released
    log(f"{mode}: marked {len(sel)} PSNR mean {ps.mean():.2f} min {ps.min():.2f}")
    xb[sel] = x1
    name = f"/tmp/dev/mem_{mode}_p{PSNR}_q{Q}.pt"
    if os.path.exists(name): sus = torch.load(name, weights_only=False)
    else: sus = train(xb, yb, 3); torch.save(sus, name)
    log(f"{mode}: acc sus {accuracy(sus, xte[3000:], yte[3000:], M, S):.4f}")
    ys = yb[sel]
    for nm, m in (("control", ctl), ("suspect", sus)):
        D = nll(m, x2, ys) - nll(m, x1, ys)
        log(f"{mode} {nm}: {test(D)}")
