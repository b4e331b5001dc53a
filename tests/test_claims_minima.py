"""The ``local-minima`` and ``sharp-flat`` experiments: Dinh et al.'s rescaling against dense Hessians,
the verdicts on synthetic measurements on both sides of every threshold, and tiny end-to-end runs.

Oracles: the network's own outputs before and after rescaling; ``torch.autograd.functional.hessian``
of the loss over the flat parameters, and the closed form ``H' = S^-1 H S^-1`` of a linear change of
variables ``w' = S w``; Li et al.'s filter-normalized slices computed independently for each network.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from ravine.experiments.claims import STATUSES, Store, get
from ravine.experiments.claims import local_minima as lm
from ravine.experiments.claims import sharp_flat as sf
from ravine.experiments.models import build
from ravine.landscape import line, plane


def _mlp(seed=0, activation="relu"):
    torch.manual_seed(seed)
    return build("mlp", sizes=[5, 7, 6, 3], activation=activation).double()


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _dense_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(w):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            parts[n] = w[i : i + k].reshape(s)
            i += k
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def _scale_vector(model, alpha, layer=0):
    """The diagonal S of w' = S w for rescale_relu_layers: alpha on Linear `layer`, 1/alpha on the next weight."""
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    parts = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            i = linear.index(m)
            fw = alpha if i == layer else (1 / alpha if i == layer + 1 else 1.0)
            fb = alpha if i == layer else 1.0
            parts += [torch.full((m.weight.numel(),), fw, dtype=torch.float64)]
            parts += [torch.full((m.bias.numel(),), fb, dtype=torch.float64)]
    return torch.cat(parts)


@pytest.mark.parametrize("alpha,layer", [(0.3, 0), (2.5, 0), (4.0, 1)])
def test_rescaling_keeps_the_function_and_transforms_the_hessian(alpha, layer):
    model = _mlp()
    x, y = _data()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    other = sf.rescale_relu_layers(model, alpha, layer=layer)
    for n, p in model.named_parameters():  # the original is untouched
        assert torch.equal(p.detach(), before[n])
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=1e-12)
    h = _dense_hessian(model, x, y)
    h2 = _dense_hessian(other, x, y)
    s = _scale_vector(model, alpha, layer)
    predicted = h / s[:, None] / s[None, :]
    torch.testing.assert_close(h2, predicted, rtol=1e-8, atol=1e-10)
    lam, lam2 = torch.linalg.eigvalsh(h)[-1], torch.linalg.eigvalsh(h2)[-1]
    assert float(lam2) == pytest.approx(float(torch.linalg.eigvalsh(predicted)[-1]), rel=1e-8)
    assert abs(float(lam2 / lam) - 1) > 0.1  # raw sharpness moved although the function did not


def test_filter_normalized_slices_ignore_the_rescaling():
    model = _mlp(1)
    x, y = _data(40, 1)
    other = sf.rescale_relu_layers(model, 3.0)
    loss = nn.CrossEntropyLoss()
    a = line(model, loss, (x, y), "filter", steps=15, seed=3)
    b = line(other, loss, (x, y), "filter", steps=15, seed=3)
    np.testing.assert_allclose(b.loss, a.loss, rtol=1e-10, atol=1e-12)
    pa = plane(model, loss, (x, y), "filter", steps=7, seed=4)
    pb = plane(other, loss, (x, y), "filter", steps=7, seed=4)
    np.testing.assert_allclose(pb.loss, pa.loss, rtol=1e-10, atol=1e-12)
    # an unnormalized direction of the same draw does see the change
    c = line(model, loss, (x, y), "none", steps=15, seed=3)
    d = line(other, loss, (x, y), "none", steps=15, seed=3)
    assert np.max(np.abs(c.loss - d.loss)) > 1e-3


def test_rescaling_rejects_what_it_cannot_rescale():
    with pytest.raises(ValueError, match="alpha must be in"):
        sf.rescale_relu_layers(_mlp(), 0.0)
    with pytest.raises(ValueError, match="ReLU/LeakyReLU/Identity"):
        sf.rescale_relu_layers(_mlp(activation="tanh"), 2.0)
    with pytest.raises(ValueError, match="layer must be in"):
        sf.rescale_relu_layers(_mlp(), 2.0, layer=2)
    with pytest.raises(ValueError, match="no nn.Sequential"):
        sf.rescale_relu_layers(nn.Linear(3, 2), 2.0)


def test_matched_step_is_the_first_evaluation_at_or_below_the_target():
    assert sf.matched_step([0, 25, 50, 75], [2.3, 0.2, 0.05, 0.01], 0.05) == 50
    assert sf.matched_step([0, 25], [2.3, float("nan")], 0.05) is None
    assert sf.matched_step([0, 25, 50], [2.3, 0.2, 0.1], 0.05) is None


# ------------------------------------------------------------------------------- verdicts, synthetic


def _status(verdict, name):
    return next(c.status for c in verdict.checks if c.name == name)


LM_OK = {
    "init_train_loss": 2.3,
    "final_train_loss_max": 0.001,
    "test_loss_cv": 0.05,
    "test_acc_range": 0.005,
    "curve_barrier_rel_max": 0.01,
    "line_barrier_rel_max": 0.2,
    "hidden": [64, 64],
    "n_train": 1438,
    "seeds": 4,
    "pairs": 6,
}


