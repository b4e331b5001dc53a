"""The Edge-of-Stability monitor: a network's sharpness against its optimizer's stability threshold.

:class:`SharpnessMonitor` runs inside any torch training loop. Every ``every`` steps it measures the
top Hessian eigenvalue(s) of the loss on fixed data, reads the optimizer's *current* hyperparameters
(``param_groups``, after any scheduler), maps them to the stability threshold with
:func:`~ravine.curvature.stability_rule` (``2 / lr`` for GD, ``2 (1 + beta) / lr`` for heavy ball,
``2 (1 + beta) / ((1 - beta) lr)`` for the chapter's EMA momentum, ``(2 + 2 beta1) / ((1 - beta1) lr)``
on Adam's preconditioned sharpness), and records both and their ratio (Cohen et al. 2021, 2022:
full-batch training drives the ratio up to 1 and holds it there).

Cost: each measurement warm-starts Lanczos from the previous top eigenvector(s) (the Hessian moves
little between measurements), so it needs fewer Hessian-vector products than a cold start; with
in-memory data the gradient graph is built once per measurement and every HVP reuses it.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from ravine._validation import Interval, check
from ravine.curvature._eigen import hessian_eigenvalues
from ravine.curvature._operator import HessianOperator, LossFn, _is_pair, _is_tensor_pair
from ravine.curvature._sharpness import StabilityRule, preconditioned_sharpness, stability_rule

__all__ = ["SharpnessMonitor"]

_POSITIVE_INT = Interval.finite(int, 1)
_POSITIVE = Interval.finite(float, 0, low_open=True)

# the columns of every record, in order (None where a value does not apply)
COLUMNS = (
    "step",
    "lambda_max",
    "eigenvalues",
    "rule",
    "lr",
    "sharpness",
    "threshold",
    "ratio",
    "preconditioned",
    "hvps",
    "converged",
    "time",
)


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _in_memory(data: object) -> bool:
    """``(X, y)`` tensors or a list of such batches: data whose gradient graph can be kept."""
    if _is_tensor_pair(data):
        return True
    return isinstance(data, list | tuple) and len(data) > 0 and all(_is_pair(b) and _is_tensor_pair(b) for b in data)


class SharpnessMonitor:
    """Sharpness against the optimizer's stability threshold, measured every few training steps.

    Call :meth:`step` once after every ``optimizer.step()``; every ``every``-th call measures (or call
    :meth:`measure` yourself whenever you like). A measurement records, as one JSON-safe dict:

    - ``step``: the training step (the count of :meth:`step` calls, or the ``step`` you pass);
    - ``lambda_max`` and ``eigenvalues`` (the ``k`` largest, descending) of the Hessian of the mean
      loss of ``model`` on ``data`` (Lanczos, :func:`~ravine.curvature.hessian_eigenvalues`);
    - ``rule`` (``"gd"``, ``"heavy_ball"``, ``"ema_momentum"``, ``"adam"`` or ``None``), ``lr``
      (``param_groups[0]["lr"]`` at the time of the measurement), ``threshold`` (the rule's sharpness
      limit at that lr), ``sharpness`` (what the rule compares: ``lambda_max``, or for Adam the
      preconditioned sharpness ``lambda_max(P^{-1} H)``) and ``ratio = (sharpness + shift) / (threshold +
      shift)`` (1 at the edge of stability; ``shift`` is SGD's coupled weight decay);
    - ``preconditioned``: Adam's preconditioned sharpness (Adam-family optimizers with state only);
    - ``hvps`` (Hessian-vector products spent), ``converged`` and ``time`` (seconds).

    Without an optimizer only the eigenvalues are recorded. The rule is
    :func:`~ravine.curvature.stability_rule` of the optimizer's first param group: torch's ``SGD``
    (momentum, dampening, weight decay), ``Adam``/``AdamW``, and ``ravine.optim``'s ``gd``, ``sgd``,
    ``momentum`` (EMA or heavy ball), ``adam``, ``adamw`` and torch-compatible classes. Read the lr you
    mean: called right after ``optimizer.step()`` and before ``scheduler.step()`` it is the lr of the
    update just taken; after ``scheduler.step()``, the next one's.

    Untouched: the model's parameters and buffers (the Hessian is of a copy), every ``.grad``, each
    submodule's training flag (evaluations run in eval mode and restore it), and torch's RNG states
    (the random start comes from a generator seeded with ``seed``; the measurement runs inside
    ``torch.random.fork_rng``, so even a shuffling DataLoader leaves the global RNG as it was).

    Warm start: measurement ``n + 1`` starts Lanczos from the sum of measurement ``n``'s eigenvectors
    (``warm_start=True``), which converges in fewer HVPs than a random start when the Hessian has moved
    little; :meth:`state_dict` carries those vectors, so a resumed run measures exactly as an
    uninterrupted one.

    Args:
        model: the network being trained (never modified).
        loss_fn: ``loss_fn(model(X), y) -> scalar`` mean loss (e.g. ``nn.CrossEntropyLoss()``).
        data: the fixed data the Hessian is of: ``(X, y)``, a list of batches, or a DataLoader
            (full-batch training: the training set; otherwise a fixed evaluation batch).
        every: measure on every ``every``-th call of :meth:`step`.
        optimizer: the torch optimizer (torch's or ``ravine.optim``'s) whose threshold to record.
        k: how many top eigenvalues to record.
        tol: Lanczos's relative residual tolerance (see ``hessian_eigenvalues``).
        max_iter: the most HVPs per eigen-solve.
        seed: seed of the random start of the first (cold) measurement.
        warm_start: start each measurement from the previous eigenvectors.
        cache_graph: keep each measurement's gradient graph and reuse it for every HVP
            (``HessianOperator(cache_graph=True)``); ``None``: when ``data`` is in memory.
        hvp: ``HessianOperator``'s ``method`` (when the graph is not cached).
        dtype: compute dtype (``None``: the model's).

    Example:
        A full-batch training loop that logs the sharpness every 10 steps::

            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            monitor = SharpnessMonitor(model, nn.CrossEntropyLoss(), (X, y), every=10, optimizer=opt)
            for _ in range(1000):
                opt.zero_grad()
                nn.functional.cross_entropy(model(X), y).backward()
                opt.step()
                monitor.step()
            cols = monitor.columns()  # cols["lambda_max"], cols["threshold"] (= 2 / 0.05), cols["ratio"]
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: object,
        every: int = 1,
        optimizer: torch.optim.Optimizer | None = None,
        k: int = 1,
        *,
        tol: float = 1e-3,
        max_iter: int = 500,
        seed: int = 0,
        warm_start: bool = True,
        cache_graph: bool | None = None,
        hvp: str = "auto",
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable (output, target) -> scalar; got {loss_fn!r}")
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be None or a torch.optim.Optimizer; got {type(optimizer).__name__}")
        for name, flag in (("warm_start", warm_start),):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False; got {flag!r}")
        if cache_graph is not None and not isinstance(cache_graph, bool):
            raise TypeError(f"cache_graph must be None, True or False; got {cache_graph!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.every = check("every", every, _POSITIVE_INT)
        self.optimizer = optimizer
        self.k = check("k", k, _POSITIVE_INT)
        self.tol = check("tol", tol, _POSITIVE)
        self.max_iter = check("max_iter", max_iter, _POSITIVE_INT)
        self.seed = seed
        self.warm_start = warm_start
        self.cache_graph = _in_memory(data) if cache_graph is None else cache_graph
        self.hvp = hvp
        self.dtype = dtype
        self.records: list[dict[str, Any]] = []
        self._calls = 0
        self._v: Tensor | None = None  # warm start of the Hessian's Lanczos
        self._pv: Tensor | None = None  # warm start of the preconditioned one
        # fail now, not at the first measurement: the data and model must make an operator (inside
        # fork_rng: checking that a DataLoader is re-iterable draws its seed from the global RNG)
        with torch.random.fork_rng(devices=self._cuda_devices()):
            self._operator()

    def _cuda_devices(self) -> list[int]:
        return sorted({p.device.index or 0 for p in self.model.parameters() if p.device.type == "cuda"})

    # ---- measuring -------------------------------------------------------------------------------

    def _operator(self) -> HessianOperator:
        method = "auto" if self.cache_graph else self.hvp
        return HessianOperator(
            self.model, self.loss_fn, self.data, method=method, dtype=self.dtype, cache_graph=self.cache_graph
        )

    def step(self) -> dict[str, Any] | None:
        """Count one training step; measure when the count is a multiple of ``every``.

        Returns:
            The new record when one was measured, else ``None``.
        """
        self._calls += 1
        if self._calls % self.every:
            return None
        return self.measure(self._calls)

    def rule(self) -> StabilityRule | None:
        """The optimizer's stability rule from its current hyperparameters (``None`` without an optimizer).

        Returns:
            :func:`~ravine.curvature.stability_rule` of the optimizer's first param group.
        """
        return None if self.optimizer is None else stability_rule(self.optimizer)

    def measure(self, step: int | None = None) -> dict[str, Any]:
        """Measure now and append the record (see the class docstring for its fields).

        Args:
            step: the step to record (default: the number of :meth:`step` calls so far).

        Returns:
            The record (also appended to :attr:`records`).
        """
        step = self._calls if step is None else check("step", step, Interval.finite(int, 0))
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=self._cuda_devices()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*did not converge.*", category=RuntimeWarning)
            rec = self._measure(step)
        rec["time"] = time.perf_counter() - t0
        self.records.append(rec)
        return rec

    def _measure(self, step: int) -> dict[str, Any]:
        rec: dict[str, Any] = dict.fromkeys(COLUMNS)
        rec.update(step=step, hvps=0, converged=False)
        rule = self.rule()
        if rule is not None:
            rec["rule"] = rule.kind
            lr = self.optimizer.param_groups[0].get("lr")  # type: ignore[union-attr]
            if isinstance(lr, int | float | Tensor) and not isinstance(lr, bool) and float(lr) > 0:
                rec["lr"] = float(lr)
                rec["threshold"] = _finite_or_none(rule.threshold(float(lr)))
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters() if p.requires_grad):
            self._v = self._pv = None
            return rec  # a diverged model: nothing to measure
        op = self._operator()
        v0 = self._v if self.warm_start else None
        try:
            eig = hessian_eigenvalues(
                op, k=self.k, which="largest", tol=self.tol, max_iter=self.max_iter, seed=self.seed, v0=v0
            )
        except torch.linalg.LinAlgError:
            self._v = self._pv = None
            return rec
        values = [float(v) for v in eig.values]
        finite = all(math.isfinite(v) for v in values)
        self._v = eig.vectors.sum(0).detach().clone() if finite else None
        rec.update(
            lambda_max=_finite_or_none(values[0]),
            eigenvalues=[_finite_or_none(v) for v in values],
            hvps=eig.num_hvps,
            converged=bool(eig.converged),
        )
        sharpness = rec["lambda_max"]
        if rule is not None and rule.curvature == "preconditioned":
            sharpness = None
            if self._has_adam_state():
                pre = preconditioned_sharpness(
                    op,
                    optimizer=self.optimizer,
                    lr=rec["lr"],
                    tol=self.tol,
                    max_iter=self.max_iter,
                    seed=self.seed,
                    v0=self._pv if self.warm_start else None,
                )
                sharpness = _finite_or_none(pre.value)
                self._pv = pre.eigen.vectors[0].detach().clone() if sharpness is not None else None
                rec["preconditioned"] = sharpness
                rec["hvps"] += pre.eigen.num_hvps
                rec["converged"] = rec["converged"] and bool(pre.eigen.converged)
        rec["sharpness"] = sharpness
        if rule is not None and rec["lr"] is not None and sharpness is not None:
            rec["ratio"] = _finite_or_none(rule.ratio(sharpness, rec["lr"]))
        return rec

    def _has_adam_state(self) -> bool:
        """Every trainable parameter has Adam's second moment and step in the optimizer state."""
        opt = self.optimizer
        assert opt is not None
        for p in self.model.parameters():
            if p.requires_grad:
                st = opt.state.get(p, {})
                if "exp_avg_sq" not in st or "step" not in st or float(st["step"]) < 1:
                    return False
        return True

    # ---- records and state -----------------------------------------------------------------------

    def columns(self) -> dict[str, list[Any]]:
        """The records as columns: ``{"step": [...], "lambda_max": [...], ...}`` (JSON-safe lists).

        Returns:
            One list per field, aligned with :attr:`records`.
        """
        return {c: [r.get(c) for r in self.records] for c in COLUMNS}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the step count, the records and the warm-start vectors.

        Returns:
            A dict of tensors, numbers and lists (``torch.save``-able, ``weights_only``-loadable).
        """
        return {
            "calls": self._calls,
            "records": [dict(r) for r in self.records],
            "v": None if self._v is None else self._v.detach().cpu().clone(),
            "pv": None if self._pv is None else self._pv.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s ``state`` (records, step count, warm-start vectors).

        Args:
            state: a dict from :meth:`state_dict`.
        """
        if not isinstance(state, dict) or not {"calls", "records", "v", "pv"} <= set(state):
            raise ValueError("state must be a dict from SharpnessMonitor.state_dict() (keys calls, records, v, pv)")
        device = next((p.device for p in self.model.parameters() if p.requires_grad), torch.device("cpu"))
        self._calls = int(state["calls"])
        self.records = [dict(r) for r in state["records"]]
        self._v = None if state["v"] is None else state["v"].to(device)
        self._pv = None if state["pv"] is None else state["pv"].to(device)
