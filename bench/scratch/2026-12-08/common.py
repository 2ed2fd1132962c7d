"""What harness.py and refs.py share: the demo's normalisation, the model cache in /tmp/h8 and
the demo's training recipe (flows/demo.py)."""
import os
import torch
from radcore.nets import build_classifier
from radcore.train import TrainConfig, train_classifier

M, S = (0.286,), (0.353,)
os.makedirs("/tmp/h8", exist_ok=True)

def cached(name, make):
    path = f"/tmp/h8/{name}.pt"
    if os.path.exists(path):
        return torch.load(path, weights_only=False)
    net = make(); torch.save(net, path); return net

def train(arch, x, y, seed, epochs=8, **kw):
    torch.manual_seed(seed)
    net = build_classifier(arch, 10, 1, **kw)
    train_classifier(net, x, y, M, S, TrainConfig(epochs=epochs), torch.Generator().manual_seed(seed))
    return net
