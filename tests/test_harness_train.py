"""ravine.experiments.train against hand-written torch loops, torch's schedulers and dense Hessians."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss

from ravine.experiments import Run, RunStore, TrainConfig, data, evaluate, load_model, models, train


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = dict(data="parity", data_kwargs={"n_bits": 6, "k": 2, "n_train": 64, "n_test": 32})


def _cfg(**kw) -> TrainConfig:
    base = dict(
        **SMALL,
        model="mlp",
        model_kwargs={"hidden": [8]},
        optimizer="torch.SGD",
        optimizer_kwargs={"lr": 0.1},
        steps=20,
        batch_size=None,
        eval_every=10,
    )
    base.update(kw)
    return TrainConfig(**base)


def _reference(cfg: TrainConfig, clip: float | None = None, scheduler=None, clip_value: float | None = None):
    """A plain torch loop (full batch, torch.optim.SGD) written independently of the harness."""
    ds = data.load(cfg.data, seed=cfg.data_seed, **cfg.data_kwargs)
    torch.manual_seed(cfg.seed)
    m = models.build("mlp", in_features=ds.dims["in_features"], n_classes=ds.dims["n_classes"], hidden=[8])
    opt = torch.optim.SGD(m.parameters(), lr=cfg.optimizer_kwargs["lr"])
    sched = scheduler(opt) if scheduler else None
    out = []
    for _ in range(cfg.steps):
        lr = opt.param_groups[0]["lr"]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(ds.x_train), ds.y_train)
        loss.backward()
        clipped = None
        if clip is not None:
            gn = float(torch.nn.utils.clip_grad_norm_(m.parameters(), clip))
            post = float(torch.nn.utils.get_total_norm([p.grad for p in m.parameters()]))
        elif clip_value is not None:
            gn = float(torch.nn.utils.get_total_norm([p.grad for p in m.parameters()]))
            clipped = any(bool((p.grad.abs() > clip_value).any()) for p in m.parameters())
            torch.nn.utils.clip_grad_value_(m.parameters(), clip_value)
            post = float(torch.nn.utils.get_total_norm([p.grad for p in m.parameters()]))
        else:
            gn = post = float(torch.nn.utils.get_total_norm([p.grad for p in m.parameters()]))
        before = torch.cat([p.detach().flatten().clone() for p in m.parameters()])
        opt.step()
        after = torch.cat([p.detach().flatten() for p in m.parameters()])
        ratio = float((after - before).norm() / before.norm())
        out.append(
            {"loss": float(loss.detach()), "lr": lr, "grad_norm": gn, "post": post, "ratio": ratio, "clipped": clipped}
        )
        if sched:
            sched.step()
    return out, m, ds


def test_full_batch_sgd_matches_a_plain_torch_loop(tmp_path):
    cfg = _cfg()
    run = train(cfg, tmp_path / "r", progress=False)
    ref, m, ds = _reference(cfg)
    got = run.metrics
    assert len(got) == cfg.steps
    for g, r in zip(got, ref):
        assert g["loss"] == pytest.approx(r["loss"], rel=1e-6)
        assert g["lr"] == pytest.approx(r["lr"])
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-5)
        assert g["update_ratio"] == pytest.approx(r["ratio"], rel=1e-4)
        assert g["clipped"] is False and g["skipped"] is False
    # The final model equals the reference model; evaluations equal scikit-learn's metrics of it.
    final = load_model(run.path)
    for a, b in zip(final.parameters(), m.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        prob = torch.softmax(m(ds.x_test), -1).numpy()
    ev = run.evals[-1]
    assert ev["step"] == cfg.steps
    assert ev["test_loss"] == pytest.approx(log_loss(ds.y_test.numpy(), prob, labels=[0, 1]), rel=1e-4)
    assert ev["test_acc"] == pytest.approx(accuracy_score(ds.y_test.numpy(), prob.argmax(1)))
    assert [e["step"] for e in run.evals] == [0, 10, 20]


def test_clipping_statistics_match_clip_grad_norm(tmp_path):
    cfg = _cfg(clip={"kind": "norm", "max_norm": 0.05}, optimizer_kwargs={"lr": 0.5})
    run = train(cfg, tmp_path / "r", progress=False)
    ref, _, _ = _reference(cfg, clip=0.05)
    flags = []
    for g, r in zip(run.metrics, ref):
        assert g["loss"] == pytest.approx(r["loss"], rel=1e-5)
        assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-5)
        assert g["grad_norm_clipped"] == pytest.approx(r["post"], rel=1e-5)
        assert g["clipped"] == (r["grad_norm"] > 0.05)
        flags.append(g["clipped"])
    assert any(flags)


@pytest.mark.parametrize("optimizer", ["torch.SGD", "sgd", "ravine.SGD"])
def test_clipping_through_every_kind_of_optimizer_matches_torch(tmp_path, optimizer):
    # Norm clipping runs in ravine's chain ("sgd") or on the gradients in place (torch's and ravine's
    # torch-compatible classes); value clipping always in place. All against torch's own functions.
    for kind, clip in (("norm", {"kind": "norm", "max_norm": 0.05}), ("value", {"kind": "value", "clip": 0.02})):
        cfg = _cfg(clip=clip, optimizer=optimizer, optimizer_kwargs={"lr": 0.5})
        run = train(cfg, tmp_path / f"{optimizer}-{kind}", progress=False)
        ref, _, _ = _reference(cfg, **({"clip": 0.05} if kind == "norm" else {"clip_value": 0.02}))
        flags = []
        for g, r in zip(run.metrics, ref):
            assert g["loss"] == pytest.approx(r["loss"], rel=1e-5)
            assert g["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-5)
            assert g["grad_norm_clipped"] == pytest.approx(r["post"], rel=1e-5)
            assert g["clipped"] == (r["grad_norm"] > 0.05 if kind == "norm" else r["clipped"])
            flags.append(g["clipped"])
        assert any(flags) and not g["skipped"]


def test_schedule_sets_lr_like_torch_cosine_annealing(tmp_path):
    steps = 15
    cfg = _cfg(steps=steps, schedule="cosine_decay", schedule_kwargs={"peak": 0.1, "total_steps": steps, "final": 0.01})
    run = train(cfg, tmp_path / "r", progress=False)
    ref, _, _ = _reference(
        cfg, scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0.01)
    )
    for g, r in zip(run.metrics, ref):
        assert g["lr"] == pytest.approx(r["lr"], rel=1e-9)
        assert g["loss"] == pytest.approx(r["loss"], rel=1e-5)


def test_ravine_adam_via_config_matches_torch_adam(tmp_path):
    # With a schedule too: the harness writes group["lr"], which both optimizers must follow.
    sched = {"peak": 0.05, "warmup_steps": 5, "total_steps": 20}
    kw = dict(optimizer_kwargs={"lr": 0.05}, batch_size=16, schedule="warmup_cosine", schedule_kwargs=sched)
    a = train(_cfg(optimizer="adam", **kw), tmp_path / "a", progress=False)
    b = train(_cfg(optimizer="torch.Adam", **kw), tmp_path / "b", progress=False)
    np.testing.assert_allclose(a.columns()["loss"], b.columns()["loss"], rtol=1e-5)
    assert a.metrics[0]["lr"] == pytest.approx(0.01) and a.metrics[4]["lr"] == pytest.approx(0.05)
    assert "ravine.optim" in a.metadata["optimizer_class"] and "torch.optim" in b.metadata["optimizer_class"]


def test_layer_lr_decay_scales_each_layers_first_update(tmp_path):
    d, lr = 0.25, 0.2
    cfg = _cfg(steps=1, layer_lr_decay=d, optimizer_kwargs={"lr": lr})
    run = train(cfg, tmp_path / "r", progress=False)
    # m0: the initial weights (one reference step with lr 0); the first gradient computed by hand.
    _, m0, ds = _reference(cfg.replace(optimizer_kwargs={"lr": 0.0}))
    m0.zero_grad()
    torch.nn.functional.cross_entropy(m0(ds.x_train), ds.y_train).backward()
    m1 = load_model(run.path)
    groups = models.layer_groups(m0)
    p0, p1 = dict(m0.named_parameters()), dict(m1.named_parameters())
    for i, names in enumerate(groups):
        for n in names:
            want = p0[n].detach() - lr * d ** (len(groups) - 1 - i) * p0[n].grad
            torch.testing.assert_close(p1[n], want)
    assert run.metrics[0]["lr"] == pytest.approx(lr)  # the base learning rate is recorded


def test_divergence_ends_the_run_and_is_reused(tmp_path):
    cfg = _cfg(optimizer_kwargs={"lr": 1e4}, steps=200)
    run = train(cfg, tmp_path / "r", progress=False)
    assert run.status == "diverged"
    k = run.status_info["diverged_at"]
    assert 1 < k < 200 and run.metrics[-1]["step"] == k and run.metrics[-1]["diverged"] is True
    assert not math.isfinite(run.metrics[-1]["loss"])
    assert run.checkpoints[-1] == k - 1  # the weights that gave the non-finite loss are kept
    calls = []
    again = train(cfg, tmp_path / "r", progress=False, on_step=calls.append)
    assert again.status == "diverged" and calls == []  # reused, not retrained
    # A finite loss above divergence_loss also counts.
    run2 = train(_cfg(divergence_loss=0.6, steps=50, optimizer_kwargs={"lr": 0.5}), tmp_path / "r2", progress=False)
    assert run2.status == "diverged" and run2.metrics[-1]["loss"] > 0.6


@pytest.mark.parametrize("kind", ["torch", "ravine-clipped"])
def test_nonfinite_gradients_are_skipped(tmp_path, kind):
    # torch's optimizer is not called; ravine's (clipping in its chain) skips the step itself.
    import ravine.optim as ro

    state = {"calls": 0}

    def factory(model):
        p = next(model.parameters())

        def hook(g):
            state["calls"] += 1
            return g * float("nan") if state["calls"] == 3 else g

        p.register_hook(hook)
        return torch.optim.SGD(model.parameters(), lr=0.1) if kind == "torch" else ro.sgd(0.1)

    clip = None if kind == "torch" else {"kind": "norm", "max_norm": 1.0}
    cfg = _cfg(steps=6, optimizer=f"sgd-with-nan-hook-{kind}", clip=clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ravine's optimizer warns when it skips
        run = train(cfg, tmp_path / "r", progress=False, optimizer_factory=factory)
    recs = run.metrics
    assert math.isnan(recs[2]["grad_norm"]) and recs[2]["clipped"] is False
    assert [r["skipped"] for r in recs] == [False, False, True, False, False, False]
    assert recs[2]["update_ratio"] == 0.0 and recs[-1]["skipped_total"] == 1
    assert recs[3]["loss"] == recs[2]["loss"]  # the skipped step left the weights unchanged
    assert run.status == "completed"


def test_large_finite_gradients_are_stepped_as_torch_steps_them(tmp_path):
    """A gradient of finite values whose squares overflow the dtype (global norm inf, as torch's
    ``get_total_norm`` says too) is no inf or nan: torch.optim steps it, and so does the harness,
    with torch's optimizer or ravine's, to the same weights."""
    import ravine.optim as ro

    finals = {}
    for kind in ("torch", "ravine"):
        state = {"calls": 0}

        def factory(model, kind=kind, state=state):
            p = next(model.parameters())
            finals[kind] = p

            def hook(g):
                state["calls"] += 1
                return torch.full_like(g, torch.finfo(g.dtype).max / 10) if state["calls"] == 3 else g

            p.register_hook(hook)
            return torch.optim.SGD(model.parameters(), lr=0.1) if kind == "torch" else ro.sgd(0.1)

        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # nothing is skipped, nothing to warn about
            run = train(_cfg(steps=3, optimizer=f"sgd-huge-{kind}"), tmp_path / kind, progress=False,
                        optimizer_factory=factory)
        recs = run.metrics
        assert [r["skipped"] for r in recs] == [False, False, False] and run.status == "completed"
        assert recs[2]["grad_norm"] == math.inf
        assert float(finals[kind].detach().abs().max()) > torch.finfo(finals[kind].dtype).max / 1000
    assert torch.equal(finals["torch"].detach(), finals["ravine"].detach())


def test_optimizer_factory_may_return_a_ravine_transform(tmp_path):
    import ravine.optim as ro

    run = train(
        _cfg(steps=5, optimizer="ro-chain"),
        tmp_path / "r",
        progress=False,
        optimizer_factory=lambda model: ro.chain(ro.clip_by_global_norm(1e-3), ro.sgd(0.1)),
    )
    assert all(r["opt_clipped"] for r in run.metrics)
    for r in run.metrics:
        assert r["opt_grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-5)
    with pytest.raises(TypeError, match="optimizer_factory must return a torch.optim.Optimizer or a ravine"):
        train(_cfg(steps=5, optimizer="bad"), tmp_path / "bad", progress=False, optimizer_factory=lambda m: 3)


def test_branching_from_a_checkpoint_continues_the_parent_exactly(tmp_path):
    parent_cfg = _cfg(
        steps=20,
        batch_size=16,
        optimizer="torch.Adam",
        optimizer_kwargs={"lr": 0.01},
        checkpoint_every=5,
        keep_checkpoints=0,
    )
    parent = train(parent_cfg, tmp_path / "parent", progress=False)
    branch_cfg = parent_cfg.replace(init_from={"run": str(parent.path), "step": 10, "restore": "all"})
    branch = train(branch_cfg, tmp_path / "branch", progress=False)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time", "wall")} for r in rs]  # noqa: E731
    assert strip(branch.records) == strip(parent.records)


def test_init_from_weights_loads_matching_layers_only(tmp_path):
    pre = train(_cfg(steps=5), tmp_path / "pre", progress=False)
    ft_cfg = _cfg(
        steps=1,
        optimizer_kwargs={"lr": 0.0},
        model_kwargs={"hidden": [8], "n_classes": 3},
        init_from={"run": str(pre.path)},
    )
    ft = train(ft_cfg, tmp_path / "ft", progress=False)
    a, b = pre.load_model().state_dict(), ft.load_model().state_dict()
    torch.testing.assert_close(a["net.0.weight"], b["net.0.weight"])
    assert b["net.2.weight"].shape == (3, 8)  # the new head keeps its own initialization


def test_hessian_top_eigenvalue_matches_dense_eigh(tmp_path):
    pytest.importorskip("ravine.curvature")
    cfg = _cfg(
        steps=10,
        dtype="float64",
        hessian_every=5,
        hessian_samples=40,
        checkpoint_every=5,
        keep_checkpoints=0,
        model_kwargs={"hidden": [4]},
    )
    run = train(cfg, tmp_path / "r", progress=False)
    assert [h["step"] for h in run.hessian] == [0, 5, 10]
    ds = data.load(cfg.data, seed=cfg.data_seed, **cfg.data_kwargs)
    x, y = ds.x_train[:40].double(), ds.y_train[:40]
    for h in run.hessian[1:]:
        model = load_model(run.path, step=h["step"])
        assert h["top_eig"] == pytest.approx(_dense_top_eig(model, x, y), rel=1e-3)


def _dense_top_eig(model, x, y) -> float:
    """Largest eigenvalue of the dense Hessian (torch.autograd.functional.hessian + eigvalsh)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def f(w):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            parts[n] = w[i : i + k].view(s)
            i += k
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, parts, (x,)), y)

    dense = torch.autograd.functional.hessian(f, flat)
    return float(torch.linalg.eigvalsh(dense)[-1])


