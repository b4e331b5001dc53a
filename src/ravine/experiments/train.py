"""The training loop: one JSON-serializable config in, one resumable run directory out.

``train(config)`` builds the dataset (:mod:`.data`), the model (:mod:`.models`), the optimizer and the
schedule from a :class:`TrainConfig`, trains for ``config.steps`` optimizer steps and records, in the
run directory (:mod:`.runs`):

per step (``kind="step"``, step k = after the k-th update, k = 1..steps)
    ``loss`` (training loss of the batch, before the update), ``lr`` (the base learning rate used for
    the update: the schedule's value, or the first group's ``lr`` divided by its layer-wise factor),
    ``grad_norm`` (global L2 norm of all gradients before clipping),
    ``grad_norm_clipped`` (after clipping; equal to ``grad_norm`` without clipping), ``clipped``
    (bool), ``update_ratio`` (``||w_k - w_{k-1}|| / ||w_{k-1}||``, global L2 norms over all
    parameters), ``skipped`` (bool: gradients were non-finite, the update was not applied),
    ``skipped_total``, ``time`` (seconds of this step: batch, forward, backward, clipping, update) and
    ``wall`` (cumulative training seconds, continued across resumes). When ``config.clip`` is None
    and the optimizer clips inside its own chain (a factory's ``ravine.optim`` transform that clips),
    its ``opt.stats`` are also recorded as ``opt_grad_norm`` and ``opt_clipped``.
per evaluation (``kind="eval"``, at step 0, every ``eval_every`` steps and at the last step)
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` on the dataset's fixed evaluation sets
    (model in eval mode, no gradients). Accuracy is over non-ignored target positions.
Hessian (``kind="hessian"``, every ``hessian_every`` steps from step 0, when > 0)
    ``top_eig``: the largest Hessian eigenvalue of the training loss on a fixed subset of
    ``hessian_samples`` training samples, by ``ravine.curvature.hessian_eigenvalues``.
Sharpness (``kind="sharpness"``, every ``sharpness_every`` steps from step 0, when > 0)
    ``ravine.curvature.SharpnessMonitor``'s record on the same fixed samples, measured after update k:
    ``lambda_max``, ``eigenvalues`` (the ``sharpness_k`` largest), ``rule``, ``lr`` (the group's lr of
    update k), ``threshold``, ``sharpness`` (``lambda_max``, or Adam's preconditioned sharpness),
    ``ratio``, ``preconditioned``, ``hvps``, ``converged`` and ``time``. Its warm-start vectors are
    saved in each checkpoint, so a resumed run records what an uninterrupted one does.

Loss: ``config.loss`` (a key of :data:`LOSSES`): ``"cross_entropy"`` (every task's loss, :func:`loss_fn`) or
``"mse"`` (:func:`mse_loss`, the square loss on one-hot targets); it is the loss trained, evaluated
(``train_loss``, ``test_loss``) and measured by the Hessian and sharpness records.

Clipping and skipped steps, one implementation: ``config.clip`` is ``ravine.optim.clip_by_global_norm``
(``max_norm / (norm + 1e-6)``, torch's ``clip_grad_norm_`` arithmetic, over all parameters) or
``clip_by_value``. A ``ravine.optim.Optimizer`` built from a transform runs global-norm clipping first
in its chain and reports the norms in ``opt.stats``; it skips a step with non-finite gradients itself
(``nonfinite="skip"``, counted in ``opt.skipped_steps``). Value clipping, and any optimizer that takes
no chain (torch's), get the same transform applied to the gradients in place; a torch optimizer's step
is skipped when a gradient holds an inf or a nan, as ravine's (finite gradients whose global norm
overflows, e.g. float32 values of 1e20, are stepped as torch steps them unless ``config.clip`` clips them).

Divergence: a non-finite batch loss (or one above ``divergence_loss`` when set) ends the run with
status ``"diverged"`` at that step k (the step's record has the loss and ``diverged: true``; no update
is applied; the weights that gave that loss are saved as checkpoint k - 1). Non-finite gradients with
a finite loss skip that update (``skipped``) and training goes on.

Learning rate, one source of truth: without a schedule the optimizer's own ``group["lr"]`` is used
untouched (so a ``ravine.optim`` transform with a schedule inside, given through ``optimizer_factory``,
keeps its own). With ``config.schedule``, the harness writes ``group["lr"] = s(k - 1) * r_g`` before update k,
where ``s = ravine.schedules.get(schedule, **schedule_kwargs)`` gives the absolute learning rate
(step 0 = first update, as ravine.schedules defines) and ``r_g`` is group g's initial learning rate
divided by the base rate ``optimizer_kwargs["lr"]`` (1 for a single group; the layer-wise decay
factors with ``layer_lr_decay``).

Determinism and resume: model initialization uses ``torch.manual_seed(seed)``; batches come from the
sampler's own generator seeded with ``seed``; dropout uses torch's global generator seeded with
``seed + 1``. The whole run executes inside ``torch.random.fork_rng`` so the caller's RNG state is
untouched. A checkpoint holds weights (safetensors), optimizer state, sampler state, the global RNG
states and the loop counters; resuming truncates the metrics after the checkpoint's step and continues,
giving records identical to an uninterrupted run except ``time`` and ``wall``. "Identical" holds on
one machine with one number of torch threads (``torch.get_num_threads()``, recorded in
``metadata.json``): float reductions may round differently with another thread count.

One process trains a run at a time: :func:`train` holds ``fcntl.flock`` on ``run_dir/lock``, which
the kernel releases when the process ends, however it ends; a second trainer gets RuntimeError.

Reading order, as in nanoGPT's train.py: :func:`train` takes the lock; ``_setup`` builds data, model,
optimizer, schedule and sampler; ``_restore`` continues from a checkpoint or a parent run; then the
loop calls ``_step`` (one update and its record) and hands each record to a ``_Recorder``
(evaluations, Hessian, checkpoints, progress, status).
"""

