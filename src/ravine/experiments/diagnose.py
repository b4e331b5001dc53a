"""What went wrong in a training run: :func:`diagnose` reads a run directory's metrics and reports findings.

Each finding names the problem, gives its evidence (step numbers and values from ``metrics.jsonl``)
and suggests a change. The checks and their thresholds (module constants, so a reader can see and a
caller can change them):

- ``divergence``: the run's status is ``"diverged"``, a step's loss is not finite, or the final loss
  is above ``DIVERGED_RATIO`` (10) times the initial one. The steps from the lowest loss before it
  on are the divergence's evidence; the other checks read only the steps before them.
- ``nonfinite_gradients``: steps skipped because a gradient was not finite (``skipped``).
- ``loss_spikes``: a step whose loss is at least ``SPIKE_RATIO`` (2) times the median of the
  previous ``WINDOW`` (20) losses (at least ``MIN_HISTORY`` (5) of them) *and* exceeds that median
  by ``SPIKE_ABS`` (0.25) times the initial loss (the second condition keeps a nearly converged run's
  noise, 0.01 -> 0.05, from counting). Spikes in the early phase are ``early_instability``'s
  evidence when that finding is made.
- ``grad_norm_explosions``: a step whose global gradient norm (before clipping) is at least
  ``GRAD_RATIO`` (10) times the median of the previous ``WINDOW`` norms and of the whole run's norms
  (the larger of the two), or infinite.
- ``clipping_most_steps``: clipping acted on more than ``CLIP_MOST`` (50%) of the steps: the
  threshold is below the typical norm, so clipping rescales nearly every step (a smaller, normalized
  learning rate) instead of catching outliers.
- ``clipping_never``: clipping is configured and, over at least ``CLIP_MIN_STEPS`` (50) steps, never
  acted: it has no effect.
- ``update_ratio_high`` / ``update_ratio_low``: the median update-to-weight ratio
  ``||w_k - w_{k-1}|| / ||w_{k-1}||`` after the early phase is above ``UPDATE_HIGH`` (1e-2) or below
  ``UPDATE_LOW`` (1e-4): a factor 10 either side of the usual ~1e-3 (Karpathy's rule of thumb). Tiny
  updates are flagged only while the loss is still above ``SLOW_PROGRESS`` (0.5) times the initial
  (a converged run's updates shrink with its gradients, rightly).
- ``no_progress``: the final loss is above ``NO_PROGRESS`` (0.9) times the initial loss. The initial
  loss is the step-0 evaluation's ``train_loss`` (else the first batch's loss); the final one the last
  evaluation's ``train_loss`` (else the median of the last 10% of batch losses).
- ``early_instability``: in the early phase (the first ``EARLY_FRACTION`` (10%) of the steps, at
  least ``EARLY_MIN`` (20)), the loss rose above ``EARLY_RISE`` (1.5) times the initial loss, or a
  spike or gradient-norm explosion happened, and the learning rate had no warmup (its first value is
  at least half the largest of the first 20% of steps): the case warmup addresses.
- ``sharpness_above_threshold``: the run recorded the top Hessian eigenvalue (``hessian_every``) and
  it exceeded the stability threshold of gradient descent at that step's learning rate,
  ``2 / lr``; with heavy-ball momentum ``mu`` the threshold is ``(2 + 2 mu) / lr`` (Nesterov:
  ``(2 + 2 mu) / ((1 + 2 mu) lr)``). For adaptive optimizers (Adam and the like) the raw Hessian is not
  the one that sets stability (Cohen et al. 2022 compare the preconditioned one), so the check
  applies to SGD only and says so in the notes otherwise.

A healthy run gets no finding. ``ravine diagnose RUN`` prints :meth:`Diagnosis.to_text`
(``--json``: :meth:`Diagnosis.to_dict`).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .runs import Run

__all__ = ["diagnose", "Diagnosis", "Finding", "THRESHOLDS"]

WINDOW = 20
MIN_HISTORY = 5
DIVERGED_RATIO = 10.0
SLOW_PROGRESS = 0.5
SPIKE_RATIO = 2.0
SPIKE_ABS = 0.25
GRAD_RATIO = 10.0
CLIP_MOST = 0.5
CLIP_MIN_STEPS = 50
UPDATE_LOW = 1e-4
UPDATE_HIGH = 1e-2
NO_PROGRESS = 0.9
EARLY_FRACTION = 0.1
EARLY_MIN = 20
EARLY_RISE = 1.5

THRESHOLDS = {
    "window": WINDOW,
    "min_history": MIN_HISTORY,
    "diverged_ratio": DIVERGED_RATIO,
    "slow_progress": SLOW_PROGRESS,
    "spike_ratio": SPIKE_RATIO,
    "spike_abs": SPIKE_ABS,
    "grad_ratio": GRAD_RATIO,
    "clip_most": CLIP_MOST,
    "clip_min_steps": CLIP_MIN_STEPS,
    "update_low": UPDATE_LOW,
    "update_high": UPDATE_HIGH,
    "no_progress": NO_PROGRESS,
    "early_fraction": EARLY_FRACTION,
    "early_min": EARLY_MIN,
    "early_rise": EARLY_RISE,
}

_SGD_NAMES = ("sgd", "torch.SGD", "ravine.SGD")
_MAX_LISTED = 5  # steps quoted in a finding's evidence


@dataclass
class Finding:
    """One problem found in a run.

    Attributes:
        code: a stable identifier (``"divergence"``, ``"loss_spikes"``, ...; see the module docstring).
        severity: ``"problem"`` (the run failed or did not learn) or ``"warning"``.
        title: the problem in a few words.
        evidence: what the metrics show, with step numbers and values.
        suggestion: the change to try.
        steps: the steps the evidence refers to.
        values: the numbers behind the evidence, by name.
    """

    code: str
    severity: str
    title: str
    evidence: str
    suggestion: str
    steps: list[int] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready values (non-finite numbers as strings "inf", "-inf", "nan")."""
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "evidence": self.evidence,
            "suggestion": self.suggestion,
            "steps": [int(s) for s in self.steps],
            "values": {k: _jsonable(v) for k, v in self.values.items()},
        }


