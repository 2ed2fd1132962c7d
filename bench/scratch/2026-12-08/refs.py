"""More clean references for the response test's step 2, trained on what the data owner has.

'pubvgg': VGG w16 on the clean public half (the release's own images before marking), seed 4
(the suspects and the control use seed 3: a different seed, as the owner cannot know the
suspect's); 'pubres': the marker's small ResNet architecture on the clean public half, seed 5;
'ownvgg2': VGG on the owner half, seed 6. Their sensitivity matrices (key-independent: D depends
on the model and the probes only) go to /tmp/h8/refs.npz. Run after harness.py (its cache).
"""
import os, sys
sys.path.insert(0, os.path.dirname(__file__))
import numpy as np, torch
from radcore.carriers import Carriers
from radcore.datasets import load_fashion_mnist
from radcore.probes import select_probes
from radcore.response import make_response_probes, sensitivity
from radcore.train import log_probabilities
from common import M, S, cached, train

torch.set_num_threads(int(os.environ.get("THREADS", 2)))
xtr, ytr = load_fashion_mnist("train"); xte, yte = load_fashion_mnist("test")
xh, yh = xte[:2000], yte[:2000]

models = {
    "pubvgg": lambda: train("vgg_small", xtr[30000:], ytr[30000:], 4, width=16),
    "pubres": lambda: train("small_resnet", xtr[30000:], ytr[30000:], 5, widths=[16, 32, 64, 128]),
    "ownvgg2": lambda: train("vgg_small", xtr[:30000], ytr[:30000], 6, width=16),
}
vec = torch.randn(10, 128, dtype=torch.float64)  # any key: D does not depend on it
pick = select_probes(yh, 50, 10)
probes = make_response_probes(xh[pick], yh[pick], Carriers(vec / vec.norm(dim=1, keepdim=True)), 40.0)
out = {}
for name in os.environ.get("REFS", "pubvgg,pubres,ownvgg2").split(","):
    net = cached(name, models[name])
    out[name] = sensitivity(lambda x: log_probabilities(net, x, M, S), probes)
    pred = log_probabilities(net, xte[2000:], M, S).argmax(1)
    print(name, "accuracy", float((pred == yte[2000:]).float().mean()), flush=True)
    np.savez("/tmp/h8/refs.npz", **out)
