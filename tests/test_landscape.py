"""Tests for ravine.landscape: every value is checked against an independent computation.

Oracles: a point-by-point loop that loads each point's weights into a copy of the model with
``load_state_dict`` and calls it (torch's own forward, batch norm and dropout semantics), numpy's SVD
and scikit-learn's PCA for trajectory planes, and the models' own losses at checkpoints.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ravine import landscape as L
from ravine.landscape._directions import _flat


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def mlp(seed=0, sizes=(5, 7, 6, 3)):
    torch.manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4), nn.ReLU(), nn.Linear(4, 3)
    ).double()


class BNDrop(nn.Module):
    """Not a Sequential: forces the generic vmap path; batch norm and dropout inside."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def data(n=40, d=5, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randint(0, k, (n,), generator=g)


def image_data(n=20, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def oracle(model, loss_fn, x, y, d1, d2, xs, ys, train_bn=False, origin=None):
    """Point by point: load w0 + a d1 + b d2 into a fresh copy with load_state_dict and call it."""
    ref = copy.deepcopy(model)
    centre = origin if origin is not None else {n: p.detach().clone() for n, p in model.named_parameters()}
    out = np.zeros((len(ys), len(xs)))
    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            m = copy.deepcopy(ref)
            sd = m.state_dict()
            for n in centre:
                sd[n] = centre[n] + float(a) * d1[n] + float(b) * d2[n]
            m.load_state_dict(sd)
            m.eval()
            if train_bn:
                for mod in m.modules():
                    if isinstance(mod, nn.BatchNorm1d):
                        mod.train()
            with torch.no_grad():
                out[i, j] = float(loss_fn(m(x), y))
    return out


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, m.training) for n, m in model.named_modules()],
    )


def assert_unchanged(model, snap):
    sd, modes = snap
    now = model.state_dict()
    assert now.keys() == sd.keys()
    for k in sd:
        assert torch.equal(now[k], sd[k]), k
    assert [(n, m.training) for n, m in model.named_modules()] == modes


# ---------------------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("factory,make_data", [(mlp, data), (cnn, image_data)])
def test_batched_plane_equals_point_by_point_load_state_dict(factory, make_data):
    model = factory()
    x, y = make_data()
    dirs = L.random_directions(model, norm="filter", seed=3)
    d1, d2 = dirs.vectors
    res = L.plane(
        model, F.cross_entropy, (x, y), dirs, span=(-0.8, 1.2), steps=(5, 4), max_memory_mb=0.01, vectorize=True
    )
    assert res.loss.shape == (4, 5)
    assert res.complete
    expect = oracle(model, F.cross_entropy, x, y, d1, d2, res.x, res.y)
    np.testing.assert_allclose(res.loss, expect, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(res.x, np.linspace(-0.8, 1.2, 5))
    assert res.data == {"source": "tensors", "n": len(x), "indices": "all", "batches": 1}
    assert res.seed == 0 and res.batch_norm == "eval" and res.dropout == "off"
    assert res.directions["norm"] == "filter" and res.directions["seed"] == 3


def test_line_with_metric_and_batches_and_subset():
    model = mlp()
    x, y = data(n=30)
    d = L.random_directions(model, n=1, norm="layer", seed=5)
    res = L.line(model, F.cross_entropy, (x, y), d, steps=7, metric=L.accuracy, subset=[0, 3, 4, 9, 12], batch_size=2)
    sub = torch.tensor([0, 3, 4, 9, 12])
    zero = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    expect = oracle(model, F.cross_entropy, x[sub], y[sub], d.vectors[0], zero, res.x, [0.0])[0]
    np.testing.assert_allclose(res.loss, expect, rtol=1e-12)
    acc = oracle(
        model, lambda o, t: (o.argmax(1) == t).double().mean(), x[sub], y[sub], d.vectors[0], zero, res.x, [0.0]
    )[0]
    np.testing.assert_allclose(res.metric, acc, rtol=1e-12)
    assert res.data["indices"] == [0, 3, 4, 9, 12] and res.data["n"] == 5 and res.data["batches"] == 3
    assert res.metric_name == "accuracy"


def test_dataloader_data_weighted_by_batch_size():
    model = mlp()
    x, y = data(n=23)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5)
    d = L.random_directions(model, seed=1)
    a = L.plane(model, F.cross_entropy, loader, d, steps=3)
    b = L.plane(model, F.cross_entropy, (x, y), d, steps=3)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-12)
    assert a.data["n"] == 23 and a.data["source"] == "DataLoader"


