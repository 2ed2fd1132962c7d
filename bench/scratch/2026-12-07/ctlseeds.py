"""Seed noise of the harness recipe: the control (clean public half) at training seeds SEEDS
(tex.py's is 3), test accuracy on tex.py's test images."""
import os, torch
from radcore.datasets import load_fashion_mnist
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier, accuracy
torch.set_num_threads(2)
M, S = (0.286,), (0.353,)
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
B = torch.randperm(60000, generator=torch.Generator().manual_seed(1234))[30000:]
for seed in [int(v) for v in os.environ.get("SEEDS", "4,5").split(",")]:
    path = f"/tmp/dev/ctl_vgg_t{seed}.pt"
    if os.path.exists(path): net = torch.load(path, weights_only=False)
    else:
        torch.manual_seed(seed); net = build_classifier("vgg_small", 10, 1, width=16)
        train_classifier(net, xtr[B], ytr[B], M, S, TrainConfig(epochs=8), torch.Generator().manual_seed(seed)); torch.save(net, path)
    print("control seed", seed, "acc", round(accuracy(net, xte[3000:], yte[3000:], M, S), 4), flush=True)