@dataclass
class Diagnosis:
    """The findings of :func:`diagnose` for one run.

    Attributes:
        run: the run directory.
        status: the run's status (``"completed"``, ``"diverged"``, ...).
        steps: the number of step records read.
        findings: the problems found (empty for a healthy run).
        notes: checks that could not run and why (e.g. no Hessian recorded).
    """

    run: str
    status: str
    steps: int
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)

    @property
    def codes(self) -> list[str]:
        """The codes of the findings, in order."""
        return [f.code for f in self.findings]

    def to_dict(self) -> dict[str, Any]:
        """The diagnosis as JSON-ready values (what ``ravine diagnose --json`` prints)."""
        return {
            "run": self.run,
            "status": self.status,
            "steps": self.steps,
            "healthy": not self.findings,
            "findings": [f.to_dict() for f in self.findings],
            "notes": list(self.notes),
            "thresholds": dict(THRESHOLDS),
        }

    def to_text(self) -> str:
        """A plain-text report: one block per finding (evidence, suggestion), then the notes."""
        lines = [f"run {self.run}: status {self.status}, {self.steps} steps"]
        if not self.findings:
            lines.append("no problems found")
        for f in self.findings:
            lines += ["", f"[{f.severity}] {f.title} ({f.code})", f"  evidence: {f.evidence}", f"  try: {f.suggestion}"]
        if self.notes:
            lines += ["", "notes:"] + [f"  {n}" for n in self.notes]
        return "\n".join(lines)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        v = float(v)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _g(x: float) -> str:
    return f"{x:.3g}"