class Wrapped(nn.Module):
    """Like ravine's experiment MLP: a reshape, then a Sequential; plus a second use of the input."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 9), nn.ReLU(), nn.Linear(9, 4))
        self.skip = nn.Linear(6, 4, bias=False)

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return self.net(x) + self.skip(x * 2)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_input_layer_shortcut_equals_generic_vmap_and_loop(kind):
    torch.manual_seed(0)
    if kind == "mlp":
        model = Wrapped().double()
        x, y = torch.randn(33, 2, 3, dtype=torch.float64), torch.randint(0, 4, (33,))
        expect_layers = ["net.0", "skip"]
    else:
        model = cnn()
        x, y = image_data()
        expect_layers = ["0"]
    d = L.random_directions(model, seed=2, bias_bn="keep")
    fast = L.plane(model, F.cross_entropy, (x, y), d, steps=6, max_memory_mb=0.01, vectorize=True)
    generic = L.plane(model, F.cross_entropy, (x, y), d, steps=6, shortcut=False, vectorize=True)
    loop = L.plane(model, F.cross_entropy, (x, y), d, steps=6, vectorize=False)
    assert fast.info["shortcut_layers"] == expect_layers and generic.info["shortcut_layers"] == []
    assert (fast.info["path"], generic.info["path"], loop.info["path"]) == ("vmap", "vmap", "loop")
    np.testing.assert_allclose(fast.loss, generic.loss, rtol=1e-12)
    np.testing.assert_allclose(loop.loss, generic.loss, rtol=1e-12)
    np.testing.assert_allclose(fast.loss, oracle(model, F.cross_entropy, x, y, *d.vectors, fast.x, fast.y), rtol=1e-12)
    assert all("forward" not in m.__dict__ for m in model.modules())  # the patch is removed


class Reused(nn.Module):
    """One Linear applied to the data and again to its own output: only the first call is linear in
    the grid coordinates."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))


@pytest.mark.parametrize("vectorize", [True, False])
def test_identity_applies_per_call_not_per_layer(vectorize):
    torch.manual_seed(0)
    model = Reused().double()
    x, y = data()
    d = L.random_directions(model, seed=1, bias_bn="keep")
    res = L.plane(model, F.cross_entropy, (x, y), d, steps=4, vectorize=vectorize)
    assert res.info["shortcut_layers"] == ["fc"]
    np.testing.assert_allclose(res.loss, oracle(model, F.cross_entropy, x, y, *d.vectors, res.x, res.y), rtol=1e-12)


def test_shortcut_skips_layers_whose_input_depends_on_parameters():
    model = mlp()
    x, y = data()
    res = L.plane(model, F.cross_entropy, (x, y), steps=3)
    assert res.info["shortcut_layers"] == ["0"]  # layers 2 and 4 see activations, not data
    with pytest.raises(TypeError, match="shortcut must be a bool, got 'auto'"):
        L.plane(model, F.cross_entropy, (x, y), steps=3, shortcut="auto")


def test_unbatchable_model_falls_back_to_loop():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 3)

        def forward(self, x):
            out = self.fc(x)
            return out if out.sum() > 0 else -out  # data-dependent control flow: vmap cannot batch it

    torch.manual_seed(0)
    model = Branchy().double()
    x, y = data()
    d = L.random_directions(model, norm="none", bias_bn="keep", seed=0)
    with pytest.warns(RuntimeWarning, match="falling back"):
        res = L.plane(model, F.cross_entropy, (x, y), d, steps=3, vectorize=True)
    assert res.info["path"] == "loop"
    np.testing.assert_allclose(res.loss, oracle(model, F.cross_entropy, x, y, *d.vectors, res.x, res.y), rtol=1e-12)


