"""The fused execution path of :class:`ravine.optim.Optimizer`: a whole chain as one pass over memory.

``Optimizer(params, transform, fused=True)`` runs the *same* transforms as the unfused path (their
source stays the single definition of the math) on different data:

1. **Flat buffers.** The parameters of a param group are packed, per (device, dtype), into one
   contiguous 1-D buffer and each parameter becomes a view into it (``p.data`` is re-pointed, the
   ``Parameter`` objects stay the same). Gradients are copied into (or, see below, *live in*) a flat
   gradient buffer, and every per-parameter state tensor (``exp_avg``, ``momentum_buffer``...) is a
   view into a flat state buffer. A chain then runs on lists of one tensor per (device, dtype)
   instead of one per parameter: the per-tensor overhead of a 2000-tensor model disappears.
2. **One kernel** (``fused=True`` where ``torch.compile`` works, i.e. inductor with a C++ compiler on
   CPU or triton on GPU): the chain's ``update`` is traced by ``torch.compile(fullgraph=True)``
   over the flat buffers. Every numeric hyperparameter of every primitive (learning rate, betas,
   eps, weight decay, clip norm, momentum...) and the step are passed as 0-dim tensors, so
   schedules, torch LR schedulers and per-group values cause no recompilation (the graph is
   dynamic in the buffer lengths). Inductor fuses the clip norm into one reduction and the rest
   of the chain (clip scale folded in, bias corrections, weight decay, the parameter update) into
   one elementwise kernel: for ``clip_by_global_norm -> adamw`` it reads gradient, parameter and
   both moments and writes the three of them (28 bytes per float32 parameter) after one read of
   the gradient for the norm (4 bytes); ``clip_grad_norm_`` + torch's fused AdamW moves 40. The
   README's tables hold the measured times (``benchmarks/step.py``).
3. **All param groups in one graph** when every group runs flat: the global clip norm spans the
   groups (as ``clip_grad_norm_(model.parameters())``), and the non-finite check
   (``nonfinite="skip"``/``"raise"``, the default) is folded in: the writes are masked
   (``torch.where(finite, new, old)``) and ``finite`` is reduced over all groups' gradients, so a
   skipped step leaves parameters and state untouched (all or nothing) without a pass of its own
   when every chain starts with ``clip_by_global_norm``: the clip norm of the raw gradient is the
   check (gradients that are finite but whose global norm overflows the dtype are skipped too,
   with a warning saying so). A chain that does not clip needs one more read of the gradient for
   the check, its largest ``|g|`` (4 bytes per float32 parameter: what torch's fused optimizers pay
   for GradScaler's ``found_inf``; finite gradients whose 2-norm would overflow are applied, as
   torch applies them). ``nonfinite="apply"`` (torch's semantics) checks nothing. Where some group
   cannot run flat in a step (parameters without gradients), the others run one-group graphs.

Fallback: ``fused="flat"`` (and ``fused=True`` when compilation is unavailable or fails, with a
warning) runs the chain eagerly with torch's foreach ops on the flat buffers: one op per pass for
the whole group instead of one per tensor, no compiler needed. ``fused=None`` (auto) uses the flat
path where the chain is eligible and the unfused path otherwise; it never compiles (a first
compilation costs seconds to a minute).

Eligible chains are built from primitives that declare themselves fusable where they are defined
(``@transform(fusable=True)``: their math is elementwise, or a reduction over all coordinates; all
of :mod:`ravine.optim.transforms` but the unit-wise ``clip_adaptive``, and ``clip_by_value`` on the
flat path only, as it does not compile), with float, schedule or one-element tensor hyperparameters.
Anything that depends on parameter shapes (masks, ``per_row``, broadcast tensor hyperparameters)
is not: ``fused=True`` raises ``ValueError`` naming it, ``fused=None`` falls back to the unfused
path. The one exception is declared where it is defined: a primitive whose math acts on each
parameter's tensor as a whole (``@transform(fusable="matrix")``, Muon's Newton-Schulz step) runs on
each parameter's view of the flat buffers, the rest of its chain on the buffers; with
``fused=True`` it is compiled per shape over the stacked views (:mod:`~ravine.optim.fused.matrix`)
and the chain's elementwise work runs with foreach ops on the flat buffers (one graph for the
whole chain would specialise on every parameter's offset).

Gradients (compiled path) live in the flat buffer: after a compiled step, ``p.grad`` is a view
into the flat gradient buffer (same values). ``zero_grad(set_to_none=False)`` zeroes those views
in place and autograd then accumulates straight into the flat buffer, so the next step copies
nothing. With torch's default ``set_to_none=True`` each step copies the fresh gradients in (8 more
bytes per parameter, as the unfused path does) and re-points ``p.grad``, which frees autograd's
tensors early. The chain never writes into that buffer (its in-place updates act on a copy that
inductor fuses away), so ``p.grad`` stays what autograd computed. The flat path copies the
gradients into its buffer and works there in place, leaving ``p.grad`` alone (one parameter-sized
buffer either way, as the unfused path's gradient copies).

Numbers: the flat path runs the unfused path's operations on longer tensors (bit-identical in the
tests, except that a clip norm is the norm of one flat vector instead of the norm of per-tensor
norms); the compiled path differs by float rounding (fused arithmetic). State is the unfused
path's, in torch's format (views), so ``state_dict`` round trips between fused and unfused
optimizers. Parameters' version counters are bumped each step, as an in-place update would.

Caveats: parameters are views into one buffer, so code that replaces ``p.data`` (``model.to``,
``model.half()``) after the first fused step breaks the sharing; the next step detects it and
rebuilds the buffers (a copy). Parameters sharing memory with each other (tied views), sparse or
non-contiguous parameters make a group ineligible.

The package: :mod:`~ravine.optim.fused.flat` (the buffers), :mod:`~ravine.optim.fused.compiled` (the
traced step and its inductor pass), :mod:`~ravine.optim.fused.matrix` (per-parameter primitives on
the flat buffers), :mod:`~ravine.optim.fused.engine` (what runs where, and the
:class:`~ravine.optim.fused.engine.Host` interface to the optimizer).
"""

from .engine import FUSED_MODES, FusedEngine, Host, check_fusable

__all__ = ["FUSED_MODES", "FusedEngine", "Host", "check_fusable"]