def test_tensorboard_without_the_package_warns_and_trains(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(RuntimeWarning, match=r"tensorboard=True but the 'tensorboard' package is not installed"):
            run = train(_cfg(steps=3, tensorboard=True), tmp_path / "r", progress=False)
        assert run.status == "completed"
    else:  # pragma: no cover - depends on the environment
        run = train(_cfg(steps=3, tensorboard=True), tmp_path / "r", progress=False)
        assert any((run.path / "tensorboard").iterdir())


def test_run_store_reuse_restart_and_config_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("RAVINE_RUNS", str(tmp_path / "store"))
    cfg = _cfg(steps=4)
    run = train(cfg, progress=False)
    assert run.path.parent == tmp_path / "store" and run.path.name.endswith(cfg.run_id())
    assert RunStore().get(cfg).path == run.path and RunStore().is_done(cfg)
    assert cfg.replace(tensorboard=True).run_id() == cfg.run_id()  # not part of the id
    assert cfg.replace(seed=1).run_id() != cfg.run_id()
    mtime = (run.path / "metrics.jsonl").stat().st_mtime_ns
    train(cfg, progress=False)
    assert (run.path / "metrics.jsonl").stat().st_mtime_ns == mtime  # reused
    again = train(cfg, run.path, resume=False, progress=False)
    assert again.status == "completed" and len(again.metrics) == 4
    with pytest.raises(ValueError, match=r"holds a run of a different config \(fields differing: \['steps'\]\)"):
        train(cfg.replace(steps=5), run.path, progress=False)


def test_evaluate_restores_training_mode_and_matches_sklearn():
    ds = data.load("digits")
    torch.manual_seed(0)
    mlp = models.build("mlp", in_features=64, n_classes=10, hidden=[8])
    m = torch.nn.Sequential(mlp, torch.nn.Dropout(0.5)).train()
    frozen = m[1].eval()  # one submodule in eval mode inside a model in training mode
    res = evaluate(m, ds, "test", batch_size=50)  # several batches
    assert m.training and not frozen.training  # each module's own mode comes back
    with torch.no_grad():
        prob = torch.softmax(m(ds.x_test).double(), -1).numpy()
    assert res["loss"] == pytest.approx(log_loss(ds.y_test.numpy(), prob, labels=list(range(10))), rel=1e-5)
    assert res["acc"] == pytest.approx(accuracy_score(ds.y_test.numpy(), prob.argmax(1)))


def test_config_json_round_trip_and_bad_input():
    cfg = _cfg(clip={"kind": "norm", "max_norm": 1.0}, schedule="constant", schedule_kwargs={"value": 0.1})
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["clip"] == {"kind": "norm", "max_norm": 1.0}
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['lr'\]"):
        TrainConfig.from_dict({"lr": 0.1})
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, inf\), got 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match=r"clip\['max_norm'\] must be in \(0, inf\), got -1"):
        TrainConfig(clip={"kind": "norm", "max_norm": -1})
    with pytest.raises(ValueError, match=r"clip must be None or a dict with kind in \('norm', 'value'\)"):
        TrainConfig(clip={"kind": "agc"})
    with pytest.raises(ValueError, match=r"dtype must be one of .*, got 'float8'"):
        TrainConfig(dtype="float8")
    with pytest.raises(TypeError, match=r"batch_size must be an int, got 0.5"):
        TrainConfig(batch_size=0.5)
    with pytest.raises(ValueError, match=r"init_from\['restore'\] must be one of 'weights', 'all', got 'optimizer'"):
        TrainConfig(init_from={"run": "x", "restore": "optimizer"})
    with pytest.raises(ValueError, match=r"unknown torch optimizer 'torch.Adamm'; valid: .*torch.Adam,"):
        from ravine.experiments.train import build_optimizer

        build_optimizer("torch.Adamm", [torch.zeros(1, requires_grad=True)])