# ---------------------------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("batch_norm", ["eval", "recompute"])
def test_batchnorm_dropout_mode_independent_and_model_untouched(batch_norm):
    torch.manual_seed(0)
    model = BNDrop().double()
    x, y = data(n=32)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x + 0.3)  # non-trivial running statistics
    d = L.random_directions(model, seed=4)
    results = []
    for mode in (True, False):
        model.train(mode)
        model.drop.train(not mode)  # mixed flags too
        snap = snapshot(model)
        results.append(L.plane(model, F.cross_entropy, (x, y), d, steps=4, batch_norm=batch_norm, vectorize=True))
        assert_unchanged(model, snap)
        assert model.bn.track_running_stats
    np.testing.assert_array_equal(results[0].loss, results[1].loss)
    assert results[0].batch_norm == batch_norm
    expect = oracle(
        model, F.cross_entropy, x, y, *d.vectors, results[0].x, results[0].y, train_bn=batch_norm == "recompute"
    )
    np.testing.assert_allclose(results[0].loss, expect, rtol=1e-12)
    assert results[0].info["path"] == "vmap" and results[0].info["shortcut_layers"] == ["fc1"]


def test_recompute_keeps_batches_whole():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = data(n=64)
    d = L.random_directions(model, seed=4)
    # a tiny pass size would micro-batch in eval mode; recompute must still use each batch's statistics
    res = L.plane(
        model, F.cross_entropy, (x, y), d, steps=3, batch_norm="recompute", max_memory_mb=0.001, vectorize=True
    )
    np.testing.assert_allclose(
        res.loss, oracle(model, F.cross_entropy, x, y, *d.vectors, res.x, res.y, train_bn=True), rtol=1e-12
    )


# ---------------------------------------------------------------------------------------------- directions


def test_filter_normalization_matches_weight_filter_norms():
    model = cnn()
    params = dict(model.named_parameters())
    d = L.random_directions(model, n=2, norm="filter", seed=7)
    for vec in d.vectors:
        for name, w in params.items():
            if w.dim() <= 1:
                assert torch.count_nonzero(vec[name]) == 0, name  # biases zeroed by default
                continue
            dn = vec[name].reshape(w.shape[0], -1).norm(dim=1)
            wn = w.detach().reshape(w.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(dn, wn, rtol=1e-12, atol=0)
    assert params["0.weight"].dim() == 4 and params["3.weight"].dim() == 2  # conv and linear both covered
    assert not torch.equal(d.vectors[0]["0.weight"], d.vectors[1]["0.weight"])


def test_layer_norm_and_bias_options():
    model = mlp()
    w = dict(model.named_parameters())
    lay = L.random_directions(model, n=1, norm="layer", bias_bn="keep", seed=1).vectors[0]
    for n, p in w.items():
        torch.testing.assert_close(lay[n].norm(), p.detach().norm(), rtol=1e-12, atol=0)
    keep = L.random_directions(model, n=1, norm="filter", bias_bn="keep", seed=1).vectors[0]
    torch.testing.assert_close(keep["0.bias"].abs(), w["0.bias"].detach().abs(), rtol=1e-12, atol=0)
    same = L.random_directions(model, n=1, norm="filter", bias_bn="weights", seed=1).vectors[0]
    assert torch.equal(same["0.bias"], w["0.bias"].detach())
    raw = L.random_directions(model, n=1, norm="none", bias_bn="keep", seed=1).vectors[0]
    g = torch.Generator().manual_seed(1)
    torch.testing.assert_close(
        raw["0.weight"], torch.randn(w["0.weight"].shape, generator=g, dtype=torch.float32).double()
    )


def test_direction_errors_name_the_argument():
    model = mlp()
    with pytest.raises(ValueError, match="norm must be one of 'filter', 'layer', 'none', got 'fitler'"):
        L.random_directions(model, norm="fitler")
    with pytest.raises(ValueError, match="bias_bn must be one of"):
        L.random_directions(model, bias_bn="no")
    with pytest.raises(ValueError, match="flat vector must be 1-D of length"):
        L.plane(model, F.cross_entropy, data(), (torch.zeros(3), torch.zeros(3)), steps=2)
    with pytest.raises(ValueError, match="lacks parameters of the model"):
        L.line(model, F.cross_entropy, data(), {"0.weight": torch.zeros(7, 5)}, steps=2)
    with pytest.raises(ValueError, match=r"steps must be an integer in \[2, inf\), got 1"):
        L.line(model, F.cross_entropy, data(), steps=1)
    with pytest.raises(ValueError, match=r"span must satisfy lo < hi"):
        L.line(model, F.cross_entropy, data(), span=(1, -1))
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        L.line(model, F.cross_entropy, data(), batch_norm="train")
    with pytest.raises(TypeError, match="one-shot iterator"):
        L.line(model, F.cross_entropy, iter([data()]), steps=2)
    with pytest.raises(ValueError, match=r"subset must be an integer in \[1, 40\], got 41"):
        L.line(model, F.cross_entropy, data(), steps=2, subset=41)


def test_goodfellow_line_endpoints_are_the_two_models_losses(tmp_path):
    a, b = mlp(seed=0), mlp(seed=1)
    x, y = data()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in b.state_dict().items()}, tmp_path / "b.safetensors")
    d = L.toward(a, tmp_path / "b.safetensors")
    res = L.line(a, F.cross_entropy, (x, y), d, span=(0, 1), steps=5)
    with torch.no_grad():
        la, lb = float(F.cross_entropy(a(x), y)), float(F.cross_entropy(b(x), y))
    np.testing.assert_allclose([res.loss[0], res.loss[-1]], [la, lb], rtol=1e-12)
    # the midpoint is the average model
    mid = copy.deepcopy(a)
    mid.load_state_dict({k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in a.state_dict()})
    with torch.no_grad():
        np.testing.assert_allclose(res.loss[2], float(F.cross_entropy(mid(x), y)), rtol=1e-12)
    assert res.directions["kind"] == "toward"


