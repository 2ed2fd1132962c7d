"""Per-class accuracy change of the cached tex.py suspects (keys 7-9) against the control."""
import torch
from radcore.datasets import load_fashion_mnist
from radcore.train import log_probabilities
torch.set_num_threads(1)
M, S = (0.286,), (0.353,)
xte, yte = load_fashion_mnist("test"); x, y = xte[3000:], yte[3000:]
def pc(p):
    net = torch.load(p, weights_only=False); pred = log_probabilities(net, x, M, S).argmax(1)
    return torch.stack([(pred[y == c] == c).float().mean() for c in range(10)])
c = pc("/tmp/dev/ctl_vgg.pt"); print("ctl", (c * 100).round().int().tolist())
T = "_lowfreq_p40.0_q0.1_f4.0-10.0_n3_s"
for tag in ["texband0marker", "texband0.02marker", "texband0.03marker"]:
    d = torch.stack([pc(f"/tmp/dev/{tag}{T}{s}.pt") - c for s in (7, 8, 9)]).mean(0)
    print(tag, [round(float(v) * 100, 1) for v in d], "mean", round(float(d.mean()) * 100, 2))