def _listing(steps: np.ndarray, values: np.ndarray, what: str) -> str:
    shown = ", ".join(f"step {int(s)} ({what} {_g(float(v))})" for s, v in zip(steps[:_MAX_LISTED], values))
    more = len(steps) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
    """``m[k]`` = median of the finite values among ``x[k-window:k]`` (NaN with fewer than ``MIN_HISTORY``)."""
    out = np.full(len(x), np.nan)
    for k in range(1, len(x)):
        prev = x[max(0, k - window) : k]
        prev = prev[np.isfinite(prev)]
        if len(prev) >= MIN_HISTORY:
            out[k] = np.median(prev)
    return out


class _Metrics:
    """The columns the checks read, from a run's records."""

    def __init__(self, run: Run):
        self.config = run.config_dict
        recs = run.metrics
        self.step = np.array([r["step"] for r in recs], dtype=int)

        def col(name: str) -> np.ndarray:
            return np.array([_num(r.get(name)) for r in recs], dtype=float)

        self.loss, self.lr, self.grad = col("loss"), col("lr"), col("grad_norm")
        self.ratio = col("update_ratio")
        self.skipped = np.array([bool(r.get("skipped", False)) for r in recs])
        self.diverged = np.array([bool(r.get("diverged", False)) for r in recs])
        has_clip = self.config.get("clip") is not None
        key = "clipped" if has_clip else "opt_clipped"
        self.clipping = has_clip or any(key in r for r in recs)
        self.clipped = np.array([bool(r.get(key, False)) for r in recs])
        self.evals = run.evals
        self.hessian = run.hessian
        n = len(recs)
        self.early = min(n, max(EARLY_MIN, int(math.ceil(EARLY_FRACTION * n))))
        self.initial = _initial_loss(self)
        self.final = _final_loss(self)

    def head(self, n: int) -> _Metrics:
        """The first ``n`` step records (the evaluations, Hessian records and losses of reference kept)."""
        out = copy.copy(self)
        for name in ("step", "loss", "lr", "grad", "ratio", "skipped", "diverged", "clipped"):
            setattr(out, name, getattr(self, name)[:n])
        out.early = min(n, self.early)
        return out


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def _initial_loss(m: _Metrics) -> float:
    for e in m.evals:
        if e.get("step") == 0 and math.isfinite(_num(e.get("train_loss"))):
            return float(e["train_loss"])
    return float(m.loss[0]) if len(m.loss) else math.nan