def test_plane_through_three_checkpoints():
    ms = [mlp(seed=s) for s in (0, 1, 2)]
    x, y = data()
    d = L.through(ms[0], *[m.state_dict() for m in ms])
    d1, d2 = (_flat(v) for v in d.vectors)
    torch.testing.assert_close(
        torch.stack([d1 @ d1, d2 @ d2, d1 @ d2]), torch.tensor([1.0, 1.0, 0.0]), atol=1e-12, rtol=0
    )
    pts = d.points
    flat = [torch.nn.utils.parameters_to_vector(m.parameters()).detach() for m in ms]
    for name, w in zip("abc", flat):
        cx, cy = pts[name]
        torch.testing.assert_close(flat[0] + cx * d1 + cy * d2, w, atol=1e-12, rtol=0)
    # the landscape centred at a passes through b: grid point (|b - a|, 0)
    bx = pts["b"][0]
    res = L.plane(ms[2], F.cross_entropy, (x, y), d, span=((0, bx), (-1, 1)), steps=(2, 3))
    with torch.no_grad():
        la, lb = (float(F.cross_entropy(m(x), y)) for m in ms[:2])
    np.testing.assert_allclose([res.loss[1, 0], res.loss[1, 1]], [la, lb], rtol=1e-12)
    with pytest.raises(ValueError, match="collinear"):
        L.through(ms[0], flat[0], flat[1], 2 * flat[1] - flat[0])


