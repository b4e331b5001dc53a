"""The playground: a FastAPI app whose page draws what ``ravine.simulate`` computes.

``create_app()`` builds the app (JSON API under ``/api``, the page and its assets under ``/``);
``ravine serve`` runs it under uvicorn. The page computes no trajectory, sweep or curvature of its
own: every number it draws comes from the JSON API, which calls ``ravine.surfaces`` and
``ravine.simulate`` (and so ``ravine.optim`` and ``ravine.schedules``).
"""

from __future__ import annotations

from ravine.web.app import create_app

__all__ = ["create_app"]
