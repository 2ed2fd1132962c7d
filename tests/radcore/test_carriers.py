import random

import numpy as np
import pytest
import torch
from scipy import stats as sps

from radcore.carriers import Carriers, draw_carriers, load_carriers, save_carriers


def _seeded(seed: int):
    return random.Random(seed).randbytes


def test_shape_norm_and_fresh_draws():
    a = draw_carriers(10, 256, marker_id="m")
    b = draw_carriers(10, 256, marker_id="m")
    assert a.vectors.shape == (10, 256) and a.vectors.dtype == torch.float32
    assert torch.allclose(a.vectors.norm(dim=1), torch.ones(10), atol=1e-5)
    assert a.fingerprint != b.fingerprint  # os.urandom: two releases never share a key


def test_directions_are_isotropic_gaussian():
    c = draw_carriers(200, 64, randbytes=_seeded(0))
    z = (c.vectors.double() * np.sqrt(64)).numpy().ravel()  # ≈ N(0, 1) coordinates
    assert sps.kstest(z, "norm").pvalue > 0.01
    off = (c.vectors @ c.vectors.T)[~torch.eye(200, dtype=torch.bool)]
    assert abs(float(off.mean())) < 0.01 and float(off.std()) == pytest.approx(1 / 8, rel=0.1)


def test_repr_never_shows_values():
    c = draw_carriers(3, 8, marker_id="toy", randbytes=_seeded(1))
    text = repr(c) + str(c) + f"{c}"
    assert c.fingerprint[:16] in text
    for v in c.vectors.flatten()[:5].tolist():
        assert f"{v:.4f}" not in text and f"{v:.3f}"[1:] not in text


def test_save_load_roundtrip_and_tamper_check(tmp_path):
    c = draw_carriers(10, 32, marker_id="small:abc", randbytes=_seeded(2))
    path = tmp_path / "carriers.safetensors"
    assert save_carriers(c, path) == c.fingerprint
    back = load_carriers(path)
    assert torch.equal(back.vectors, c.vectors) and back.marker_id == "small:abc"
    assert back.fingerprint == c.fingerprint
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the tensor payload
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        load_carriers(path)


def test_rejects_non_unit_rows():
    with pytest.raises(ValueError, match="unit"):
        Carriers(torch.ones(2, 4))
