"""Property tests of the torch adapter over random chains (hypothesis, derandomized).

A chain is drawn from the primitives of ``ravine.optim`` (an optional leading clip, up to three middle
transforms, the learning rate last, a float or a ravine schedule) with random hyperparameters inside
``ravine.optim.CONSTRAINTS``; the
second of two param groups overrides a random subset of the numeric ones. Then:

- ``ro.Optimizer`` (unfused, and with ``fused=None``: the flat path where the chain allows it) equals the
  unfused reference: each group's chain ``chain.with_hyperparams(**group values)`` applied by hand to that
  group's parameters with ``init``/``update``/``apply_updates``, the leading ``clip_by_global_norm`` given
  torch's own norm over both groups (``torch.nn.utils.get_total_norm``, as the base module documents);
- a ``state_dict`` saved mid-run (through ``torch.save``/``torch.load(weights_only=True)``) and loaded into a
  fresh optimizer continues bit for bit like the uninterrupted run.
"""

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ravine.optim as ro
import ravine.schedules as rsch

PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

decay = st.floats(0.0, 0.999)
small = st.floats(1e-10, 1e-2)
#: values a group may override, by the hyperparameter's own name (a clashing name is "<part>.<name>")
OVERRIDES = {
    "lr": st.floats(0.0, 1.0),
    "eps": small,
    "weight_decay": st.floats(0.0, 0.1),
    "b1": decay,
    "b2": decay,
    "factor": st.floats(-2.0, 2.0),
    "clip": st.floats(1e-3, 10.0),
    "clipping": st.floats(1e-3, 1.0),
    "initial_accumulator_value": st.floats(0.0, 1.0),
}


@st.composite
def _trace(draw):
    form = draw(st.sampled_from(["ema", "heavy_ball"]))
    nesterov = draw(st.booleans())
    beta = draw(st.floats(0.01, 0.999) if nesterov else decay)
    dampening = 0.0 if nesterov or form == "ema" else draw(st.floats(0.0, 1.0))
    return ro.trace(beta, form=form, dampening=dampening, nesterov=nesterov)


@st.composite
def _rms(draw):
    # centered with beta = 0 is s - m^2 = g^2 - g^2: zero up to rounding, so sqrt(-tiny) is NaN (in
    # torch.optim.RMSprop(alpha=0, centered=True) as here); from beta = 0.01 on the variance is >= 0.0099 g^2
    centered = draw(st.booleans())
    beta = draw(st.floats(0.01, 0.999) if centered else decay)
    return ro.scale_by_rms(beta, draw(small), centered)


MIDDLE = [
    _trace(),
    _rms(),
    st.builds(ro.scale_by_adam, decay, decay, small, st.booleans(), st.booleans()),
    st.builds(ro.scale_by_rss, small, st.floats(0.0, 1.0)),
    st.builds(ro.add_l2, st.floats(0.0, 0.1)),
    st.builds(ro.add_decayed_weights, st.floats(0.0, 0.1)),
    st.builds(ro.scale, st.floats(-2.0, 2.0)),
    st.builds(ro.clip_by_value, st.floats(1e-3, 10.0)),
    st.builds(ro.clip_adaptive, st.floats(1e-3, 1.0)),
    st.just(ro.identity()),
]


@st.composite
def chains(draw):
    parts = []
    lead = draw(st.sampled_from(["none", "global", "per_group"]))
    if lead != "none":
        parts.append(ro.clip_by_global_norm(draw(st.floats(1e-3, 10.0)), per_group=lead == "per_group"))
    parts += draw(st.lists(st.one_of(*MIDDLE), max_size=3))
    # the learning rate: a float, or a ravine schedule (the adapter writes its value into group["lr"] each
    # step; the reference's transform resolves it at its own step count)
    lr = draw(st.floats(0.0, 1.0) | st.builds(rsch.warmup_cosine, st.floats(1e-3, 1.0), st.integers(0, 3),
                                               st.integers(3, 8)))
    parts.append(ro.scale_by_learning_rate(lr))
    chain = ro.chain(*parts)
    keys = sorted(k for k in chain.hyperparams if k.split(".")[-1] in OVERRIDES)
    chosen = draw(st.lists(st.sampled_from(keys), unique=True)) if keys else []
    overrides = {k: draw(OVERRIDES[k.split(".")[-1]]) for k in chosen}
    return chain, overrides