from __future__ import annotations

import fcntl
import math
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ravine.optim as ro
from ravine import schedules
from ravine._nn import evaluation_mode, training_mode
from ravine.optim.base import finite_tensors, global_norm

from . import data as _data
from . import models as _models
from . import runs as _runs
from .config import DTYPES, TrainConfig

__all__ = [
    "TrainConfig",
    "train",
    "evaluate",
    "build_optimizer",
    "build_schedule",
    "loss_fn",
    "mse_loss",
    "LOSSES",
    "DTYPES",
]

loss_fn = _data.cross_entropy  # the loss of every task: cross-entropy over the last dim, ignore_index=-100


def mse_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The square loss on one-hot targets: ``0.5 ||logits - onehot(y)||^2`` summed over the last dim.

    Averaged over the positions whose target is not ``IGNORE_INDEX`` (as :func:`loss_fn`), with no
    data-dependent shapes (``torch.func`` differentiates it). Cohen et al. (2021) train with this loss
    to show the Edge of Stability: unlike cross-entropy, it does not flatten as the margins grow.

    Args:
        logits: model outputs ``(..., C)``.
        targets: class indices ``(...)``; ``IGNORE_INDEX`` positions do not count.

    Returns:
        The scalar mean loss.
    """
    keep = targets != _data.IGNORE_INDEX
    onehot = nn.functional.one_hot(targets.clamp_min(0), logits.shape[-1]).to(logits.dtype)
    per = 0.5 * (logits - onehot).square().sum(-1)
    w = keep.to(logits.dtype)
    return (per * w).sum() / w.sum().clamp_min(1)


LOSSES = {"cross_entropy": loss_fn, "mse": mse_loss}  # config.loss -> the function


# ------------------------------------------------------------------------------------------ builders


def resolve_model_kwargs(model: str, model_kwargs: dict[str, Any], dims: dict[str, int]) -> dict[str, Any]:
    """``model_kwargs`` with the dataset-determined arguments filled in from ``dims`` where missing."""
    accepted = _models.accepted_kwargs(model)
    out = dict(model_kwargs)
    if model == "mlp" and "sizes" in out:
        return out
    for k, v in dims.items():
        if k in accepted and k not in out:
            out[k] = v
    return out


def build_schedule(name: str | None, **params: Any) -> Callable[[int], float] | None:
    """``ravine.schedules.get(name, **params)`` (None for no schedule)."""
    return None if name is None else schedules.get(name, **params)


def _param_groups(model: nn.Module, lr: float | None, layer_lr_decay: float | None) -> list[dict[str, Any]] | list:
    params = [p for p in model.parameters() if p.requires_grad]
    if layer_lr_decay is None:
        return params
    if lr is None:
        raise ValueError("layer_lr_decay needs optimizer_kwargs['lr']")
    named = dict(model.named_parameters())
    layers = _models.layer_groups(model)  # input to output
    return [
        {
            "params": [named[k] for k in names if named[k].requires_grad],
            "lr": lr * layer_lr_decay ** (len(layers) - 1 - i),
        }
        for i, names in enumerate(layers)
    ]


def build_optimizer(name: str, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
    """An optimizer over ``params`` (parameters or param-group dicts) from its config name.

    ``"torch.NAME"``: ``torch.optim.NAME(params, **kwargs)``; ``"ravine.NAME"``: the torch-compatible
    class ``ravine.optim.NAME``; any other name: ``ravine.optim.Optimizer(params, ravine.optim.get(name,
    **kwargs))`` (the chapter's forms). ValueError for unknown names (listing the valid ones).
    """
    if name.startswith("torch."):
        cls = getattr(torch.optim, name[6:], None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            valid = sorted(
                n
                for n in dir(torch.optim)
                if isinstance(getattr(torch.optim, n), type)
                and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
                and n != "Optimizer"
            )
            raise ValueError(f"unknown torch optimizer {name!r}; valid: {', '.join('torch.' + v for v in valid)}")
        return cls(params, **kwargs)
    if name.startswith("ravine."):
        cls = getattr(ro, name[7:], None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ValueError(
                f"unknown ravine optimizer class {name!r}; valid: ravine.SGD, ravine.RMSprop, "
                "ravine.Adam, ravine.AdamW, ravine.Adagrad"
            )
        return cls(params, **kwargs)
    return ro.Optimizer(params, ro.get(name, **kwargs))


def _lr_ratios(opt: torch.optim.Optimizer, base_lr: Any) -> list[float]:
    """Each group's initial learning rate over the base rate (``optimizer_kwargs["lr"]``, else the first
    group's): 1.0 for a single group, the layer-wise decay factors with ``layer_lr_decay``."""
    lrs = [g.get("lr") for g in opt.param_groups]
    base = base_lr if isinstance(base_lr, float | int) and not isinstance(base_lr, bool) else lrs[0]
    if not isinstance(base, float | int) or base == 0:
        return [1.0] * len(lrs)
    return [float(lr) / float(base) if isinstance(lr, float | int) else 1.0 for lr in lrs]


def _clip_transform(clip: dict[str, Any] | None) -> ro.Transform | None:
    """``config.clip`` as the ravine transform that does it (None for no clipping)."""
    if clip is None:
        return None
    if clip["kind"] == "norm":
        return ro.clip_by_global_norm(clip["max_norm"])
    return ro.clip_by_value(clip["clip"])


def _make_optimizer(
    config: TrainConfig, model: nn.Module, params: Any, factory: Callable[[nn.Module], Any] | None
) -> tuple[torch.optim.Optimizer, ro.Transform | None]:
    """The run's optimizer, and the clip transform the loop applies to the gradients itself (or None).

    A ``ravine.optim.Optimizer`` built here from a transform (a named optimizer, or one a factory
    returns) gets global-norm clipping first in its chain, so it spans all param groups and its
    ``stats`` report the norms before and after. Any other optimizer (torch's classes, ravine's
    torch-compatible classes, a factory's optimizer) takes no chain, and ``clip_by_value`` reports no
    norm after clipping: then the loop applies the same transform to ``p.grad`` in place before
    ``step()`` and measures that norm itself.
    """
    clip = _clip_transform(config.clip)
    if factory is None:
        if config.optimizer.startswith(("torch.", "ravine.")):
            return build_optimizer(config.optimizer, params, **config.optimizer_kwargs), clip
        made: Any = ro.get(config.optimizer, **config.optimizer_kwargs)
    else:
        made = factory(model)
    if isinstance(made, torch.optim.Optimizer):
        return made, clip
    if not isinstance(made, ro.Transform):
        raise TypeError(
            "optimizer_factory must return a torch.optim.Optimizer or a ravine.optim.Transform, "
            f"got {type(made).__name__}"
        )
    if clip is None or config.clip["kind"] != "norm":
        return ro.Optimizer(params, made), clip
    return ro.Optimizer(params, ro.chain(clip, made)), None


# -------------------------------------------------------------------------------------------- helpers


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: _data.Dataset, split: str = "test", batch_size: int = 1024, loss: str = "cross_entropy"
) -> dict[str, float]:
    """``{"loss", "acc"}`` of ``model`` on ``dataset.eval_data(split)``.

    The loss (``loss``: a key of :data:`LOSSES`, cross-entropy by default) is the mean over all
    non-ignored target positions (exactly, summed over batches then divided by the count); accuracy is
    the fraction of those positions predicted right.
    Every submodule is put in eval mode and gets its own mode back afterwards. Inputs follow the
    model's device and floating dtype.
    """
    x, y = dataset.eval_data(split)
    p = next(model.parameters())
    fn = LOSSES[loss]
    total_loss, correct, count = 0.0, 0, 0
    with evaluation_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(p.device)
            if xb.is_floating_point():
                xb = xb.to(p.dtype)
            yb = y[i : i + batch_size].to(p.device)
            logits = model(xb).float()
            n = int((yb != _data.IGNORE_INDEX).sum())
            if n:
                total_loss += float(fn(logits, yb)) * n
            c, k = _data.accuracy_counts(logits, yb)
            correct += c
            count += k
    return {"loss": total_loss / max(count, 1), "acc": correct / max(count, 1)}