def test_local_minima_verdict_supported_when_every_check_is():
    v = lm.verdict(LM_OK)
    assert v.status == "supported", v.checks
    assert "4 seeds" in v.scale and "1438 digits" in v.scale
    assert "20%" in v.explanation  # the straight line's barrier, from the measurements


@pytest.mark.parametrize(
    "key,bad,grey",
    [
        ("test_loss_cv", 0.25, 0.17),  # < 0.15, grey ±0.05
        ("test_acc_range", 0.04, 0.025),  # < 0.02, grey ±0.01
        ("curve_barrier_rel_max", 0.09, 0.06),  # < 0.05, grey ±0.025
    ],
)
def test_local_minima_verdict_each_threshold(key, bad, grey):
    v = lm.verdict({**LM_OK, key: bad})
    assert _status(v, key) == "not supported" and v.status == "not supported"
    v = lm.verdict({**LM_OK, key: grey})
    assert _status(v, key) == "inconclusive" and v.status == "inconclusive"


def test_local_minima_verdict_untrained_seeds_decide_nothing():
    v = lm.verdict({**LM_OK, "final_train_loss_max": 1.0, "test_loss_cv": 0.9})
    assert v.status == "inconclusive"
    assert all(c.status == "inconclusive" for c in v.checks)


SF_OK = {
    "all_matched": True,
    "target_train_loss": 0.05,
    "lambda_ratio": 2.0,
    "trace_ratio": 1.8,
    "gap_sharp_minus_flat": 0.03,
    "corr_loglambda_gap": 0.8,
    "dinh_lambda_factor": [10.0, 5.0],
    "dinh_slice_max_abs_diff": 0.0,
    "hidden": [64, 64],
    "n_train": 1438,
    "lr": 0.2,
    "batch_small": 16,
    "seeds": 3,
}


def test_sharp_flat_verdict_supported_when_every_check_is():
    v = sf.verdict(SF_OK)
    assert v.status == "supported", v.checks
    assert "'Small batches find flatter minima': supported" in v.explanation
    assert "'Flatter minima generalize better': supported" in v.explanation
    assert "10 and 5" in v.explanation and "3 seeds" in v.scale


@pytest.mark.parametrize(
    "key,bad,grey",
    [
        ("lambda_ratio", 0.6, 1.1),  # > 1, grey ±0.25
        ("trace_ratio", 0.7, 0.9),  # > 1, grey ±0.25
        ("gap_sharp_minus_flat", -0.02, 0.004),  # > 0, grey ±0.005
        ("corr_loglambda_gap", 0.1, 0.5),  # > 0.4, grey ±0.2
    ],
)
def test_sharp_flat_verdict_each_threshold(key, bad, grey):
    v = sf.verdict({**SF_OK, key: bad})
    assert _status(v, key) == "not supported" and v.status == "not supported"
    v = sf.verdict({**SF_OK, key: grey})
    assert _status(v, key) == "inconclusive" and v.status == "inconclusive"


def test_sharp_flat_verdict_reports_the_two_parts_separately():
    v = sf.verdict({**SF_OK, "gap_sharp_minus_flat": -0.04, "corr_loglambda_gap": -0.7})
    assert v.status == "not supported"
    assert "'Small batches find flatter minima': supported" in v.explanation
    assert "'Flatter minima generalize better': not supported" in v.explanation


def test_sharp_flat_verdict_unmatched_losses_decide_nothing():
    v = sf.verdict({**SF_OK, "all_matched": False, "lambda_ratio": 0.1})
    assert v.status == "inconclusive"
    assert all(c.status == "inconclusive" for c in v.checks)


# ------------------------------------------------------------------------------ tiny, end to end


@pytest.mark.parametrize("name", ["local-minima", "sharp-flat"])
def test_tiny_run_end_to_end(tmp_path, name):
    torch.set_num_threads(1)
    exp = get(name)
    store = Store(tmp_path, "tiny")
    result = exp.run(store, reuse=False)
    assert result.verdict.status in STATUSES
    assert result.figures and all(Path(f).stat().st_size > 10_000 for f in result.figures)
    assert result.reading and result.verdict.scale
    again = exp.run(store)  # reused from result.json
    assert again.verdict.status == result.verdict.status
    m = result.measurements
    if name == "local-minima":
        pair = next(iter(m["paths"]["pairs"].values()))
        assert pair["line"][0] == pytest.approx(pair["curve"][0], rel=1e-6)  # both start at solution a
        assert pair["line_barrier"] >= 0 and pair["curve_barrier"] >= 0
    else:
        assert m["dinh_output_max_abs_diff"] < 1e-5
        assert m["dinh_slice_max_abs_diff"] < 1e-4
        assert all(abs(f - 1) > 0.05 for f in m["dinh_lambda_factor"])  # raw sharpness moved


def test_experiments_are_registered():
    from ravine.experiments.claims import names

    assert "local-minima" in names() and "sharp-flat" in names()
    assert get("local-minima") is lm.EXPERIMENT and get("sharp-flat") is sf.EXPERIMENT
