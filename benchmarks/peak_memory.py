"""Peak memory of one call: what ``benchmarks/step.py`` reports as a step's ``peak extra``.

Imported by the benchmarks (``from peak_memory import peak_step_memory`` with this folder on
``sys.path``) and by the tests that check the fused path allocates no parameter-sized temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["peak_step_memory"]


def peak_step_memory(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated by ``fn()`` beyond what was allocated before it (its temporaries).

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the bytes
    allocated before. Other devices: the events of ``torch.profiler.profile(profile_memory=True)``,
    each with its *self* memory (allocations minus frees not inside a child event) placed at its
    start when positive and at its end when negative, replayed in time order; the peak of the
    running sum (an upper bound: frees are counted as late as possible). Memory kept after ``fn``
    returns (new state) counts too, so measure a step after the first.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.time_range.start if e.self_cpu_memory_usage > 0 else e.time_range.end, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    run = peak = 0
    for _, b in events:
        run += b
        peak = max(peak, run)
    return int(peak)