def _global_norm(tensors: list[torch.Tensor]) -> float:
    """``sqrt(sum_i ||t_i||^2)``: ``ravine.optim``'s one global norm (torch's ``clip_grad_norm_`` arithmetic)."""
    return float(global_norm([t.detach() for t in tensors])) if tensors else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state(device: torch.device) -> dict[str, Any]:
    st: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def _hessian_top(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], seed: int, loss: str) -> list[float]:
    """Largest Hessian eigenvalue of the training loss on ``data`` (Lanczos, ``ravine.curvature``), in
    eval mode: the curvature of the function the evaluations measure (dropout off)."""
    from ravine.curvature import hessian_eigenvalues

    with evaluation_mode(model), torch.random.fork_rng(devices=[]):
        res = hessian_eigenvalues(model, LOSSES[loss], data, k=1, which="largest", seed=seed)
    return [float(v) for v in torch.as_tensor(res.values).reshape(-1)]


@contextmanager
def _exclusive(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/lock`` exclusively (``fcntl.flock``) or raise RuntimeError if another process does.

    The kernel releases the lock when the process ends, however it ends (a SIGKILL included), so a
    dead trainer never blocks its run. The file holds the owner's pid, for the message only.
    """
    path = run_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RuntimeError(f"run {run_dir} is being trained by process {owner} (lock file {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class _TB:
    """TensorBoard scalars when ``enabled`` and the optional ``tensorboard`` package is installed."""

    def __init__(self, run_dir: Path, enabled: bool, start_step: int):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn(
                "tensorboard=True but the 'tensorboard' package is not installed (pip install tensorboard); "
                "training continues and writes metrics.jsonl only",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def scalars(self, record: dict[str, Any], prefix: str) -> None:
        if self.writer is None:
            return
        for k, v in record.items():
            if k not in ("step", "kind") and isinstance(v, int | float) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _versions() -> dict[str, str]:
    import ravine

    return {
        "ravine": getattr(ravine, "__version__", "?"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }


# ---------------------------------------------------------------------------------------------- setup


@dataclass
class _Training:
    """Everything the loop reads and advances: built by :func:`_setup`, stepped by :func:`_step`."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    dtype: torch.dtype
    dataset: _data.Dataset
    model: nn.Module
    opt: torch.optim.Optimizer
    grad_clip: ro.Transform | None  # applied to p.grad by the loop (optimizers that take no chain)
    schedule: Callable[[int], float] | None
    ratios: list[float]  # each group's lr over the base lr
    sampler: _data.BatchSampler
    params: list[torch.Tensor]
    start: int = 0  # the step training continues after
    elapsed: float = 0.0
    skipped_total: int = 0
    monitor: Any = None  # ravine.curvature.SharpnessMonitor when config.sharpness_every > 0 (rank 0)
    rank: int = 0  # this process's rank when config.world_size > 1
    net: nn.Module | None = None  # the DistributedDataParallel wrapper the forward pass goes through

    @property
    def forward(self) -> nn.Module:
        """The module a training batch goes through: the DDP wrapper when there is one."""
        return self.net if self.net is not None else self.model

    @property
    def clip_in_chain(self) -> bool:
        """``config.clip`` runs inside the optimizer's chain (and its stats report it)."""
        return self.config.clip is not None and self.grad_clip is None

    def checkpoint_state(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "optimizer": self.opt.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(self.device),
            "elapsed": self.elapsed,
            "skipped_total": self.skipped_total,
            **({"sharpness_monitor": self._monitor_state()} if self.monitor is not None else {}),
        }

    def _monitor_state(self) -> dict[str, Any]:
        """The monitor's warm-start vectors (its records are in metrics.jsonl already)."""
        return {**self.monitor.state_dict(), "records": []}

    def load_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        _set_rng_state(state["rng"], self.device)
        self.elapsed = float(state.get("elapsed", 0.0))
        self.skipped_total = int(state.get("skipped_total", 0))
        if self.monitor is not None and "sharpness_monitor" in state:
            self.monitor.load_state_dict(state["sharpness_monitor"])


def _clear(run_dir: Path) -> None:
    """Delete a run's results (metrics, status, metadata, checkpoints, TensorBoard), keeping its config."""
    for name in ("metrics.jsonl", "status.json", "metadata.json"):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def _setup(
    config: TrainConfig, run_dir: Path, factory: Callable[[nn.Module], Any] | None, rank: int = 0
) -> tuple[_Training, dict[str, Any]]:
    """Data, model, optimizer, schedule and sampler, seeded; and the model's spec. Call inside fork_rng.

    With ``config.world_size > 1`` (inside the process group) the model is wrapped in
    ``DistributedDataParallel`` and only rank 0 gets the sharpness monitor (only rank 0 records)."""
    device = _device(config, rank)
    dtype = DTYPES[config.dtype]
    dataset = _data.load(config.data, seed=config.data_seed, **config.data_kwargs)
    torch.manual_seed(config.seed)
    model = _models.build(config.model, **resolve_model_kwargs(config.model, config.model_kwargs, dataset.dims))
    spec = _models.spec(model)
    model = model.to(device=device, dtype=dtype)
    base_lr = config.optimizer_kwargs.get("lr")
    opt, grad_clip = _make_optimizer(config, model, _param_groups(model, base_lr, config.layer_lr_decay), factory)
    training = _Training(
        config=config,
        run_dir=run_dir,
        device=device,
        dtype=dtype,
        dataset=dataset,
        model=model,
        opt=opt,
        grad_clip=grad_clip,
        schedule=build_schedule(config.schedule, **config.schedule_kwargs),
        ratios=_lr_ratios(opt, base_lr),
        sampler=dataset.sampler(config.batch_size, seed=config.seed),
        params=[p for g in opt.param_groups for p in g["params"]],
        rank=rank,
    )
    if config.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        training.net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.sharpness_every and rank == 0:
        from ravine.curvature import SharpnessMonitor

        training.monitor = SharpnessMonitor(
            model, LOSSES[config.loss], _curvature_data(training), optimizer=opt, k=config.sharpness_k, seed=config.seed
        )
    torch.manual_seed(config.seed + 1)  # dropout
    return training, spec


def _device(config: TrainConfig, rank: int) -> torch.device:
    """The run's device; under DDP on CUDA, rank r uses GPU r."""
    device = torch.device(config.device)
    if config.world_size > 1 and device.type == "cuda":
        return torch.device("cuda", rank)
    return device


def _curvature_data(training: _Training) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed samples the Hessian and sharpness records are of: the first ``hessian_samples``
    training samples, on the run's device and dtype."""
    x, y = training.dataset.eval_data("train")
    n = min(training.config.hessian_samples, len(x))
    x, y = x[:n].to(training.device), y[:n].to(training.device)
    return (x.to(training.dtype) if x.is_floating_point() else x, y)


def _load_init(model: nn.Module, init_from: dict[str, Any], device: torch.device) -> tuple[int, dict[str, Any] | None]:
    step, weights, state = _runs.load_checkpoint(init_from["run"], init_from.get("step"), map_location=device)
    if init_from.get("restore", "weights") == "all":
        model.load_state_dict(weights)
        return step, state
    own = model.state_dict()
    matched = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    own.update({k: v.to(own[k].dtype) for k, v in matched.items()})
    model.load_state_dict(own)
    return step, None


def _restore(training: _Training, resume: bool) -> None:
    """Continue from this run's latest checkpoint, or start from ``init_from``, or from scratch; the
    metrics file keeps exactly the records up to the starting step (rank 0 writes it; the other ranks
    of a DDP run only read the checkpoint)."""
    metrics_path = training.run_dir / "metrics.jsonl"
    lead = training.rank == 0
    ckpts = _runs.list_checkpoints(training.run_dir) if resume else []
    state = None
    keep = -1  # the last step whose records are kept
    if ckpts:  # the latest good checkpoint: a damaged one is skipped with a warning naming its file
        training.start, weights, state = _runs.load_checkpoint(training.run_dir, map_location=training.device)
        training.model.load_state_dict(weights)
        keep = training.start
    elif training.config.init_from is not None:
        parent_step, state = _load_init(training.model, training.config.init_from, training.device)
        if state is not None:  # restore="all": continue the parent's records
            training.start = parent_step
            if lead:
                parent = _runs.read_jsonl(Path(training.config.init_from["run"]) / "metrics.jsonl")
                kept = [r for r in parent if int(r.get("step", 0)) <= training.start]
                _runs.atomic_write_text(metrics_path, "".join(_runs._encode_record(r) + "\n" for r in kept))
            keep = None
    if lead and keep is not None:
        _runs.truncate_metrics(metrics_path, keep)
    if state is not None:
        training.load_state(state)


# ----------------------------------------------------------------------------------------------- step


def _diverged(loss: float, limit: float | None) -> bool:
    return not math.isfinite(loss) or (limit is not None and loss > limit)


def _clip_grads(clip: ro.Transform, grads: list[torch.Tensor]) -> tuple[float, bool]:
    """Apply ``clip`` to ``grads`` in place; its pre-clip global norm and whether it clipped."""
    _, info = clip.update(grads, clip.init(grads))
    return float(info["norm"]), bool(info["clipped"])


def _update(training: _Training) -> tuple[dict[str, Any], float]:
    """Clip, check and apply the update to the gradients just computed: the step's gradient
    statistics, and the seconds spent clipping and updating (the bookkeeping around them excluded)."""
    grads = [p.grad for p in training.params if p.grad is not None]
    norm = _global_norm(grads) if training.config.clip is None else None  # else the clipping measures it
    prev = [p.detach().clone() for p in training.params]
    prev_norm = _global_norm(prev)
    ours = isinstance(training.opt, ro.Optimizer)
    skipped_before = training.opt.skipped_steps if ours else 0

    t0 = time.perf_counter()
    clipped = False
    if training.grad_clip is not None:
        norm, clipped = _clip_grads(training.grad_clip, grads)
    # ravine's optimizer skips non-finite gradients itself; for another, the same rule: a real
    # inf/nan, or a clip norm that overflowed (an overflowed norm of finite, unclipped gradients is not)
    finite = (
        ours
        or math.isfinite(norm)
        or (training.grad_clip is None and bool(finite_tensors([g.detach() for g in grads]).all()))
    )
    if finite:
        training.opt.step()
        _sync(training.device)
    seconds = time.perf_counter() - t0

    skipped = training.opt.skipped_steps > skipped_before if ours else not finite
    stats = training.opt.stats if ours and not skipped else {}
    if training.clip_in_chain and not skipped:  # the chain measured both norms
        norm, post, clipped = float(stats["grad_norm"]), float(stats["clipped_norm"]), bool(stats["clipped"])
    elif training.clip_in_chain:  # skipped before the chain ran
        norm = post = _global_norm(grads)
    else:
        post = _global_norm(grads) if training.grad_clip is not None and not skipped else norm
    if skipped:
        ratio = 0.0
    else:
        torch._foreach_sub_(prev, [p.detach() for p in training.params])  # prev := w_{k-1} - w_k
        delta = _global_norm(prev)
        ratio = delta / prev_norm if prev_norm > 0 else (0.0 if delta == 0 else math.inf)
    rec: dict[str, Any] = {
        "grad_norm": norm,
        "grad_norm_clipped": post,
        "clipped": clipped and not skipped,
        "update_ratio": ratio,
        "skipped": skipped,
    }
    if training.config.clip is None and "grad_norm" in stats:  # a factory's chain that clips by itself
        rec["opt_grad_norm"] = float(stats["grad_norm"])
        rec["opt_clipped"] = bool(stats.get("clipped", False))
    return rec, seconds


def _step(training: _Training, step: int) -> dict[str, Any]:
    """Update ``step`` (1-based): learning rate, batch, forward, backward, update; its record."""
    t0 = time.perf_counter()
    if training.schedule is not None:
        lr_now = float(training.schedule(step - 1))
        for g, r in zip(training.opt.param_groups, training.ratios):
            g["lr"] = lr_now * r
    xb, yb = training.sampler.next()
    xb, yb, share = _shard(training, xb, yb)
    xb = xb.to(training.device, non_blocking=True)
    if xb.is_floating_point():
        xb = xb.to(training.dtype)
    yb = yb.to(training.device, non_blocking=True)
    training.opt.zero_grad(set_to_none=True)
    loss = LOSSES[training.config.loss](training.forward(xb).float(), yb)
    loss_v = float(loss.detach()) if share is None else _global_loss(loss, share)
    seconds = time.perf_counter() - t0
    lr = training.opt.param_groups[0].get("lr")
    rec: dict[str, Any] = {
        "kind": "step",
        "step": step,
        "loss": loss_v,
        "lr": float(lr) / training.ratios[0] if isinstance(lr, float | int) else None,
    }
    if _diverged(loss_v, training.config.divergence_loss):
        training.elapsed += seconds
        rec.update(diverged=True, time=seconds, wall=training.elapsed, skipped_total=training.skipped_total)
        return rec
    t1 = time.perf_counter()
    # DDP averages the ranks' gradients: weighting each rank's mean by its share of the global batch
    # (times the number of ranks) makes that average the gradient of the global batch's mean loss
    (loss if share is None else loss * (share * training.config.world_size)).backward()
    _sync(training.device)
    seconds += time.perf_counter() - t1
    grad_stats, update_seconds = _update(training)
    seconds += update_seconds
    training.skipped_total += grad_stats["skipped"]
    training.elapsed += seconds
    rec.update(grad_stats, skipped_total=training.skipped_total, time=seconds, wall=training.elapsed)
    return rec


def _shard(training: _Training, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """This rank's contiguous share of the global batch, and the share's fraction of it (``None``
    without DDP). Every rank draws the same global batch from the same seeded sampler."""
    world = training.config.world_size
    if world == 1:
        return xb, yb, None
    n = len(xb)
    lo, hi = n * training.rank // world, n * (training.rank + 1) // world
    if hi <= lo:
        raise ValueError(f"a global batch of {n} examples cannot be shared by world_size={world} ranks")
    return xb[lo:hi], yb[lo:hi], (hi - lo) / n


def _global_loss(loss: torch.Tensor, share: float) -> float:
    """The global batch's mean loss: the ranks' means weighted by their shares, summed over ranks."""
    import torch.distributed as dist

    total = (loss.detach() * share).reshape(1).double()
    dist.all_reduce(total)
    return float(total)


# ------------------------------------------------------------------------------------------- recorder


class _Recorder:
    """Writes what the loop measures: step records, evaluations, Hessian eigenvalues, checkpoints,
    TensorBoard scalars and the progress bar, each when the config says it is due."""

    def __init__(self, training: _Training, progress: bool, on_step: Callable[[dict[str, Any]], Any] | None):
        self.training, self.config, self.on_step = training, training.config, on_step
        self.writer = _runs.MetricsWriter(training.run_dir / "metrics.jsonl")
        self.tb = _TB(training.run_dir, self.config.tensorboard, training.start)
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.config.steps,
                initial=training.start,
                desc=training.run_dir.name,
                leave=False,
                dynamic_ncols=True,
            )
        self.hessian_data = _curvature_data(training) if self.config.hessian_every else None

    def begin(self) -> None:
        """The measurements of the initial model (a fresh run only)."""
        self.evaluate(0)
        if self.config.hessian_every:
            self.hessian(0)
        if self.config.sharpness_every:
            self.sharpness(0)

    def step(self, rec: dict[str, Any]) -> None:
        """Record update ``rec["step"]``, then evaluate, measure and checkpoint as due."""
        self.writer.write(rec)
        step = rec["step"]
        if rec.get("diverged"):
            if self.on_step is not None:
                self.on_step(rec)
            if step - 1 > self.training.start:
                self.checkpoint(step - 1)  # the last weights, which gave the non-finite loss
            return
        self.tb.scalars(rec, "train")
        if self.on_step is not None:
            self.on_step(rec)
        last = step == self.config.steps
        if (self.config.eval_every and step % self.config.eval_every == 0) or last:
            self.evaluate(step)
        if self.config.hessian_every and step % self.config.hessian_every == 0:
            self.hessian(step)
        if self.config.sharpness_every and step % self.config.sharpness_every == 0:
            self.sharpness(step)
        if (self.config.checkpoint_every and step % self.config.checkpoint_every == 0) or last:
            self.checkpoint(step)
        if self.bar is not None:
            self.bar.update(1)
            if step % 10 == 0 or last:
                self.bar.set_postfix(loss=f"{rec['loss']:.4g}", refresh=False)

    def evaluate(self, step: int) -> None:
        model, dataset, n, loss = (
            self.training.model,
            self.training.dataset,
            self.config.eval_batch_size,
            self.config.loss,
        )
        train_set = evaluate(model, dataset, "train", n, loss)
        test_set = evaluate(model, dataset, "test", n, loss)
        rec = {
            "kind": "eval",
            "step": step,
            "train_loss": train_set["loss"],
            "train_acc": train_set["acc"],
            "test_loss": test_set["loss"],
            "test_acc": test_set["acc"],
        }
        self.writer.write(rec)
        self.tb.scalars(rec, "eval")

    def hessian(self, step: int) -> None:
        eigs = _hessian_top(self.training.model, self.hessian_data, self.config.seed, self.config.loss)
        self.writer.write({"kind": "hessian", "step": step, "top_eig": eigs[0], "eigs": eigs})
        self.tb.scalars({"step": step, "top_eig": eigs[0]}, "hessian")

    def sharpness(self, step: int) -> None:
        rec = self.training.monitor.measure(step)
        self.writer.write({"kind": "sharpness", **rec})
        self.tb.scalars({k: v for k, v in rec.items() if not isinstance(v, list)}, "sharpness")

    def checkpoint(self, step: int) -> None:
        self.writer.fsync()  # the records up to a checkpoint are durable when it is
        state = self.training.checkpoint_state(step)
        _runs.save_checkpoint(
            self.training.run_dir, step, self.training.model, state, keep=self.config.keep_checkpoints
        )

    def finish(self, status: str, end_step: int) -> None:
        self.writer.fsync()
        info: dict[str, Any] = {
            "step": end_step,
            "steps": self.config.steps,
            "wall": self.training.elapsed,
            "skipped_total": self.training.skipped_total,
        }
        if status == "diverged":
            info["diverged_at"] = end_step
        _runs.write_status(self.training.run_dir, status, **info)

    def close(self) -> None:
        self.writer.close()
        self.tb.close()
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------- train


def train(
    config: TrainConfig | dict[str, Any],
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[dict[str, Any]], Any] | None = None,
    optimizer_factory: Callable[[nn.Module], Any] | None = None,
) -> _runs.Run:
    """Train according to ``config`` into ``run_dir`` and return the :class:`~ravine.experiments.runs.Run`.

    ``run_dir`` defaults to ``RunStore().path_for(config)`` (``$RAVINE_RUNS`` or ``./runs``, named by the
    config's hash). If the directory already holds this config:

    - status ``completed``/``diverged`` and ``resume=True``: nothing is trained, the run is returned
      (reuse);
    - otherwise with ``resume=True``: training continues from the latest checkpoint (metrics after it
      are dropped), or from scratch if there is none;
    - ``resume=False``: metrics, checkpoints and status are deleted and the run starts over.

    A directory holding a different config raises ValueError; one that another process is training
    raises RuntimeError; a damaged ``config.json``/``status.json`` (or a damaged checkpoint with no
    good one before it) raises :class:`~ravine.experiments.runs.RunFileError` naming the file and
    what to do. A damaged latest checkpoint is skipped with a warning: the run resumes from the
    previous good one. ``progress`` shows a tqdm bar.
    ``on_step(record)`` is called after every step record is written (return value ignored).
    ``optimizer_factory(model)`` overrides ``config.optimizer``: it may return any
    ``torch.optim.Optimizer`` (torch's or ``ravine.optim``'s) or a ``ravine.optim.Transform`` (wrapped in
    ``ravine.optim.Optimizer``); ``config.optimizer`` is then only a label, so give each distinct factory
    a distinct label (it is part of the run id). Exceptions mark the run ``failed`` and propagate.
    With ``config.world_size > 1`` this process is rank 0 of a ``DistributedDataParallel`` run and
    spawns the other ranks (``optimizer_factory`` must then pickle: a module-level function or a
    ``functools.partial``); ``progress`` and ``on_step`` work as for one process.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    run_dir = Path(run_dir) if run_dir is not None else _runs.RunStore().path_for(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        # fields added since an old config.json was written hold their defaults there
        old, new = {**TrainConfig.HASH_DEFAULTS, **_runs.Run(run_dir).config_dict}, config.to_dict()
        differing = sorted(
            k for k in set(old) | set(new) if k not in TrainConfig.HASH_EXCLUDE and old.get(k) != new.get(k)
        )
        if differing:
            raise ValueError(f"{run_dir} holds a run of a different config (fields differing: {differing})")
        if resume and _runs.Run(run_dir).done:
            return _runs.Run(run_dir)

    with _exclusive(run_dir):
        try:
            run = _train_ddp if config.world_size > 1 else _train_locked
            run(config, run_dir, resume, progress, on_step, optimizer_factory)
        except BaseException as e:
            # Any failure (setup or training, KeyboardInterrupt included) leaves a resumable "failed" run.
            _runs.write_status(run_dir, "failed", error=f"{type(e).__name__}: {e}"[:2000])
            raise
    return _runs.Run(run_dir)


def _train_locked(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    on_step: Callable[[dict[str, Any]], Any] | None,
    optimizer_factory: Callable[[nn.Module], Any] | None,
    rank: int = 0,
) -> None:
    """The run, from setup to the final status; under DDP every rank runs it and only rank 0 writes."""
    lead = rank == 0
    if lead:
        if not resume:
            _clear(run_dir)
        _runs.atomic_write_json(run_dir / "config.json", config.to_dict())
    device = _device(config, rank)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        training, spec = _setup(config, run_dir, optimizer_factory, rank)
        _restore(training, resume)
        if lead:
            _runs.atomic_write_json(run_dir / "metadata.json", _metadata(training, spec))
            _runs.write_status(run_dir, "running", step=training.start, steps=config.steps)

        recorder = _Recorder(training, progress, on_step) if lead else None
        try:
            if training.start == 0 and recorder is not None:
                recorder.begin()
            status, end_step = "completed", config.steps
            with training_mode(training.model):
                for step in range(training.start + 1, config.steps + 1):
                    rec = _step(training, step)
                    if recorder is not None:
                        recorder.step(rec)
                    if rec.get("diverged"):
                        status, end_step = "diverged", step
                        break
            if recorder is not None:
                recorder.finish(status, end_step)
        finally:
            if recorder is not None:
                recorder.close()


def _train_ddp(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    on_step: Callable[[dict[str, Any]], Any] | None,
    optimizer_factory: Callable[[nn.Module], Any] | None,
) -> None:
    """``config.world_size`` ranks: this process is rank 0 (it records, as one process would); the
    others are spawned, join a process group through a file in a temporary folder, and write nothing.
    A rank that fails breaks the others' next collective, so the run fails as a whole and resumes
    as a whole from its last checkpoint."""
    import tempfile

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if dist.is_available() and dist.is_initialized():
        raise RuntimeError(
            f"world_size={config.world_size} starts its own process group, but this process is already in "
            "one: inside a distributed job, train with world_size=1 and wrap the model yourself"
        )
    if not resume:
        _clear(run_dir)  # before any rank looks for checkpoints
    backend = "nccl" if torch.device(config.device).type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/rendezvous"
        # every rank computes with rank 0's thread count, so reductions (a clip norm) round alike on every
        # rank and the replicas stay bit-identical
        args = (config, run_dir, optimizer_factory, init, backend, torch.get_num_threads())
        ranks = mp.start_processes(_rank_main, args, nprocs=config.world_size - 1, start_method="spawn", join=False)
        try:
            dist.init_process_group(backend, init_method=init, rank=0, world_size=config.world_size)
            try:
                _train_locked(config, run_dir, True, progress, on_step, optimizer_factory)
                dist.barrier()  # no rank tears the group down while another is still in a collective
            finally:
                dist.destroy_process_group()
        except BaseException:
            _stop_ranks(ranks)
            raise
        while not ranks.join():  # re-raises a rank's exception (ProcessRaisedException)
            pass


def _stop_ranks(ranks: Any) -> None:
    """Rank 0 failed: raise a spawned rank's own error if one failed first (its traceback says why),
    and stop the others, which would otherwise wait for rank 0 in their next collective."""
    try:
        ranks.join(timeout=5)
    finally:
        for p in ranks.processes:
            if p.is_alive():
                p.terminate()
            p.join()


def _rank_main(
    index: int,
    config: TrainConfig,
    run_dir: Path,
    factory: Callable[[nn.Module], Any] | None,
    init: str,
    backend: str,
    threads: int,
) -> None:
    """A spawned rank (``index + 1``) of a DDP run: joins the group, trains its shares, writes nothing."""
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group(backend, init_method=init, rank=index + 1, world_size=config.world_size)
    try:
        _train_locked(config, run_dir, True, False, None, factory, rank=index + 1)
        dist.barrier()  # rank 0 may still be evaluating or checkpointing: leave together
    finally:
        dist.destroy_process_group()


def _metadata(training: _Training, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "run_id": training.run_dir.name,
        "config_hash": training.config.run_id(),
        "data": training.dataset.metadata(),
        "model": spec,
        "n_params": int(sum(p.numel() for p in training.model.parameters())),
        "optimizer_class": f"{type(training.opt).__module__}.{type(training.opt).__qualname__}",
        "versions": _versions(),
    }