SHAPES = [[(3,), (2, 2)], [(4,), (2, 3)]]


def _params(seed: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for shapes in SHAPES]


def _grad(p: torch.Tensor, step: int) -> torch.Tensor:
    """A deterministic gradient field that changes with the position and the step."""
    return torch.sin(3 * p + step) + 0.5 * p


def _optimizer(values, chain, overrides, fused=False):
    params = [[torch.nn.Parameter(v.clone()) for v in group] for group in values]
    groups = [{"params": params[0]}, {"params": params[1], **overrides}]
    return params, ro.Optimizer(groups, chain, fused=fused)


def _run(params, opt, steps, first=0):
    for t in range(first, first + steps):
        for p in (p for group in params for p in group):
            p.grad = _grad(p.detach(), t)
        opt.step()


def _reference(values, chain, overrides, steps):
    """Each group's chain applied by hand: init, update on copies of the gradients, apply_updates."""
    params = [[v.clone() for v in group] for group in values]
    transforms = [chain, chain.with_hyperparams(**overrides) if overrides else chain]
    states = [t.init(ps) for t, ps in zip(transforms, params)]
    global_clip = chain.parts[0].name == "clip_by_global_norm" and not chain.parts[0].hyperparams["per_group"]
    for t in range(steps):
        grads = [[_grad(p, t) for p in group] for group in params]
        total = torch.nn.utils.get_total_norm([g for group in grads for g in group]) if global_clip else None
        for i, (tr, ps, gs) in enumerate(zip(transforms, params, grads)):
            if total is not None:
                states[i]["parts"][0]["total_norm"] = total
            updates, states[i] = tr.update(gs, states[i], ps)
            ro.apply_updates(ps, updates)
    return params


@pytest.mark.timeout(300)
@PROPERTY
@given(chains(), st.integers(1, 6), st.integers(0, 2**16), st.sampled_from([False, None]))
def test_optimizer_over_two_groups_equals_the_chain_applied_by_hand(drawn, steps, seed, fused):
    chain, overrides = drawn
    values = _params(seed)
    params, opt = _optimizer(values, chain, overrides, fused=fused)
    _run(params, opt, steps)
    want = _reference(values, chain, overrides, steps)
    for got_group, want_group in zip(params, want):
        for got, ref in zip(got_group, want_group):
            if fused is False:  # the same operations in the same order: the same bits
                torch.testing.assert_close(got.detach(), ref, rtol=0, atol=0, msg=lambda m: f"{chain} {overrides}: {m}")
            else:  # flat buffers: the same arithmetic up to the rounding of fused reductions
                torch.testing.assert_close(got.detach(), ref, rtol=1e-10, atol=1e-12)


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.timeout(300)
@PROPERTY
@given(chains(), st.integers(2, 6), st.data())
def test_state_dict_round_trip_continues_bit_for_bit(drawn, steps, data):
    chain, overrides = drawn
    cut = data.draw(st.integers(1, steps - 1))
    values = _params(7)
    params, opt = _optimizer(values, chain, overrides)
    _run(params, opt, steps)

    params_a, opt_a = _optimizer(values, chain, overrides)
    _run(params_a, opt_a, cut)
    saved = _round_trip({"opt": opt_a.state_dict(), "params": [[p.detach().clone() for p in g] for g in params_a]})
    params_b, opt_b = _optimizer(saved["params"], chain, overrides)
    opt_b.load_state_dict(saved["opt"])
    _run(params_b, opt_b, steps - cut, first=cut)
    for got_group, want_group in zip(params_b, params):
        for got, want in zip(got_group, want_group):
            assert torch.equal(got, want), (chain, overrides, cut)
