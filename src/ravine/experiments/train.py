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
    ``wall`` (cumulative training seconds, continued across resumes). When the optimizer clips inside
    its own chain (``ravine.optim.Optimizer`` with a clipping transform), its ``opt.stats`` are also
    recorded as ``opt_grad_norm`` and ``opt_clipped``.
per evaluation (``kind="eval"``, at step 0, every ``eval_every`` steps and at the last step)
    ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` on the dataset's fixed evaluation sets
    (model in eval mode, no gradients). Accuracy is over non-ignored target positions.
Hessian (``kind="hessian"``, every ``hessian_every`` steps from step 0, when > 0)
    ``top_eig``: the largest Hessian eigenvalue of the training loss on a fixed subset of
    ``hessian_samples`` training samples, by ``ravine.curvature.hessian_eigenvalues``.

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
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import data as _data
from . import models as _models
from . import runs as _runs

__all__ = ["TrainConfig", "train", "evaluate", "build_optimizer", "build_schedule", "loss_fn", "DTYPES"]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
CLIP_KINDS = ("norm", "value")

loss_fn = _data.cross_entropy  # the loss of every task: cross-entropy over the last dim, ignore_index=-100


def _check_int(name: str, v: Any, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {v!r} ({type(v).__name__})")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")


@dataclass
class TrainConfig:
    """Everything that defines a training run; JSON-serializable (``to_json`` / ``from_json``).

    Fields (defaults in brackets):

    - ``data`` ["digits"], ``data_kwargs`` [{}], ``data_seed`` [0]: ``ravine.experiments.data.load(data,
      seed=data_seed, **data_kwargs)``; the split depends on ``data_seed`` only, so runs with different
      training ``seed`` share one split.
    - ``model`` ["mlp"], ``model_kwargs`` [{}]: ``models.build``; arguments the dataset determines
      (``in_features``, ``n_classes``, ``vocab_size``, ``block_size``, ``in_channels``, ``image_size``)
      are filled from ``dataset.dims`` unless given.
    - ``optimizer`` ["adam"], ``optimizer_kwargs`` [{"lr": 1e-3}]: a ``ravine.optim`` named optimizer
      (``ravine.optim.get(name, **kw)`` wrapped in ``ravine.optim.Optimizer``), a torch-compatible
      ravine class as ``"ravine.AdamW"``, or a torch class as ``"torch.AdamW"`` (``torch.optim.AdamW(params,
      **kw)``).
    - ``layer_lr_decay`` [None]: if set (0 < d <= 1), parameter group i of L (``models.layer_groups``,
      input to output) gets ``lr * d**(L - 1 - i)`` (layer-wise learning-rate decay for fine-tuning).
    - ``schedule`` [None], ``schedule_kwargs`` [{}]: ``ravine.schedules.get(schedule, **kw)``; see the
      module docstring for how it sets the learning rate.
    - ``clip`` [None]: ``{"kind": "norm", "max_norm": x}`` (``torch.nn.utils.clip_grad_norm_``, global L2)
      or ``{"kind": "value", "clip": c}`` (elementwise to ``[-c, c]``).
    - ``steps`` [1000], ``batch_size`` [64; None = full batch], ``eval_every`` [100; 0 = only at step 0
      and the end], ``checkpoint_every`` [0 = only at the end], ``keep_checkpoints`` [1; 0 = keep all],
      ``hessian_every`` [0 = off], ``hessian_samples`` [256], ``eval_batch_size`` [1024].
    - ``seed`` [0], ``device`` ["cpu"], ``dtype`` ["float32"; also "float64", "bfloat16", "float16"].
    - ``divergence_loss`` [None]: a finite loss above this also counts as divergence.
    - ``init_from`` [None]: ``{"run": dir, "step": k or None, "restore": "weights" | "all"}``: start from
      another run's checkpoint. ``"weights"`` loads matching weights only (fine-tuning; parameters
      whose name or shape differ keep their fresh initialization); ``"all"`` continues that run's
      state at step k (weights, optimizer, sampler, RNG) under this config (branching, e.g. WSD's decay
      from a mid-run checkpoint); the parent's records up to k are copied into this run's metrics.
    - ``tensorboard`` [False]: also write scalars with ``torch.utils.tensorboard`` (not part of the run id).
    """

    data: str = "digits"
    data_kwargs: dict[str, Any] = field(default_factory=dict)
    data_seed: int = 0
    model: str = "mlp"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"
    optimizer_kwargs: dict[str, Any] = field(default_factory=lambda: {"lr": 1e-3})
    layer_lr_decay: float | None = None
    schedule: str | None = None
    schedule_kwargs: dict[str, Any] = field(default_factory=dict)
    clip: dict[str, Any] | None = None
    steps: int = 1000
    batch_size: int | None = 64
    eval_every: int = 100
    checkpoint_every: int = 0
    keep_checkpoints: int = 1
    hessian_every: int = 0
    hessian_samples: int = 256
    eval_batch_size: int = 1024
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    divergence_loss: float | None = None
    init_from: dict[str, Any] | None = None
    tensorboard: bool = False

    HASH_EXCLUDE = ("tensorboard",)

    def __post_init__(self) -> None:
        for name in ("data", "model", "optimizer", "device"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise TypeError(f"{name} must be a non-empty string, got {v!r}")
        for name in ("data_kwargs", "model_kwargs", "optimizer_kwargs", "schedule_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {getattr(self, name)!r}")
        _check_int("steps", self.steps, 1)
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1)
        for name in ("eval_every", "checkpoint_every", "keep_checkpoints", "hessian_every", "seed", "data_seed"):
            _check_int(name, getattr(self, name), 0)
        _check_int("hessian_samples", self.hessian_samples, 1)
        _check_int("eval_batch_size", self.eval_batch_size, 1)
        if self.schedule is not None and not isinstance(self.schedule, str):
            raise TypeError(f"schedule must be a string or None, got {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.layer_lr_decay is not None and not 0.0 < float(self.layer_lr_decay) <= 1.0:
            raise ValueError(f"layer_lr_decay must be in (0, 1] or None, got {self.layer_lr_decay!r}")
        if self.divergence_loss is not None and not float(self.divergence_loss) > 0:
            raise ValueError(f"divergence_loss must be > 0 or None, got {self.divergence_loss!r}")
        if self.clip is not None:
            c = self.clip
            if not isinstance(c, dict) or c.get("kind") not in CLIP_KINDS:
                raise ValueError(f"clip must be None or a dict with kind in {CLIP_KINDS}, got {c!r}")
            key = "max_norm" if c["kind"] == "norm" else "clip"
            extra = sorted(set(c) - {"kind", key})
            if extra:
                raise ValueError(f"clip of kind {c['kind']!r} takes only {key!r}, got extra keys {extra}")
            v = c.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0 or not math.isfinite(v):
                raise ValueError(f"clip[{key!r}] must be a finite number > 0, got {v!r}")
        if self.init_from is not None:
            i = self.init_from
            if not isinstance(i, dict) or "run" not in i:
                raise ValueError(f"init_from must be None or a dict with 'run', got {i!r}")
            if i.get("restore", "weights") not in ("weights", "all"):
                raise ValueError(f"init_from['restore'] must be 'weights' or 'all', got {i.get('restore')!r}")
            extra = sorted(set(i) - {"run", "step", "restore"})
            if extra:
                raise ValueError(f"init_from takes keys 'run', 'step', 'restore'; got extra keys {extra}")
        if not isinstance(self.tensorboard, bool):
            raise TypeError(f"tensorboard must be a bool, got {self.tensorboard!r}")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (deep copy)."""
        return json.loads(json.dumps(dataclasses.asdict(self), allow_nan=False))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ValueError (listing the accepted ones)."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; accepted: {names}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, s: str) -> TrainConfig:
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def run_id(self) -> str:
        """Content hash of the config (``runs.config_hash``)."""
        return _runs.config_hash(self)


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
    if name is None:
        return None
    try:
        from ravine import schedules
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"schedule={name!r} needs ravine.schedules, which could not be imported: {e}") from e
    return schedules.get(name, **params)


def _param_groups(model: nn.Module, lr: float | None, layer_lr_decay: float | None) -> list[dict[str, Any]] | list:
    params = [p for p in model.parameters() if p.requires_grad]
    if layer_lr_decay is None:
        return params
    if lr is None:
        raise ValueError("layer_lr_decay needs optimizer_kwargs['lr']")
    named = dict(model.named_parameters())
    groups = _models.layer_groups(model)
    n = len(groups)
    return [
        {"params": [named[k] for k in g if named[k].requires_grad], "lr": lr * layer_lr_decay ** (n - 1 - i)}
        for i, g in enumerate(groups)
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
    try:
        import ravine.optim as ro
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"optimizer={name!r} needs ravine.optim, which could not be imported: {e}") from e
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


def _as_optimizer(obj: Any, params: Any) -> torch.optim.Optimizer:
    if isinstance(obj, torch.optim.Optimizer):
        return obj
    if hasattr(obj, "init") and hasattr(obj, "update"):  # a ravine.optim.Transform
        import ravine.optim as ro

        return ro.Optimizer(params, obj)
    raise TypeError(
        f"optimizer_factory must return a torch.optim.Optimizer or a ravine.optim.Transform, got {type(obj).__name__}"
    )


# -------------------------------------------------------------------------------------------- helpers


@torch.no_grad()
def evaluate(model: nn.Module, dataset: _data.Dataset, split: str = "test", batch_size: int = 1024) -> dict[str, float]:
    """``{"loss", "acc"}`` of ``model`` on ``dataset.eval_data(split)``.

    The loss is the mean cross-entropy over all non-ignored target positions (exactly, summed over
    batches then divided by the count); accuracy is the fraction of those positions predicted right.
    The model is put in eval mode and restored to its previous mode afterwards. Inputs follow the
    model's device and floating dtype.
    """
    x, y = dataset.eval_data(split)
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(p.device)
            if xb.is_floating_point():
                xb = xb.to(p.dtype)
            yb = y[i : i + batch_size].to(p.device)
            logits = model(xb).float()
            n = int((yb != _data.IGNORE_INDEX).sum())
            if n:
                total_loss += float(_data.cross_entropy(logits, yb)) * n
            c, k = _data.accuracy_counts(logits, yb)
            correct += c
            count += k
    finally:
        model.train(was_training)
    return {"loss": total_loss / max(count, 1), "acc": correct / max(count, 1)}


def _global_norm(tensors: list[torch.Tensor]) -> float:
    if not tensors:
        return 0.0
    norms = torch._foreach_norm(
        [t.detach().float() if t.dtype in (torch.float16, torch.bfloat16) else t.detach() for t in tensors]
    )
    return float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])))


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


def _curvature_module():
    import importlib

    try:
        return importlib.import_module("ravine.curvature")
    except ImportError as e:
        raise ImportError(
            f"hessian_every > 0 needs ravine.curvature.hessian_eigenvalues, which could not be imported ({e}); "
            "set hessian_every=0 or install the curvature module"
        ) from e


def _hessian_top(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], seed: int) -> list[float]:
    """Largest Hessian eigenvalue of the training loss on ``data`` (Lanczos, ``ravine.curvature``)."""
    curvature = _curvature_module()
    was = model.training
    model.eval()  # the curvature of the function the evaluations measure (dropout off)
    try:
        with torch.random.fork_rng(devices=[]):
            res = curvature.hessian_eigenvalues(model, loss_fn, data, k=1, which="largest", seed=seed)
    finally:
        model.train(was)
    return [float(v) for v in torch.as_tensor(res.values).reshape(-1)]


class _Lock:
    """An exclusive lock file in the run directory (pid inside); a stale lock of a dead process is taken over."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "lock"
        self.held = False

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                alive = False
                if pid > 0 and pid != os.getpid():
                    try:
                        os.kill(pid, 0)
                        alive = True
                    except ProcessLookupError:
                        alive = False
                    except PermissionError:
                        alive = True
                if alive:
                    raise RuntimeError(
                        f"run {self.path.parent} is being trained by process {pid} (lock file {self.path})"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise RuntimeError(f"could not acquire {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class _TB:
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
                stacklevel=3,
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


# ---------------------------------------------------------------------------------------------- train


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

    A directory holding a different config raises ValueError. ``progress`` shows a tqdm bar.
    ``on_step(record)`` is called after every step record is written (return value ignored).
    ``optimizer_factory(model)`` overrides ``config.optimizer``: it may return any
    ``torch.optim.Optimizer`` (torch's or ``ravine.optim``'s) or a ``ravine.optim.Transform`` (wrapped in
    ``ravine.optim.Optimizer``); ``config.optimizer`` is then only a label, so give each distinct factory
    a distinct label (it is part of the run id). Exceptions mark the run ``failed`` and propagate.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}")
    store = _runs.RunStore()
    run_dir = Path(run_dir) if run_dir is not None else store.path_for(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    cfg_dict = config.to_dict()
    if cfg_path.exists():
        old = _runs.read_json(cfg_path)
        strip = lambda d: {k: v for k, v in d.items() if k not in TrainConfig.HASH_EXCLUDE}  # noqa: E731
        if strip(old) != strip(cfg_dict):
            diff = sorted(k for k in set(old) | set(cfg_dict) if old.get(k) != cfg_dict.get(k))
            raise ValueError(f"{run_dir} holds a run of a different config (fields differing: {diff})")
        if resume and _runs.Run(run_dir).done:
            return _runs.Run(run_dir)

    lock = _Lock(run_dir)
    lock.acquire()
    try:
        return _train_locked(config, run_dir, resume, progress, on_step, optimizer_factory)
    except BaseException as e:
        # Any failure (setup or training, KeyboardInterrupt included) leaves a resumable "failed" run.
        _runs.write_status(run_dir, "failed", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    finally:
        lock.release()


def _train_locked(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    on_step: Callable[[dict[str, Any]], Any] | None,
    optimizer_factory: Callable[[nn.Module], Any] | None,
) -> _runs.Run:
    import shutil

    metrics_path = run_dir / "metrics.jsonl"
    if not resume:
        for name in ("metrics.jsonl", "status.json", "metadata.json"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
    _runs.atomic_write_json(run_dir / "config.json", config.to_dict())

    device = torch.device(config.device)
    dtype = DTYPES[config.dtype]
    dataset = _data.load(config.data, seed=config.data_seed, **config.data_kwargs)
    mkw = resolve_model_kwargs(config.model, config.model_kwargs, dataset.dims)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = _models.build(config.model, **mkw)
        model_spec = _models.spec(model)
        model = model.to(device=device, dtype=dtype)
        base_lr = config.optimizer_kwargs.get("lr")
        params = _param_groups(model, base_lr, config.layer_lr_decay)
        if optimizer_factory is not None:
            opt = _as_optimizer(optimizer_factory(model), params)
        else:
            opt = build_optimizer(config.optimizer, params, **config.optimizer_kwargs)
        ratios = _lr_ratios(opt, base_lr)
        schedule = build_schedule(config.schedule, **config.schedule_kwargs)
        sampler = dataset.sampler(config.batch_size, seed=config.seed)
        torch.manual_seed(config.seed + 1)

        start, elapsed, skipped_total = 0, 0.0, 0
        state: dict[str, Any] | None = None
        ckpts = _runs.list_checkpoints(run_dir) if resume else []
        if ckpts:
            start, weights, state = _runs.load_checkpoint(run_dir, ckpts[-1], map_location=device)
            model.load_state_dict(weights)
            _runs.truncate_metrics(metrics_path, start)
        elif config.init_from is not None:
            parent_step, state = _load_init(model, config.init_from, device)
            if state is not None:
                start = parent_step
                parent = [
                    r
                    for r in _runs.read_jsonl(Path(config.init_from["run"]) / "metrics.jsonl")
                    if int(r.get("step", 0)) <= start
                ]
                _runs.atomic_write_text(metrics_path, "".join(_runs._encode_record(r) + "\n" for r in parent))
            else:
                _runs.truncate_metrics(metrics_path, -1)
        else:
            _runs.truncate_metrics(metrics_path, -1)
        if state is not None:
            opt.load_state_dict(state["optimizer"])
            sampler.load_state_dict(state["sampler"])
            _set_rng_state(state["rng"], device)
            elapsed = float(state.get("elapsed", 0.0))
            skipped_total = int(state.get("skipped_total", 0))

        params_list = [p for g in opt.param_groups for p in g["params"]]
        meta = {
            "run_id": run_dir.name,
            "config_hash": config.run_id(),
            "data": dataset.metadata(),
            "model": model_spec,
            "n_params": int(sum(p.numel() for p in model.parameters())),
            "optimizer_class": f"{type(opt).__module__}.{type(opt).__qualname__}",
            "versions": _versions(),
        }
        _runs.atomic_write_json(run_dir / "metadata.json", meta)
        _runs.write_status(run_dir, "running", step=start, steps=config.steps)

        hess_data = None
        if config.hessian_every:
            _curvature_module()  # fail now, with a clear message, rather than after some training
            hx, hy = dataset.eval_data("train")
            n = min(config.hessian_samples, len(hx))
            hx, hy = hx[:n].to(device), hy[:n].to(device)
            hess_data = (hx.to(dtype) if hx.is_floating_point() else hx, hy)

        writer = _runs.MetricsWriter(metrics_path)
        tb = _TB(run_dir, config.tensorboard, start)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=config.steps, initial=start, desc=run_dir.name, leave=False, dynamic_ncols=True)

        def do_eval(step: int) -> None:
            tr = evaluate(model, dataset, "train", config.eval_batch_size)
            te = evaluate(model, dataset, "test", config.eval_batch_size)
            rec = {
                "kind": "eval",
                "step": step,
                "train_loss": tr["loss"],
                "train_acc": tr["acc"],
                "test_loss": te["loss"],
                "test_acc": te["acc"],
            }
            writer.write(rec)
            tb.scalars(rec, "eval")

        def do_hessian(step: int) -> None:
            eigs = _hessian_top(model, hess_data, config.seed)
            rec = {"kind": "hessian", "step": step, "top_eig": eigs[0], "eigs": eigs}
            writer.write(rec)
            tb.scalars({"step": step, "top_eig": eigs[0]}, "hessian")

        def checkpoint(step: int) -> None:
            writer.fsync()
            st = {
                "step": step,
                "optimizer": opt.state_dict(),
                "sampler": sampler.state_dict(),
                "rng": _rng_state(device),
                "elapsed": elapsed,
                "skipped_total": skipped_total,
            }
            _runs.save_checkpoint(run_dir, step, model, st, keep=config.keep_checkpoints)

        status, end_step = "completed", config.steps
        try:
            if start == 0:
                do_eval(0)
                if config.hessian_every:
                    do_hessian(0)
            model.train()
            for step in range(start + 1, config.steps + 1):
                t0 = time.perf_counter()
                if schedule is not None:
                    lr_now = float(schedule(step - 1))
                    for g, r in zip(opt.param_groups, ratios):
                        g["lr"] = lr_now * r
                xb, yb = sampler.next()
                xb = xb.to(device, non_blocking=True)
                if xb.is_floating_point():
                    xb = xb.to(dtype)
                yb = yb.to(device, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb).float(), yb)
                loss_v = float(loss.detach())
                t_fwd = time.perf_counter() - t0
                lr_rec = opt.param_groups[0].get("lr")
                lr_rec = float(lr_rec) / ratios[0] if isinstance(lr_rec, float | int) else None
                rec: dict[str, Any] = {"kind": "step", "step": step, "loss": loss_v, "lr": lr_rec}
                if not math.isfinite(loss_v) or (
                    config.divergence_loss is not None and loss_v > config.divergence_loss
                ):
                    elapsed += t_fwd
                    rec.update(diverged=True, time=t_fwd, wall=elapsed, skipped_total=skipped_total)
                    writer.write(rec)
                    status, end_step = "diverged", step
                    if on_step is not None:
                        on_step(rec)
                    if step - 1 > start:
                        checkpoint(step - 1)  # the last weights, which gave the non-finite loss
                    break
                t1 = time.perf_counter()
                loss.backward()
                _sync(device)
                t_bwd = time.perf_counter() - t1
                grads = [p.grad for p in params_list if p.grad is not None]
                gnorm = _global_norm(grads)
                t2 = time.perf_counter()
                clipped = False
                skipped = not math.isfinite(gnorm)
                if not skipped and config.clip is not None:
                    if config.clip["kind"] == "norm":
                        torch.nn.utils.clip_grad_norm_(params_list, config.clip["max_norm"])
                        clipped = gnorm > config.clip["max_norm"]
                    else:
                        torch.nn.utils.clip_grad_value_(params_list, config.clip["clip"])
                        c = config.clip["clip"]
                        clipped = any(bool((g.abs() > c).any()) for g in grads)
                t_clip = time.perf_counter() - t2
                gnorm_post = _global_norm(grads) if (config.clip is not None and not skipped) else gnorm
                if skipped:
                    skipped_total += 1
                    opt.zero_grad(set_to_none=True)
                    t_step, ratio = 0.0, 0.0
                else:
                    prev = [p.detach().clone() for p in params_list]
                    prev_norm = _global_norm(prev)
                    t3 = time.perf_counter()
                    opt.step()
                    _sync(device)
                    t_step = time.perf_counter() - t3
                    torch._foreach_sub_(prev, [p.detach() for p in params_list])  # prev := w_{k-1} - w_k
                    dnorm = _global_norm(prev)
                    ratio = dnorm / prev_norm if prev_norm > 0 else (0.0 if dnorm == 0 else math.inf)
                dt = t_fwd + t_bwd + t_clip + t_step
                elapsed += dt
                rec.update(
                    grad_norm=gnorm,
                    grad_norm_clipped=gnorm_post,
                    clipped=bool(clipped),
                    update_ratio=ratio,
                    skipped=bool(skipped),
                    skipped_total=skipped_total,
                    time=dt,
                    wall=elapsed,
                )
                stats = getattr(opt, "stats", None)
                if isinstance(stats, dict) and "grad_norm" in stats:
                    rec["opt_grad_norm"] = float(stats["grad_norm"])
                    rec["opt_clipped"] = bool(stats.get("clipped", False))
                writer.write(rec)
                tb.scalars(rec, "train")
                if on_step is not None:
                    on_step(rec)
                is_last = step == config.steps
                if (config.eval_every and step % config.eval_every == 0) or is_last:
                    do_eval(step)
                if config.hessian_every and step % config.hessian_every == 0:
                    do_hessian(step)
                if (config.checkpoint_every and step % config.checkpoint_every == 0) or is_last:
                    checkpoint(step)
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or is_last:
                        bar.set_postfix(loss=f"{loss_v:.4g}", refresh=False)
            writer.fsync()
            info: dict[str, Any] = {
                "step": end_step,
                "steps": config.steps,
                "wall": elapsed,
                "skipped_total": skipped_total,
            }
            if status == "diverged":
                info["diverged_at"] = end_step
            _runs.write_status(run_dir, status, **info)
        finally:
            writer.close()
            tb.close()
            if bar is not None:
                bar.close()
    return _runs.Run(run_dir)