@pytest.mark.parametrize("center", [True, False])
def test_pca_trajectory_against_numpy_svd(center):
    model = mlp()
    rng = np.random.default_rng(0)
    n_par = sum(p.numel() for p in model.parameters())
    final = rng.normal(size=n_par)
    traj = [final + rng.normal(size=n_par) * (3.0 / (i + 1)) for i in range(7)] + [final]
    traj = [t + i * 0.5 * np.ones(n_par) / np.sqrt(n_par) for i, t in enumerate(traj)]
    d = L.pca(model, [torch.from_numpy(t) for t in traj], center=center)
    m = np.stack(traj) - traj[-1]
    mc = m - m.mean(0) if center else m
    _, s, vt = np.linalg.svd(mc, full_matrices=False)
    for k in range(2):
        ours = _flat(d.vectors[k]).numpy()
        sign = np.sign(ours @ vt[k])
        np.testing.assert_allclose(ours, sign * vt[k], atol=1e-10)
    v = np.stack([_flat(v).numpy() for v in d.vectors], axis=1)
    coords = m @ v
    np.testing.assert_allclose(np.array(d.points["trajectory"]), coords, atol=1e-10)
    np.testing.assert_allclose(d.off_plane, np.linalg.norm(m - coords @ v.T, axis=1), atol=1e-10)
    np.testing.assert_allclose(d.explained_variance, s[:2] ** 2 / np.sum(s**2), rtol=1e-10)
    np.testing.assert_allclose(_flat(d.origin).numpy(), traj[-1], atol=0)
    if center:
        from sklearn.decomposition import PCA

        sk = PCA(n_components=2).fit(m)
        np.testing.assert_allclose(np.abs(sk.components_), np.abs(v.T), atol=1e-10)
        np.testing.assert_allclose(sk.explained_variance_ratio_, d.explained_variance, rtol=1e-10)


def test_pca_plane_is_centred_at_final_and_records_trajectory():
    model = mlp()
    x, y = data()
    states = [mlp(seed=s).state_dict() for s in range(4)]
    d = L.pca(model, states)
    res = L.plane(model, F.cross_entropy, (x, y), d, steps=3)
    final = mlp(seed=3)
    with torch.no_grad():
        np.testing.assert_allclose(res.loss[1, 1], float(F.cross_entropy(final(x), y)), rtol=1e-12)
    assert len(res.points["trajectory"]) == 4 and res.off_plane.shape == (4,)
    assert res.directions["kind"] == "pca"


# ---------------------------------------------------------------------------------------------- files


class Interrupting:
    """cross_entropy that raises after a number of calls (a simulated crash mid-grid)."""

    def __init__(self, limit):
        self.limit = limit
        self.calls = 0

    def __call__(self, out, y):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return F.cross_entropy(out, y)


Interrupting.__qualname__ = "cross_entropy_i"


def test_resume_partial_grid_gives_identical_values(tmp_path):
    model = mlp()
    x, y = data()
    path = tmp_path / "grid.npz"
    full = L.plane(model, F.cross_entropy, (x, y), steps=6, seed=2)
    loss = Interrupting(limit=3)
    with pytest.raises(KeyboardInterrupt):
        L.plane(model, loss, (x, y), steps=6, seed=2, out=path, max_memory_mb=0.002, vectorize=True)
    partial = L.Landscape.load(path)
    assert 0 < partial.filled.sum() < 36 and np.isnan(partial.loss[~partial.filled]).all()
    loss.limit = 10**9
    resumed = L.plane(model, loss, (x, y), steps=6, seed=2, out=path, max_memory_mb=0.002, vectorize=True)
    assert resumed.complete and resumed.info["points_computed"] == 36 - partial.filled.sum()
    np.testing.assert_array_equal(resumed.loss[partial.filled], partial.loss[partial.filled])
    np.testing.assert_allclose(resumed.loss, full.loss, rtol=1e-13)
    again = L.Landscape.load(path)
    np.testing.assert_array_equal(again.loss, resumed.loss)
    assert json.loads((tmp_path / "grid.json").read_text())["seed"] == 2
    with pytest.raises(
        ValueError, match=r"exists but was computed with different settings.*seed: file has 2, this call has 3"
    ):
        L.plane(model, loss, (x, y), steps=6, seed=3, out=path)
    with pytest.raises(ValueError, match=r"info.grid"):
        L.plane(model, loss, (x, y), steps=5, seed=2, out=path)