def test_a_failure_inside_training_marks_the_run_failed_with_its_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ravine.curvature", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"ravine.curvature"):
        train(_cfg(steps=2, hessian_every=1), tmp_path / "r", progress=False)
    assert Run(tmp_path / "r").status == "failed"
    assert "ravine.curvature" in Run(tmp_path / "r").status_info["error"]


@pytest.mark.parametrize(
    "data_name,data_kwargs,model_name,model_kwargs",
    [
        ("digits", {}, "cnn", {"channels": [4, 8], "hidden": 16}),
        ("chars", {"block_size": 16, "eval_blocks": 4}, "transformer", {"n_layer": 1, "d_model": 16, "n_head": 2}),
        ("modadd", {"p": 7}, "transformer", {"n_layer": 1, "d_model": 16, "n_head": 2, "norm": "post"}),
        ("copy", {"length": 3, "delay": 4, "n_train": 40, "n_test": 8}, "lstm", {"hidden": 8}),
        ("copy", {"length": 3, "delay": 4, "n_train": 40, "n_test": 8}, "rnn", {"hidden": 8}),
    ],
)
def test_every_dataset_trains_with_its_models(tmp_path, data_name, data_kwargs, model_name, model_kwargs):
    cfg = dict(data=data_name, data_kwargs=data_kwargs, model=model_name, model_kwargs=model_kwargs)
    run = train(
        {
            **cfg,
            "steps": 3,
            "batch_size": 4,
            "eval_every": 3,
            "optimizer": "torch.SGD",
            "optimizer_kwargs": {"lr": 0.01},
        },
        tmp_path / "r",
        progress=False,
    )
    assert run.status == "completed" and len(run.metrics) == 3
    ds = run.load_dataset()
    first = run.metrics[0]["loss"]
    if model_name == "transformer":  # small initial weights: near-uniform predictions, loss ~ ln(vocab)
        assert first == pytest.approx(math.log(ds.dims["vocab_size"]), rel=0.05)
    assert math.isfinite(first) and 0.0 <= run.evals[-1]["test_acc"] <= 1.0
    model = run.load_model()
    assert evaluate(model, ds, "test")["loss"] == pytest.approx(run.evals[-1]["test_loss"], rel=1e-6)
