"""Ravine: a lab for how neural networks are optimized.

Layers, bottom to top (data flows down; nothing imports upward, ``tests/test_layering.py`` checks it):

- ``ravine.optim``, ``ravine.schedules``: the core (torch and numpy only);
- ``ravine.surfaces``, ``ravine.simulate``: the 2D world;
- ``ravine.landscape``, ``ravine.curvature``: instruments for real networks;
- ``ravine.plots``: figures drawn from data;
- ``ravine.experiments``: the chapter's claims as reproducible runs (they draw through ``ravine.plots``);
- ``ravine.report``, ``ravine.web``, ``ravine.cli``: presentation.

This package module holds only the version, so importing any layer imports nothing above it.
"""

__version__ = "0.1.0"
