"""Parity with torch.optim: the contract of ravine's torch-compatible classes.

Every option torch offers on SGD, Adam, AdamW, RMSprop and Adagrad, 100 steps on a real model
(an MLP on scikit-learn's digits) in float64, two param groups with different hyperparameters,
and a torch LR scheduler: parameters and optimizer state must match torch to 1e-10.
"""

import itertools

import pytest
import torch

import ravine.optim as ro

STEPS = 100


def make_model():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 24), torch.nn.Tanh(), torch.nn.Linear(24, 10)
    ).double()


def groups(model, kw):
    """Weights with the options under test; biases with a different lr (and wd where present)."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    second = {"params": biases, "lr": kw["lr"] * 0.5}
    if kw.get("weight_decay"):
        second["weight_decay"] = 0.0
    return [{"params": weights}, second]


def run(opt_cls, kw, digits, scheduler="step"):
    model = make_model()
    opt = opt_cls(groups(model, kw), **kw)
    if scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=25, gamma=0.5)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    X, y = digits
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        idx = torch.randint(0, len(X), (64,), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
    return model, opt


def assert_same(torch_cls, ravine_cls, kw, digits, scheduler="step"):
    m1, o1 = run(torch_cls, kw, digits, scheduler)
    m2, o2 = run(ravine_cls, kw, digits, scheduler)
    for (name, a), b in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-10), (name, (a - b).abs().max().item())
    # the state too, under torch's names
    for a, b in zip(m1.parameters(), m2.parameters()):
        s1, s2 = o1.state[a], o2.state[b]
        for key, v in s1.items():
            if key == "step":
                assert int(v) == int(s2["step"])
            elif v is not None and torch.is_tensor(v):
                assert torch.allclose(v, s2[key], rtol=0, atol=1e-10), key
    # and the model actually moved (a test that cannot fail is no test)
    fresh = make_model()
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(fresh.parameters(), m2.parameters()))


def _grid(**axes):
    keys = list(axes)
    for values in itertools.product(*axes.values()):
        yield dict(zip(keys, values))


SGD_GRID = [
    kw for kw in _grid(lr=[0.05], momentum=[0.0, 0.9], dampening=[0.0, 0.3], nesterov=[False, True],
                       weight_decay=[0.0, 1e-2], maximize=[False, True])
    if not (kw["nesterov"] and (kw["momentum"] == 0 or kw["dampening"] != 0))
]


@pytest.mark.parametrize("kw", SGD_GRID, ids=str)
def test_sgd(kw, digits):
    if kw["maximize"]:
        kw = {**kw, "lr": 1e-3}  # ascent diverges quickly; keep numbers finite for 120 steps
    assert_same(torch.optim.SGD, ro.SGD, kw, digits)


@pytest.mark.parametrize(
    "kw",
    list(_grid(lr=[3e-3], weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True],
               decoupled_weight_decay=[False, True])),
    ids=str,
)
def test_adam(kw, digits):
    if kw["maximize"]:
        kw = {**kw, "lr": 1e-4}
    assert_same(torch.optim.Adam, ro.Adam, {**kw, "betas": (0.8, 0.99), "eps": 1e-6}, digits)


@pytest.mark.parametrize(
    "kw", list(_grid(lr=[3e-3], weight_decay=[0.0, 0.05], amsgrad=[False, True], maximize=[False, True])),
    ids=str,
)
def test_adamw(kw, digits):
    if kw["maximize"]:
        kw = {**kw, "lr": 1e-4}
    assert_same(torch.optim.AdamW, ro.AdamW, kw, digits, scheduler="cosine")


def test_adamw_defaults(digits):
    assert_same(torch.optim.AdamW, ro.AdamW, {"lr": 1e-3}, digits)


@pytest.mark.parametrize(
    "kw",
    list(_grid(lr=[2e-3], alpha=[0.9], momentum=[0.0, 0.5], centered=[False, True], weight_decay=[0.0, 1e-2],
               maximize=[False, True])),
    ids=str,
)
def test_rmsprop(kw, digits):
    if kw["maximize"]:
        kw = {**kw, "lr": 1e-4}
    assert_same(torch.optim.RMSprop, ro.RMSprop, kw, digits)


@pytest.mark.parametrize(
    "kw",
    list(_grid(lr=[0.05], lr_decay=[0.0, 0.01], weight_decay=[0.0, 1e-2], initial_accumulator_value=[0.0, 0.1],
               maximize=[False, True])),
    ids=str,
)
def test_adagrad(kw, digits):
    if kw["maximize"]:
        kw = {**kw, "lr": 1e-3}
    assert_same(torch.optim.Adagrad, ro.Adagrad, kw, digits, scheduler="cosine")


def test_closure_matches_torch(digits):
    """step(closure) re-evaluates the loss, as torch's does."""
    X, y = digits
    out = []
    for cls in (torch.optim.SGD, ro.SGD):
        model = make_model()
        opt = cls(model.parameters(), lr=0.1, momentum=0.9)
        losses = []
        for _ in range(20):
            def closure(opt=opt, model=model):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(X), y)
                loss.backward()
                return loss
            losses.append(opt.step(closure).item())
        out.append(losses)
    assert out[0] == pytest.approx(out[1], abs=1e-12)
    assert out[1][-1] < out[1][0]