def test_save_load_roundtrip(tmp_path):
    model = mlp()
    d = L.pca(model, [mlp(seed=s).state_dict() for s in range(3)])
    res = L.plane(model, F.cross_entropy, data(), d, steps=3, metric=L.accuracy)
    p = res.save(tmp_path / "sub" / "pl.npz")
    back = L.Landscape.load(p)
    for f in ("x", "y", "loss", "metric", "filled", "off_plane"):
        np.testing.assert_array_equal(getattr(back, f), getattr(res, f))
    assert back.directions == res.directions and back.points == res.points and back.info == res.info
    assert [f.name for f in tmp_path.joinpath("sub").iterdir() if f.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    for f in (p, p.with_suffix(".json")):  # the usual permissions, not a temporary file's 0600
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(ValueError, match="must end in .npz"):
        res.save(tmp_path / "x.txt")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a ravine landscape file"):
        L.Landscape.load(tmp_path / "other.npz")


# ---------------------------------------------------------------------------------------------- figures, CLI


def test_figures_render_and_reject_bad_input(tmp_path):
    from PIL import Image

    from ravine.plots import landscape as P

    model = mlp()
    x, y = data()
    pl = L.plane(model, F.cross_entropy, (x, y), steps=5, metric=L.accuracy)
    ln = L.line(model, F.cross_entropy, (x, y), steps=5)
    paths = [
        P.contour(pl, path=tmp_path / "f.png"),
        P.contour(pl, filled=False, log=True, path=tmp_path / "c.png"),
        P.contour(pl, which="metric", path=tmp_path / "m.png"),
        P.surface(pl, log=True, path=tmp_path / "s.png"),
        P.curves([ln, (ln.x, ln.loss * 2)], labels=["a", "b"], log=True, path=tmp_path / "l.png"),
    ]
    for p in paths:
        w, h = Image.open(p).size
        assert w > 300 and h > 200
    with pytest.raises(ValueError, match="expected a plane landscape, got kind='line'"):
        P.contour(ln)
    with pytest.raises(ValueError, match="curves draws line landscapes; item 0 is a 'plane'"):
        P.curves([pl])
    with pytest.raises(ValueError, match="needs a landscape computed with a metric"):
        P.contour(L.plane(model, F.cross_entropy, (x, y), steps=3), which="metric")


def test_cli_on_a_saved_run(tmp_path, capsys):
    from ravine.cli import main
    from ravine.experiments import TrainConfig, train

    run = train(
        TrainConfig(data="digits", model="mlp", model_kwargs={"hidden": [8]}, steps=3, batch_size=64, eval_every=0),
        run_dir=tmp_path / "run",
    )
    fig, grid = tmp_path / "p.png", tmp_path / "p.npz"
    rc = main(
        [
            "landscape",
            str(run.path),
            "--plane",
            "--steps",
            "3",
            "--subset",
            "100",
            "--out",
            str(fig),
            "--save",
            str(grid),
        ]
    )
    assert rc == 0 and fig.exists()
    res = L.Landscape.load(grid)
    assert res.complete and res.data["n"] == 100 and res.directions["norm"] == "filter"
    # the saved value at the centre is the loaded model's loss on the same 100 samples
    model = run.load_model()
    xs, ys = run.load_dataset().eval_data("train")
    idx = torch.tensor(res.data["indices"])
    with torch.no_grad():
        expect = float(F.cross_entropy(model(xs[idx]), ys[idx]))
    np.testing.assert_allclose(res.loss[1, 1], expect, rtol=1e-5)
    ckpt = run.path / "checkpoints" / f"step_{run.checkpoints[-1]:08d}"
    rc = main(["landscape", str(ckpt), "--line", "--steps", "3", "--per-point", "--out", str(tmp_path / "l.png")])
    assert rc == 0 and (tmp_path / "l.png").exists()
    assert main(["landscape", str(tmp_path), "--out", str(fig)]) == 2
    assert "must be a ravine run directory" in capsys.readouterr().err


def test_default_evaluates_per_point_on_cpu_and_equals_vmap():
    """``vectorize=None`` picks one pass per point on CPU (measured faster there); same numbers as vmap."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x, y = data()
    d = L.random_directions(model, seed=1)
    auto = L.plane(model, F.cross_entropy, (x, y), d, steps=4)
    batched = L.plane(model, F.cross_entropy, (x, y), d, steps=4, vectorize=True)
    assert auto.info["path"] == "loop" and batched.info["path"] == "vmap"
    np.testing.assert_allclose(auto.loss, batched.loss, rtol=1e-12)
    with pytest.raises(TypeError, match="vectorize must be True, False or None"):
        L.plane(model, F.cross_entropy, (x, y), d, steps=2, vectorize="yes")
