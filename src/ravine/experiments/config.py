"""``TrainConfig``: everything that defines a training run, as one JSON-serializable dataclass.

The run store (:mod:`.runs`) names a run by :func:`config_hash` and stores the config as
``config.json``; the training loop (:mod:`.train`) builds the run from it. This module imports
neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from ravine._validation import Interval, Options, check

from ._checks import NATURAL, POSITIVE, integer

__all__ = ["TrainConfig", "config_hash", "DTYPES", "CLIP_KINDS", "LOSS_NAMES"]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
CLIP_KINDS = ("norm", "value")
LOSS_NAMES = ("cross_entropy", "mse")

# Integer fields and their allowed values.
_COUNTS = {
    "steps": POSITIVE,
    "batch_size": POSITIVE,  # or None: full batch
    "eval_every": NATURAL,
    "checkpoint_every": NATURAL,
    "keep_checkpoints": NATURAL,
    "hessian_every": NATURAL,
    "hessian_samples": POSITIVE,
    "sharpness_every": NATURAL,
    "sharpness_k": POSITIVE,
    "world_size": Interval(int, 1, 64),
    "eval_batch_size": POSITIVE,
    "seed": NATURAL,
    "data_seed": NATURAL,
}
_CLIP_KEY = {"norm": "max_norm", "value": "clip"}  # the one number each kind of clipping takes
_INIT_KEYS = ("run", "step", "restore")


def _check_clip(clip: Any) -> None:
    if not isinstance(clip, dict) or clip.get("kind") not in CLIP_KINDS:
        raise ValueError(f"clip must be None or a dict with kind in {CLIP_KINDS}, got {clip!r}")
    key = _CLIP_KEY[clip["kind"]]
    extra = sorted(set(clip) - {"kind", key})
    if extra:
        raise ValueError(f"clip of kind {clip['kind']!r} takes only {key!r}, got extra keys {extra}")
    check(f"clip[{key!r}]", clip.get(key), Interval(float, 0, None, closed="neither"))


def _check_init_from(init_from: Any) -> None:
    if not isinstance(init_from, dict) or "run" not in init_from:
        raise ValueError(f"init_from must be None or a dict with 'run', got {init_from!r}")
    check("init_from['restore']", init_from.get("restore", "weights"), Options(("weights", "all")))
    extra = sorted(set(init_from) - set(_INIT_KEYS))
    if extra:
        raise ValueError(f"init_from takes keys 'run', 'step', 'restore'; got extra keys {extra}")


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
    - ``schedule`` [None], ``schedule_kwargs`` [{}]: ``ravine.schedules.get(schedule, **kw)``; see
      :mod:`ravine.experiments.train` for how it sets the learning rate.
    - ``clip`` [None]: ``{"kind": "norm", "max_norm": x}`` (``ravine.optim.clip_by_global_norm``: the
      global L2 norm over all parameters, ``torch.nn.utils.clip_grad_norm_``'s arithmetic)
      or ``{"kind": "value", "clip": c}`` (elementwise to ``[-c, c]``).
    - ``steps`` [1000], ``batch_size`` [64; None = full batch], ``eval_every`` [100; 0 = only at step 0
      and the end], ``checkpoint_every`` [0 = only at the end], ``keep_checkpoints`` [1; 0 = keep all],
      ``hessian_every`` [0 = off], ``hessian_samples`` [256], ``eval_batch_size`` [1024].
    - ``sharpness_every`` [0 = off], ``sharpness_k`` [1]: every ``sharpness_every`` steps (from step 0)
      ``ravine.curvature.SharpnessMonitor`` records the ``sharpness_k`` largest Hessian eigenvalues on the
      first ``hessian_samples`` training samples, the optimizer's stability threshold at its current
      learning rate, their ratio and, for Adam, the preconditioned sharpness (records of kind
      ``"sharpness"``).
    - ``loss`` ["cross_entropy"]: the training (and evaluation) loss: ``"cross_entropy"`` or ``"mse"``
      (the square loss on one-hot targets, ``0.5 ||logits - onehot(y)||^2`` summed over classes and
      averaged over positions: Cohen et al. 2021's loss for the Edge of Stability).
    - ``seed`` [0], ``device`` ["cpu"], ``dtype`` ["float32"; also "float64", "bfloat16", "float16"].
    - ``world_size`` [1]: train with ``DistributedDataParallel`` on this many processes (gloo on CPU,
      nccl on CUDA; 1 to 64): each rank computes its share of every global batch of ``batch_size``,
      DDP averages the gradients, and rank 0 (the calling process) records and checkpoints; the
      others are spawned and write nothing. Part of the run id when not 1 (the numbers equal one
      process's only to float rounding).
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
    sharpness_every: int = 0
    sharpness_k: int = 1
    loss: str = "cross_entropy"
    world_size: int = 1

    HASH_EXCLUDE = ("tensorboard",)
    # fields added after runs were stored: left out of the hash while at these defaults, so every
    # config written before they existed keeps its hash (and its run directory)
    HASH_DEFAULTS = {"sharpness_every": 0, "sharpness_k": 1, "loss": "cross_entropy", "world_size": 1}

    def __post_init__(self) -> None:
        for name in ("data", "model", "optimizer", "device"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise TypeError(f"{name} must be a non-empty string, got {v!r}")
        for name in ("data_kwargs", "model_kwargs", "optimizer_kwargs", "schedule_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"{name} must be a dict, got {getattr(self, name)!r}")
        for name, interval in _COUNTS.items():
            if name != "batch_size" or self.batch_size is not None:
                integer(name, getattr(self, name), interval)
        if self.batch_size is not None and self.batch_size < self.world_size:
            raise ValueError(
                f"batch_size must be at least world_size ({self.world_size}: every rank computes a share of "
                f"each global batch), got {self.batch_size}"
            )
        if self.schedule is not None and not isinstance(self.schedule, str):
            raise TypeError(f"schedule must be a string or None, got {self.schedule!r}")
        check("dtype", self.dtype, Options(DTYPES))
        check("loss", self.loss, Options(LOSS_NAMES))
        if self.layer_lr_decay is not None:
            check("layer_lr_decay", self.layer_lr_decay, Interval(float, 0, 1, closed="right"))
        if self.divergence_loss is not None:
            check("divergence_loss", self.divergence_loss, Interval(float, 0, None, closed="neither"))
        if self.clip is not None:
            _check_clip(self.clip)
        if self.init_from is not None:
            _check_init_from(self.init_from)
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
        """The config as JSON (sorted keys; NaN and inf are refused)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, s: str) -> TrainConfig:
        """A config from ``to_json``'s text (validated as ``from_dict``)."""
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def run_id(self) -> str:
        """Content hash of the config (:func:`config_hash`)."""
        return config_hash(self)


def config_hash(config: Any, length: int = 12) -> str:
    """First ``length`` hex digits of SHA-256 of the config's canonical JSON (sorted keys, no spaces).

    ``config`` is a dict or anything with ``to_dict()`` (a ``TrainConfig``). Keys listed in
    ``TrainConfig.HASH_EXCLUDE`` (settings that do not change results, e.g. ``tensorboard``) are left
    out, so toggling them reuses the same run; so are the keys of ``TrainConfig.HASH_DEFAULTS`` while
    they hold that default (fields added later: a config from before they existed hashes as it did).
    """
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    d = {
        k: v
        for k, v in d.items()
        if k not in TrainConfig.HASH_EXCLUDE
        and not (k in TrainConfig.HASH_DEFAULTS and v == TrainConfig.HASH_DEFAULTS[k])
    }
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
