"""The fast default path of ravine.landscape (one pass per point on a CPU, with the input-layer
identity) against direct evaluation, in float32, the dtype the speed is for.

Oracles: the model evaluated at the displaced weights ``w0 + a d1 + b d2`` loaded into a copy with
``load_state_dict`` (torch's own forward), computed in float64 from the float32 weights; and the
plain paths of the same function (``shortcut=False``; ``vectorize=True``), which share none of the
per-point code. Tolerances are float32 rounding: a few units of ``2^-24`` relative to the loss.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ravine import landscape as L

RTOL32 = 2e-6  # float32 rounding of a mean over a few hundred samples, with margin


def mlp32(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


def data32(n=300, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randint(0, 5, (n,), generator=g)


def direct(model, loss_fn, x, y, vectors, coords):
    """Loss at each ``w0 + sum_k c_k d_k``: weights formed in float64, rounded once to float32,
    loaded into a copy; the forward in float64 on those float32 weights."""
    out = []
    centre = {n: p.detach().double() for n, p in model.named_parameters()}
    for c in coords:
        m = copy.deepcopy(model)
        sd = m.state_dict()
        for n in centre:
            sd[n] = (centre[n] + sum(float(ck) * v[n].double() for ck, v in zip(c, vectors))).float()
        m.load_state_dict(sd)
        m = m.double().eval()
        with torch.no_grad():
            out.append(float(loss_fn(m(x.double()), y)))
    return np.array(out)


def plane_coords(res):
    return [(a, b) for b in res.y for a in res.x]


def test_default_plane_equals_direct_evaluation_in_float32():
    model = mlp32()
    x, y = data32()
    d = L.random_directions(model, n=2, seed=3)  # filter-normalized; bias directions are zero
    res = L.plane(model, F.cross_entropy, (x, y), d, steps=(7, 5), span=((-1.0, 1.0), (-0.5, 1.5)))
    assert res.info["path"] == "loop" and res.info["shortcut_layers"] == ["0"]
    ref = direct(model, F.cross_entropy, x, y, d.vectors, plane_coords(res)).reshape(res.loss.shape)
    np.testing.assert_allclose(res.loss, ref, rtol=RTOL32, atol=0)


@pytest.mark.parametrize("bias_bn", ["zero", "keep"])
def test_default_equals_plain_and_batched_paths(bias_bn):
    model = mlp32(seed=4)
    x, y = data32(seed=5)
    d = L.random_directions(model, n=2, seed=6, bias_bn=bias_bn)
    fast = L.plane(model, F.cross_entropy, (x, y), d, steps=6, metric=L.accuracy)
    plain = L.plane(model, F.cross_entropy, (x, y), d, steps=6, metric=L.accuracy, shortcut=False, vectorize=False)
    batched = L.plane(model, F.cross_entropy, (x, y), d, steps=6, metric=L.accuracy, vectorize=True)
    assert plain.info["shortcut_layers"] == [] and batched.info["path"] == "vmap"
    np.testing.assert_allclose(fast.loss, plain.loss, rtol=RTOL32, atol=0)
    np.testing.assert_allclose(fast.loss, batched.loss, rtol=RTOL32, atol=0)
    # accuracy counts argmax hits: a rounding difference may flip a near-tie, one sample at most
    assert np.abs(fast.metric - plain.metric).max() <= 1.0 / len(x) + 1e-12


def test_line_and_explicit_directions_equal_direct_evaluation():
    model = mlp32(seed=7)
    x, y = data32(seed=8)
    g = torch.Generator().manual_seed(9)
    # explicit direction moving every tensor (biases included), and one that leaves layer 2 alone
    d1 = {n: 0.1 * torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    d2 = {
        n: (torch.zeros_like(p) if n.startswith("2.") else 0.1 * torch.randn(p.shape, generator=g))
        for n, p in model.named_parameters()
    }
    line = L.line(model, F.cross_entropy, (x, y), d1, steps=9, span=(-2.0, 2.0))
    assert line.info["shortcut_layers"] == ["0"]
    ref = direct(model, F.cross_entropy, x, y, [d1], [(a,) for a in line.x])
    np.testing.assert_allclose(line.loss, ref, rtol=RTOL32, atol=0)
    plane = L.plane(model, F.cross_entropy, (x, y), (d1, d2), steps=5)
    ref = direct(model, F.cross_entropy, x, y, [d1, d2], plane_coords(plane)).reshape(plane.loss.shape)
    np.testing.assert_allclose(plane.loss, ref, rtol=RTOL32, atol=0)


def test_batches_and_loader_data_equal_one_batch():
    """Tensor data in batches keeps the identity (products cached per batch); a DataLoader is not
    cached, so the per-point loop runs its layers plainly (three products a point would cost more)."""
    model = mlp32(seed=10)
    x, y = data32(n=250, seed=11)
    d = L.random_directions(model, n=2, seed=12)
    whole = L.plane(model, F.cross_entropy, (x, y), d, steps=5)
    chunks = L.plane(model, F.cross_entropy, (x, y), d, steps=5, batch_size=64)
    loader = L.plane(model, F.cross_entropy, DataLoader(TensorDataset(x, y), batch_size=100), d, steps=5)
    assert chunks.info["shortcut_layers"] == ["0"] and loader.info["shortcut_layers"] == []
    np.testing.assert_allclose(chunks.loss, whole.loss, rtol=RTOL32, atol=0)
    np.testing.assert_allclose(loader.loss, whole.loss, rtol=RTOL32, atol=0)


def test_cnn_and_resume_on_the_fast_path(tmp_path):
    torch.manual_seed(13)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    g = torch.Generator().manual_seed(14)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    d = L.random_directions(model, n=2, seed=15)
    full = L.plane(model, F.cross_entropy, (x, y), d, steps=5)
    assert full.info["shortcut_layers"] == ["0"]
    ref = direct(model, F.cross_entropy, x, y, d.vectors, plane_coords(full)).reshape(full.loss.shape)
    np.testing.assert_allclose(full.loss, ref, rtol=RTOL32, atol=0)
    # a file with half the grid filled resumes to the same values
    out = tmp_path / "plane.npz"
    part = L.plane(model, F.cross_entropy, (x, y), d, steps=5, out=out)
    part.filled.reshape(-1)[13:] = False
    part.loss.reshape(-1)[13:] = np.nan
    part.save(out)
    resumed = L.plane(model, F.cross_entropy, (x, y), d, steps=5, out=out)
    assert resumed.info["points_computed"] == 25 - 13
    np.testing.assert_allclose(resumed.loss, full.loss, rtol=RTOL32, atol=0)


def test_model_left_untouched_by_the_fast_path():
    model = mlp32(seed=16)
    x, y = data32(seed=17)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    L.plane(model, F.cross_entropy, (x, y), steps=4)
    assert model.training and all("forward" not in m.__dict__ for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class Tied(nn.Module):
    """The same weight used by two layers (registered twice): each point's weights go through
    ``functional_call``, which unties them, instead of into the parameter slots."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(12, 12)
        self.b = nn.Linear(12, 12)
        self.b.weight = self.a.weight
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))))


def test_tied_weights_move_together():
    torch.manual_seed(18)
    model = Tied()
    x, y = data32(seed=19)
    d = L.random_directions(model, n=2, seed=20)
    res = L.plane(model, F.cross_entropy, (x, y), d, steps=4)
    assert res.info["path"] == "loop"
    ref = direct(model, F.cross_entropy, x, y, d.vectors, plane_coords(res)).reshape(res.loss.shape)
    np.testing.assert_allclose(res.loss, ref, rtol=RTOL32, atol=0)
    assert model.b.weight is model.a.weight


def test_parameters_restored_when_a_point_fails():
    model = mlp32(seed=21)
    x, y = data32(seed=22)
    params = [p for p in model.parameters()]
    calls = []

    def failing(out, target):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("loss failed at the third point")
        return F.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="third point"):
        L.plane(model, failing, (x, y), steps=3)
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert all(isinstance(p, nn.Parameter) for p in model.parameters())
    assert all("forward" not in m.__dict__ for m in model.modules())
