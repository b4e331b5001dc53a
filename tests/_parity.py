"""The harness the optimizer parity tests share: 100 steps of an MLP on scikit-learn's digits in
float64 (the ``digits`` fixture of ``conftest.py``), two param groups (weights; biases at half the
learning rate, no weight decay) and a torch ``StepLR``, so a ravine optimizer and its reference see
the same batches and learning rates."""

import shutil

import pytest
import torch

STEPS = 100

#: torch.compile on CPU needs a C++ compiler (inductor); skip the compiled tests without one.
needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None and not torch.cuda.is_available(),
    reason="torch.compile on CPU needs a C++ compiler",
)


def make_model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.Tanh(), torch.nn.Linear(24, 10)).double()


def groups(model, lr):
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, "lr": lr * 0.5, "weight_decay": 0.0}]


def train(model, opt, digits, steps=STEPS):
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=25, gamma=0.5)
    X, y = digits
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
        sched.step()
    return model


def assert_models_close(a, b, atol=1e-10):
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(x, y, rtol=0, atol=atol), (name, (x - y).abs().max().item())
