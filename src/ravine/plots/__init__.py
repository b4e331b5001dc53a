"""Figures (matplotlib, static PNG/SVG; plotly where a figure is interactive).

One submodule per layer it draws: ``schedules``, ``surfaces`` (the 2D world),
``landscape`` and ``curvature`` (real networks), ``experiments``, ``scaling`` (trends along the axis a
claim depends on, with the spread over seeds), ``depth`` (the same for the warmup and weight-decay
claims: depth, learning rate, weight decay), ``escape`` (the landscape claims: where noisy and noiseless
runs end on a 2D surface, plateaus, curvature and condition numbers along training). All of them save through
:func:`ravine.plots._style.save`, which writes to a temporary name and renames, so a figure on
disk is never half-written. ``stability`` draws the Edge-of-Stability figure: a run's sharpness
against its optimizer's stability threshold, and its loss.
"""
