"""The result of a slice, :class:`Landscape`: grid, loss (and metric) values, and how they were made.

Saved as one ``.npz`` (arrays plus the metadata as JSON bytes, read back without unpickling) and a
readable ``.json`` copy of the metadata, both written atomically through :mod:`ravine._io`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ravine._io import atomic_path, write_text

__all__ = ["Landscape", "accuracy"]

_FORMAT = "ravine.landscape/1"


@dataclass
class Landscape:
    """A computed (or partially computed) line or plane of loss values.

    ``x`` (and ``y`` for a plane): the grid coordinates along ``d1`` (and ``d2``). ``loss``: shape
    ``(len(x),)`` for a line, ``(len(y), len(x))`` for a plane with ``loss[i, j] = L(w0 + x[j] d1 +
    y[i] d2)`` (matplotlib's ``contour(x, y, loss)`` layout). ``metric``: same shape, when a metric
    was given (e.g. :func:`accuracy`). ``filled``: which entries are computed (all, once complete).
    ``directions``: the directions' description; ``data``: the samples used (``n``, ``indices`` or
    ``"all"``); ``seed``; ``batch_norm`` (``"eval"`` or ``"recompute"``); ``dropout`` (always
    ``"off"``); ``points``: named coordinates to mark (the centre is always ``(0, 0)``);
    ``off_plane``: for a PCA plane, each iterate's distance off it; ``info``: dtype, device, parameter
    count, fingerprints of centre and directions, loss and metric names, evaluation path, timing.
    """

    kind: str
    x: np.ndarray
    y: np.ndarray | None
    loss: np.ndarray
    metric: np.ndarray | None
    filled: np.ndarray
    directions: dict[str, Any]
    data: dict[str, Any]
    seed: int | None
    batch_norm: str
    dropout: str = "off"
    metric_name: str | None = None
    points: dict[str, Any] = field(default_factory=dict)
    off_plane: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every grid point is computed."""
        return bool(self.filled.all())

    def _metadata(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "kind": self.kind,
            "directions": self.directions,
            "data": self.data,
            "seed": self.seed,
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
            "metric_name": self.metric_name,
            "points": self.points,
            "info": self.info,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the grid to ``path`` (``.npz``) and its metadata to ``path`` with suffix ``.json``.

        The ``.npz`` holds ``x``, ``y``, ``loss``, ``metric``, ``filled``, ``off_plane`` and the
        metadata JSON (so the ``.npz`` alone is complete); the ``.json`` is a readable copy. Both are
        written atomically (:func:`ravine._io.atomic_path`: a temporary file in the same folder, renamed).
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path must end in .npz, got {str(path)!r}")
        meta = json.dumps(self._metadata(), indent=1, sort_keys=True)
        arrays = {
            "x": self.x,
            "loss": self.loss,
            "filled": self.filled,
            "metadata": np.frombuffer(meta.encode(), dtype=np.uint8),
        }
        if self.y is not None:
            arrays["y"] = self.y
        if self.metric is not None:
            arrays["metric"] = self.metric
        if self.off_plane is not None:
            arrays["off_plane"] = self.off_plane
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        write_text(path.with_suffix(".json"), meta + "\n", fsync=False)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Landscape:
        """Read a landscape written by :meth:`save` (nothing is unpickled)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"landscape file {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as z:
            if "metadata" not in z.files:
                raise ValueError(f"{str(path)!r} is not a ravine landscape file (no metadata)")
            meta = json.loads(z["metadata"].tobytes().decode())
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{str(path)!r} has format {meta.get('format')!r}, expected {_FORMAT!r}")
            arr = {k: z[k] for k in z.files}
        return cls(
            kind=meta["kind"],
            x=arr["x"],
            y=arr.get("y"),
            loss=arr["loss"],
            metric=arr.get("metric"),
            filled=arr["filled"].astype(bool),
            directions=meta["directions"],
            data=meta["data"],
            seed=meta["seed"],
            batch_norm=meta["batch_norm"],
            dropout=meta["dropout"],
            metric_name=meta["metric_name"],
            points=meta["points"],
            off_plane=arr.get("off_plane"),
            info=meta["info"],
        )


def accuracy(output: Tensor, target: Tensor) -> Tensor:
    """Classification accuracy ``mean(argmax(output, -1) == target)``: a ``metric`` for slices."""
    return (output.argmax(-1) == target).to(output.dtype).mean()