def _final_loss(m: _Metrics) -> float:
    if m.evals and m.evals[-1].get("step", 0) > 0 and len(m.step) and m.evals[-1]["step"] >= m.step[-1]:
        return _num(m.evals[-1].get("train_loss"))
    tail = m.loss[-max(1, len(m.loss) // 10) :]
    return float(np.median(tail)) if len(tail) else math.nan


# ------------------------------------------------------------------------------------------- checks


def _blowup(m: _Metrics, status: str) -> int | None:
    """The index of the record that shows the divergence: the first non-finite or ``diverged`` one,
    else the last one when the status is ``"diverged"`` or the final loss is above ``DIVERGED_RATIO``
    times the initial; None when the run did not diverge."""
    bad = np.nonzero(~np.isfinite(m.loss) | m.diverged)[0]
    if len(bad):
        return int(bad[0])
    grew = math.isfinite(m.initial) and m.initial > 0 and m.final > DIVERGED_RATIO * m.initial
    if (status == "diverged" or grew) and len(m.loss):
        return len(m.loss) - 1
    return None


def _onset(m: _Metrics, k: int) -> int:
    """Where the divergence shown at index ``k`` began: the index of the lowest loss before it."""
    finite = np.where(np.isfinite(m.loss[:k]), m.loss[:k], np.inf)
    return int(np.argmin(finite)) if k else 0


def _divergence(m: _Metrics, k: int) -> list[Finding]:
    j = _onset(m, k)
    lr = m.lr[k]
    return [
        Finding(
            "divergence",
            "problem",
            "training diverged",
            f"the loss rose from its lowest, {_g(m.loss[j])} at step {int(m.step[j])}, to {_g(m.loss[k])} at step "
            f"{int(m.step[k])} (initial {_g(m.initial)}) with learning rate {_g(lr)}",
            f"lower the learning rate (below {_g(lr / 10)}: run `ravine lr-find` on this config), add warmup "
            "or gradient clipping",
            [int(m.step[j]), int(m.step[k])],
            {"loss": float(m.loss[k]), "lr": float(lr), "lowest_loss": float(m.loss[j]), "lowest_step": int(m.step[j])},
        )
    ]


def _nonfinite_gradients(m: _Metrics) -> list[Finding]:
    idx = np.nonzero(m.skipped)[0]
    if not len(idx):
        return []
    return [
        Finding(
            "nonfinite_gradients",
            "warning",
            "steps skipped for non-finite gradients",
            f"{len(idx)} step(s) had a NaN or infinite gradient and were skipped: "
            + ", ".join(f"step {int(s)}" for s in m.step[idx][:_MAX_LISTED]),
            "lower the learning rate, clip gradients, or compute the loss in float32 (not float16)",
            [int(s) for s in m.step[idx]],
            {"count": int(len(idx))},
        )
    ]


def _spikes(m: _Metrics) -> np.ndarray:
    """Indices of loss spikes (both SPIKE conditions)."""
    med = _running_median(m.loss, WINDOW)
    with np.errstate(invalid="ignore"):
        hit = (m.loss >= SPIKE_RATIO * med) & (m.loss - med >= SPIKE_ABS * m.initial) & np.isfinite(m.loss)
    return np.nonzero(hit)[0]


def _explosions(m: _Metrics) -> np.ndarray:
    """Indices of gradient-norm explosions: ``GRAD_RATIO`` times the larger of the running median and
    the median over the whole run (so a norm rising from a converged run's near-zero does not count)."""
    finite = m.grad[np.isfinite(m.grad)]
    overall = float(np.median(finite)) if len(finite) else math.nan
    med = np.fmax(_running_median(m.grad, WINDOW), overall)
    with np.errstate(invalid="ignore"):
        hit = (m.grad >= GRAD_RATIO * med) | (np.isinf(m.grad))
    return np.nonzero(hit)[0]


def _no_warmup(m: _Metrics) -> bool:
    lr = m.lr[np.isfinite(m.lr)]
    if not len(lr):
        return True
    head = lr[: max(1, int(math.ceil(0.2 * len(m.lr))))]
    return bool(lr[0] >= 0.5 * head.max())


def _loss_spikes(m: _Metrics, spikes: np.ndarray) -> list[Finding]:
    late = spikes
    if not len(late):
        return []
    med = _running_median(m.loss, WINDOW)
    lr = m.lr[late[0]]
    clip = "" if m.clipping else ", or clip the gradient norm"
    return [
        Finding(
            "loss_spikes",
            "warning",
            "loss spikes",
            f"{len(late)} step(s) with the loss at least {SPIKE_RATIO:g}x the median of the previous {WINDOW}: "
            + _listing(m.step[late], m.loss[late], "loss")
            + f"; the median before the first was {_g(med[late[0]])}, the learning rate {_g(lr)}",
            f"lower the learning rate (e.g. to {_g(lr / 3)}){clip}; a larger batch also smooths the loss",
            [int(s) for s in m.step[late]],
            {"count": int(len(late)), "first_loss": float(m.loss[late[0]]), "median_before": float(med[late[0]])},
        )
    ]


def _grad_explosions(m: _Metrics, explosions: np.ndarray) -> list[Finding]:
    if not len(explosions):
        return []
    finite = m.grad[np.isfinite(m.grad)]
    typical = float(np.median(finite)) if len(finite) else math.nan
    p90 = float(np.percentile(finite, 90)) if len(finite) else math.nan
    if m.clipping:
        advice = "clipping is on but the norms still explode: lower the learning rate"
    else:
        advice = (
            f"clip the global gradient norm near its 90th percentile ({_g(p90)}): "
            f'clip={{"kind": "norm", "max_norm": {_g(p90)}}}'
        )
    return [
        Finding(
            "grad_norm_explosions",
            "warning",
            "gradient-norm explosions",
            f"{len(explosions)} step(s) with the gradient norm at least {GRAD_RATIO:g}x its median (over the "
            f"previous {WINDOW} steps and over the run, {_g(typical)}): "
            + _listing(m.step[explosions], m.grad[explosions], "norm"),
            advice,
            [int(s) for s in m.step[explosions]],
            {"count": int(len(explosions)), "median_norm": typical, "p90_norm": p90},
        )
    ]


def _clipping(m: _Metrics) -> list[Finding]:
    if not m.clipping or not len(m.step):
        return []
    active = ~m.skipped & np.isfinite(m.grad)
    n = int(active.sum())
    frac = float(m.clipped[active].mean()) if n else 0.0
    clip = m.config.get("clip") or {}
    limit = clip.get("max_norm")
    norms = m.grad[active]
    median = float(np.median(norms)) if n else math.nan
    p90 = float(np.percentile(norms, 90)) if n else math.nan
    where = f"max_norm={_g(limit)}" if limit is not None else "the clipping threshold"
    if frac > CLIP_MOST:
        return [
            Finding(
                "clipping_most_steps",
                "warning",
                "clipping on most steps (threshold too low)",
                f"{frac:.0%} of {n} steps were clipped at {where}; the median gradient norm before clipping was "
                f"{_g(median)}",
                f"raise the threshold to about the 90th percentile of the norms ({_g(p90)}) so clipping catches "
                "outliers only, or lower the learning rate instead",
                [],
                {"fraction": frac, "median_norm": median, "p90_norm": p90, "max_norm": limit},
            )
        ]
    if frac == 0 and n >= CLIP_MIN_STEPS:
        top = float(norms.max())
        return [
            Finding(
                "clipping_never",
                "warning",
                "clipping never acted (no effect)",
                f"none of {n} steps was clipped at {where}; the largest gradient norm was {_g(top)}",
                f"to guard against spikes, set the threshold near the 90th percentile of the norms ({_g(p90)}); "
                "otherwise remove it",
                [],
                {"fraction": 0.0, "max_seen": top, "p90_norm": p90, "max_norm": limit},
            )
        ]
    return []


def _update_ratio(m: _Metrics) -> list[Finding]:
    r = m.ratio[m.early :][~m.skipped[m.early :]]
    r = r[np.isfinite(r)]
    if len(r) < 10:
        return []
    med = float(np.median(r))
    lr = float(np.nanmedian(m.lr)) if np.isfinite(m.lr).any() else math.nan
    if med > UPDATE_HIGH:
        return [
            Finding(
                "update_ratio_high",
                "warning",
                "updates large relative to the weights",
                f"median update-to-weight ratio {_g(med)} after step {int(m.step[m.early - 1])} (usual: ~1e-3, "
                f"flagged above {UPDATE_HIGH:g}) at a median learning rate of {_g(lr)}",
                f"lower the learning rate (about {_g(lr * 1e-3 / med)} would give ~1e-3)",
                [],
                {"median_ratio": med, "median_lr": lr},
            )
        ]
    slow = not (math.isfinite(m.final) and m.final <= SLOW_PROGRESS * m.initial)
    if med < UPDATE_LOW and slow:
        return [
            Finding(
                "update_ratio_low",
                "warning",
                "updates tiny relative to the weights",
                f"median update-to-weight ratio {_g(med)} after step {int(m.step[m.early - 1])} (usual: ~1e-3, "
                f"flagged below {UPDATE_LOW:g}) at a median learning rate of {_g(lr)}",
                f"raise the learning rate (about {_g(lr * 1e-3 / med)} would give ~1e-3; check with `ravine lr-find`)",
                [],
                {"median_ratio": med, "median_lr": lr},
            )
        ]
    return []


def _no_progress(m: _Metrics) -> list[Finding]:
    if not (math.isfinite(m.initial) and math.isfinite(m.final)) or m.initial <= 0:
        return []
    if m.final <= NO_PROGRESS * m.initial:
        return []
    lr = float(np.nanmedian(m.lr)) if np.isfinite(m.lr).any() else math.nan
    return [
        Finding(
            "no_progress",
            "problem",
            "no progress",
            f"the training loss went from {_g(m.initial)} to {_g(m.final)} in {len(m.step)} steps (flagged when "
            f"above {NO_PROGRESS:g}x the initial) at a median learning rate of {_g(lr)}",
            "find a working learning rate with `ravine lr-find` (too low barely moves the weights, too high "
            "bounces); check the update-to-weight ratio",
            [int(m.step[-1])] if len(m.step) else [],
            {"initial_loss": m.initial, "final_loss": m.final, "median_lr": lr},
        )
    ]


def _early_instability(m: _Metrics, spikes: np.ndarray, explosions: np.ndarray) -> list[Finding]:
    if not len(m.step) or not _no_warmup(m):
        return []
    head = m.loss[: m.early]
    early_spikes = spikes[spikes < m.early]
    early_explosions = explosions[explosions < m.early]
    k = int(np.nanargmax(head)) if np.isfinite(head).any() else 0
    rose = bool(np.isfinite(head[k]) and head[k] > EARLY_RISE * m.initial)
    if not (rose or len(early_spikes) or len(early_explosions)):
        return []
    parts = []
    if rose:
        parts.append(f"the loss rose to {_g(head[k])} at step {int(m.step[k])} (initial {_g(m.initial)})")
    if len(early_spikes):
        parts.append(
            f"{len(early_spikes)} loss spike(s) ({_listing(m.step[early_spikes], m.loss[early_spikes], 'loss')})"
        )
    if len(early_explosions):
        parts.append(
            f"{len(early_explosions)} gradient-norm explosion(s) "
            f"({_listing(m.step[early_explosions], m.grad[early_explosions], 'norm')})"
        )
    lr = float(m.lr[0]) if len(m.lr) else math.nan
    warm = max(1, m.early)
    total = m.config.get("steps", len(m.step))
    steps = sorted({int(m.step[i]) for i in [*early_spikes, *early_explosions]} | ({int(m.step[k])} if rose else set()))
    return [
        Finding(
            "early_instability",
            "warning",
            "early instability without warmup",
            f"in the first {m.early} steps " + "; ".join(parts) + f", with the full learning rate {_g(lr)} from the "
            "first step",
            f'warm the learning rate up over the first ~{warm} steps, e.g. schedule="warmup_cosine", '
            f'schedule_kwargs={{"peak": {_g(lr)}, "warmup_steps": {warm}, "total_steps": {total}}}',
            steps,
            {"initial_loss": m.initial, "early_max_loss": float(head[k]), "lr": lr},
        )
    ]


def _stability_factor(config: dict[str, Any]) -> float | None:
    """``lr * threshold``: 2 for plain SGD, (2 + 2 mu) for heavy ball, (2 + 2 mu) / (1 + 2 mu) for Nesterov."""
    if config.get("optimizer") not in _SGD_NAMES:
        return None
    kw = config.get("optimizer_kwargs") or {}
    mu = float(kw.get("momentum", 0.0) or 0.0)
    if kw.get("nesterov"):
        return (2 + 2 * mu) / (1 + 2 * mu)
    return 2 + 2 * mu


def _sharpness(m: _Metrics, notes: list[str]) -> list[Finding]:
    if not m.hessian:
        notes.append("sharpness: not recorded (set hessian_every > 0 to record the top Hessian eigenvalue)")
        return []
    factor = _stability_factor(m.config)
    if factor is None:
        notes.append(
            f"sharpness: recorded, but the 2/lr threshold is gradient descent's; for {m.config.get('optimizer')!r} "
            "the preconditioned Hessian sets stability, so it is not compared"
        )
        return []
    lr_at = dict(zip(m.step.tolist(), m.lr.tolist()))
    over = []
    for h in m.hessian:
        s, eig = int(h["step"]), _num(h.get("top_eig"))
        lr = lr_at.get(s + 1, lr_at.get(s, math.nan))  # the update that follows the measurement
        if math.isfinite(eig) and math.isfinite(lr) and lr > 0 and eig > factor / lr:
            over.append((s, eig, factor / lr, lr))
    if not over:
        return []
    s0, eig0, thr0, lr0 = over[0]
    peak = max(over, key=lambda o: o[1] / o[2])
    return [
        Finding(
            "sharpness_above_threshold",
            "warning",
            "sharpness above the stability threshold",
            f"the top Hessian eigenvalue exceeded {_g(factor)}/lr at {len(over)} of {len(m.hessian)} measurements: "
            + ", ".join(f"step {s} ({_g(e)} > {_g(t)})" for s, e, t, _ in over[:_MAX_LISTED])
            + f"; at most {peak[1] / peak[2]:.2f}x the threshold",
            f"gradient descent is unstable along that direction (edge of stability: the loss oscillates or "
            f"catapults); for stable descent keep lr below {_g(factor / peak[1])} ({_g(factor)} / top eigenvalue)",
            [s for s, *_ in over],
            {"first_top_eig": eig0, "first_threshold": thr0, "lr": lr0, "max_ratio": peak[1] / peak[2]},
        )
    ]


def diagnose(run: Run | str | os.PathLike) -> Diagnosis:
    """Read a run's metrics and report what went wrong, each finding with evidence and a suggestion.

    The checks and their thresholds are listed in :mod:`ravine.experiments.diagnose`'s docstring
    (divergence, non-finite gradients, loss spikes, gradient-norm explosions, clipping on most steps
    or never, update-to-weight ratio far from ~1e-3, no progress, early instability without warmup,
    sharpness above ``2 / lr``). A healthy run gets an empty ``findings`` list.

    Args:
        run: a :class:`~ravine.experiments.runs.Run` or the path of a run directory.

    Returns:
        A :class:`Diagnosis`; ``to_text()`` is the plain report, ``to_dict()`` the JSON one.
    """
    if not isinstance(run, Run):
        run = Run(run)  # FileNotFoundError naming the path when it is not a run directory
    m = _Metrics(run)
    status = run.status
    notes: list[str] = []
    if not len(m.step):
        notes.append("no step records: nothing to diagnose yet")
        return Diagnosis(str(run.path), status, 0, [], notes)
    full, n_steps = m, len(m.step)
    k = _blowup(m, status)
    diverged = k is not None
    findings = _divergence(m, k) if diverged else []
    if diverged:  # the steps of the blow-up itself are the divergence's evidence, not separate findings
        m = m.head(_onset(m, k))
    spikes, explosions = _spikes(m), _explosions(m)
    findings += _nonfinite_gradients(m)
    early = _early_instability(m, spikes, explosions)
    if early:  # the early spikes and explosions are that finding's evidence
        spikes, explosions = spikes[spikes >= m.early], explosions[explosions >= m.early]
    findings += early
    findings += _loss_spikes(m, spikes)
    findings += _grad_explosions(m, explosions)
    findings += _clipping(m)
    findings += _update_ratio(m)
    if not diverged:
        findings += _no_progress(m)
    findings += _sharpness(full, notes)
    if status == "running":
        notes.append("the run is still running: the diagnosis covers the steps recorded so far")
    return Diagnosis(str(run.path), status, n_steps, findings, notes)
