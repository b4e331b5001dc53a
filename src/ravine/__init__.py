"""Ravine: a lab for how neural networks are optimized.

Layers (data flows down; nothing imports upward):

- ``ravine.optim``, ``ravine.schedules``: the core (torch and numpy only);
- ``ravine.surfaces``, ``ravine.simulate``: the 2D world;
- ``ravine.landscape``, ``ravine.curvature``: instruments for real networks;
- ``ravine.experiments``: the chapter's claims as reproducible runs;
- ``ravine.plots``, ``ravine.report``, ``ravine.web``, ``ravine.cli``: presentation.
"""

__version__ = "0.1.0"
