"""The run store: each training run is a directory, written atomically and readable while it grows.

Layout of a run directory::

    config.json          the TrainConfig (JSON), written once when the run starts
    metadata.json        dataset description with its split, resolved model spec, versions, run id
    status.json          {"status": "running"|"completed"|"diverged"|"failed", "step": k, ...}
    metrics.jsonl        append-only, one JSON object per line, flushed after every line
    checkpoints/step_00000100/model.safetensors   model weights (safetensors)
    checkpoints/step_00000100/state.pt            optimizer, sampler, RNG and loop state (torch.save)
    checkpoints/step_00000100/sha256.json         the SHA-256 of each of the two files above

Metric records carry ``"kind"``: ``"step"`` (one per optimizer step), ``"eval"`` (train/test loss and
accuracy), ``"hessian"`` (top Hessian eigenvalue), ``"sharpness"`` (the Edge-of-Stability monitor's
sharpness, threshold and ratio). Every record has ``"step"``.

Atomicity: JSON and checkpoint files are written to a temporary name in the same folder, flushed,
fsynced and renamed with ``os.replace``; a checkpoint folder is complete before it is renamed into
place, so a process killed at any moment leaves either the old or the new version. ``metrics.jsonl``
is appended; a torn last line (a kill mid-write) is ignored by the reader and dropped on resume.

``state.pt`` holds only tensors, numbers, strings, None, lists and dicts and is read with
``torch.load(..., weights_only=True)``: a checkpoint cannot execute code.

Integrity: ``sha256.json`` is written with the checkpoint (inside its folder, before the folder is
renamed into place, so it is as atomic as the files it describes), from the bytes read back from
disk. :func:`load_checkpoint` verifies it before reading a file; a file that differs from its
checksum, or that cannot be read (truncated ``state.pt``, damaged safetensors header), is never
used: loading the latest checkpoint falls back to the previous good one with a warning naming the
damaged file (a resumed run then continues from there, bit for bit as it would have), and loading a
named step raises :class:`RunFileError` naming it. A checkpoint written before checksums existed
is read unverified. A damaged ``config.json`` or ``status.json`` raises :class:`RunFileError` too,
naming the file and what to do.

Runs root: ``runs_root()`` is ``$RAVINE_RUNS`` if set, else ``./runs``. :class:`RunStore` names a run
directory by a content hash of its config, so an identical config finds (and reuses) its run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ravine import _io

from .config import TrainConfig, config_hash

__all__ = [
    "STATUSES",
    "TERMINAL",
    "runs_root",
    "config_hash",
    "Run",
    "RunStore",
    "load_model",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "read_jsonl",
    "MetricsWriter",
    "write_status",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "verify_checkpoint",
    "truncate_metrics",
    "RunFileError",
]

STATUSES = ("running", "completed", "diverged", "failed")
TERMINAL = ("completed", "diverged")
_CKPT_RE = re.compile(r"^step_(\d{8,})$")
_CHECKSUMS = "sha256.json"
_CKPT_FILES = ("model.safetensors", "state.pt")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """Where runs live: ``root`` if given, else ``$RAVINE_RUNS`` if set, else ``./runs``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("RAVINE_RUNS")
    return Path(env) if env else Path("runs")


# ----------------------------------------------------------------------------------------- atomic I/O


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then ``os.replace``."""
    return _io.write_bytes(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 ``text``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN/inf are rejected: ValueError)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


class RunFileError(ValueError):
    """A file of a run that cannot be used as written: truncated, garbled, or different from the
    checksum recorded when it was written. The message names the file and what to do."""


def read_json(path: str | os.PathLike, fix: str = "") -> Any:
    """Parse a JSON file; a file that is not valid JSON raises :class:`RunFileError` naming it.

    Args:
        path: the file.
        fix: what to do about a damaged file, appended to the message.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFileError(
            f"{path} is damaged (not valid JSON: {exc})" + (f"; {fix}" if fix else "")
        ) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    raise TypeError(f"metric value of type {type(o).__name__} is not JSON serializable")


def _encode_record(record: dict[str, Any]) -> str:
    # Non-finite floats are written as JSON-compatible strings ("nan", "inf", "-inf") so every line is
    # strict JSON; the reader turns them back into floats.
    def fix(v: Any) -> Any:
        if isinstance(v, float) and not np.isfinite(v):
            return "nan" if np.isnan(v) else ("inf" if v > 0 else "-inf")
        return v

    return json.dumps({k: fix(v) for k, v in record.items()}, default=_json_default, allow_nan=False)


_NONFINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _decode_record(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (_NONFINITE[v] if isinstance(v, str) and v in _NONFINITE else v) for k, v in d.items()}


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a metrics file: one JSON object per line; a torn (unparsable or unterminated) LAST line is
    ignored, any other bad line raises ValueError naming the line. A missing file reads as ``[]``."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i >= len(lines) - 1 or not any(x.strip() for x in lines[i + 1 :])
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if last:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON (only a torn last line is tolerated)") from None
        if last and not raw.endswith(b"\n"):
            # Parsable but unterminated: the writer was killed before the newline; treat as torn.
            break
        out.append(_decode_record(rec))
    return out


class MetricsWriter:
    """Append-only JSON-lines writer: one record per line, flushed after each line.

    ``fsync()`` forces the data to disk (the harness calls it before every checkpoint, so records up to
    a checkpoint are durable when the checkpoint is).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - long-lived handle

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(_encode_record(record) + "\n")
        self._f.flush()

    def fsync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def truncate_metrics(path: str | os.PathLike, step: int) -> list[dict[str, Any]]:
    """Keep only the records with ``record["step"] <= step`` (and drop a torn last line); rewrite the
    file atomically. Returns the kept records. Used on resume from the checkpoint at ``step``."""
    kept = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= step]
    atomic_write_text(path, "".join(_encode_record(r) + "\n" for r in kept))
    return kept


def write_status(run_dir: str | os.PathLike, status: str, **info: Any) -> None:
    """Write ``status.json`` atomically: ``{"status": status, **info}`` (status must be in STATUSES)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    atomic_write_json(Path(run_dir) / "status.json", {"status": status, **info})


# ---------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the complete checkpoints of a run, ascending."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    steps = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and (p / "model.safetensors").exists() and (p / "state.pt").exists():
            steps.append(int(m.group(1)))
    return sorted(steps)


def _ckpt_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_checkpoint(
    run_dir: str | os.PathLike, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int = 0
) -> Path:
    """Save ``model``'s weights (safetensors) and ``state`` (torch.save) as checkpoint ``step``.

    Both files are written into a hidden temporary folder which is then renamed to
    ``checkpoints/step_XXXXXXXX`` (an existing checkpoint of the same step is replaced). ``keep > 0``
    deletes all but the newest ``keep`` checkpoints afterwards; ``keep=0`` keeps all.
    ``state`` must be ``weights_only``-loadable (checked by loading it back before the rename).
    """
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=root))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / "model.safetensors"))
        torch.save(state, tmp / "state.pt")
        torch.load(tmp / "state.pt", weights_only=True)  # fail now, not at resume time
        sums = {name: _sha256(tmp / name) for name in _CKPT_FILES}  # what is on disk, read back
        _io.write_text(tmp / _CHECKSUMS, json.dumps(sums, indent=2, sort_keys=True) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = _ckpt_dir(run_dir, step)
        if final.exists():
            old = root / f".old.{final.name}.{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep > 0:
        for s in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(_ckpt_dir(run_dir, s), ignore_errors=True)
    return _ckpt_dir(run_dir, step)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _what_to_do(run_dir: str | os.PathLike, step: int, steps: list[int]) -> str:
    """The advice for a damaged checkpoint ``step`` of a run with checkpoints ``steps``."""
    earlier = [s for s in steps if s < step]
    delete_run = f"delete the run ({run_dir}) to train it again from the start"
    if not earlier:
        return delete_run
    return (
        f"delete {_ckpt_dir(run_dir, step)} to resume from the previous checkpoint (step {earlier[-1]}), "
        f"or {delete_run}"
    )


def verify_checkpoint(run_dir: str | os.PathLike, step: int) -> None:
    """Check checkpoint ``step``'s files against the SHA-256 recorded when they were written.

    Raises :class:`RunFileError` naming the first file that differs (or a damaged ``sha256.json``);
    a checkpoint written before checksums were recorded passes unverified.

    Args:
        run_dir: the run directory.
        step: the checkpoint's step.
    """
    d = _ckpt_dir(run_dir, step)
    if not (d / _CHECKSUMS).exists():
        return
    fix = _what_to_do(run_dir, step, list_checkpoints(run_dir))
    sums = read_json(d / _CHECKSUMS, fix=fix)
    if not isinstance(sums, dict) or any(not isinstance(sums.get(n), str) for n in _CKPT_FILES):
        raise RunFileError(f"{d / _CHECKSUMS} is damaged (it does not list {list(_CKPT_FILES)}); {fix}")
    for name in _CKPT_FILES:
        if _sha256(d / name) != sums[name]:
            raise RunFileError(
                f"{d / name} is damaged: its SHA-256 differs from the one recorded when it was written; {fix}"
            )


def _load_one(
    run_dir: str | os.PathLike, step: int, steps: list[int], map_location: str | torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verify and read checkpoint ``step``; :class:`RunFileError` naming a damaged file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    verify_checkpoint(run_dir, step)
    d = _ckpt_dir(run_dir, step)
    try:
        weights = load_file(str(d / "model.safetensors"), device=str(map_location))
    except SafetensorError as exc:
        raise RunFileError(
            f"{d / 'model.safetensors'} is damaged ({exc}); {_what_to_do(run_dir, step, steps)}"
        ) from None
    try:
        state = torch.load(d / "state.pt", map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        first = str(exc).split(". ")[0]
        raise RunFileError(f"{d / 'state.pt'} is damaged ({first}); {_what_to_do(run_dir, step, steps)}") from None
    return weights, state


def load_checkpoint(
    run_dir: str | os.PathLike, step: int | None = None, map_location: str | torch.device = "cpu"
) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """``(step, weights, state)`` of checkpoint ``step`` (default: the latest good one).

    ``weights`` comes from ``model.safetensors``; ``state`` from ``state.pt``, loaded with
    ``weights_only=True``; both are first checked against their recorded SHA-256
    (:func:`verify_checkpoint`). Without ``step``, a damaged latest checkpoint is skipped with a
    ``RuntimeWarning`` naming the file, and the previous good one is returned. Raises
    FileNotFoundError when the run has no (such) checkpoint, :class:`RunFileError` naming the file
    when checkpoint ``step`` (or, without ``step``, every checkpoint) is damaged.

    Args:
        run_dir: the run directory.
        step: the checkpoint to load; ``None`` for the latest good one.
        map_location: where the tensors are loaded.
    """
    steps = list_checkpoints(run_dir)
    if not steps:
        raise FileNotFoundError(f"run {run_dir} has no checkpoint")
    if step is not None:
        if step not in steps:
            raise FileNotFoundError(f"run {run_dir} has no checkpoint at step {step}; available: {steps}")
        return (step, *_load_one(run_dir, step, steps, map_location))
    newest_first = steps[::-1]
    for candidate, previous in zip(newest_first, newest_first[1:]):
        try:
            return (candidate, *_load_one(run_dir, candidate, steps, map_location))
        except RunFileError as exc:
            warnings.warn(
                f"skipping checkpoint step {candidate}: {str(exc).split('; ')[0]}; "
                f"using the previous checkpoint (step {previous})",
                RuntimeWarning,
                stacklevel=2,
            )
    return (steps[0], *_load_one(run_dir, steps[0], steps, map_location))  # the oldest: its error is raised


# ---------------------------------------------------------------------------------------------- Run


class Run:
    """Read access to a run directory (works while the run is still being written).

    Attributes/properties: ``path``, ``config`` (a ``TrainConfig``), ``config_dict``, ``status`` (str,
    ``"missing"`` before status.json exists), ``status_info`` (the whole status dict), ``metadata``,
    ``records`` (all metric records), ``metrics`` (the ``"step"`` records), ``evals``, ``hessian``,
    ``checkpoints`` (steps). ``columns(kind)`` gives numpy columns. ``load_model(step=None)`` rebuilds
    the model with the checkpoint's weights.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "config.json").exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    @property
    def id(self) -> str:
        """The run's directory name."""
        return self.path.name

    @property
    def config_dict(self) -> dict[str, Any]:
        """The run's ``config.json`` as a dict (:class:`RunFileError` if it is damaged)."""
        return read_json(
            self.path / "config.json",
            fix=f"the config of the run cannot be recovered: delete the run ({self.path}) and start it again",
        )

    @property
    def config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config_dict)

    @property
    def status_info(self) -> dict[str, Any]:
        """The run's ``status.json`` (``{"status": "missing"}`` before it exists; :class:`RunFileError`
        if it is damaged)."""
        p = self.path / "status.json"
        if not p.exists():
            return {"status": "missing"}
        info = read_json(p, fix=f"delete it and train the run again to resume it from its last checkpoint "
                                f"(the status is rewritten), or delete the run ({self.path})")
        if not isinstance(info, dict) or info.get("status") not in (*STATUSES, "missing"):
            raise RunFileError(
                f"{p} is damaged (no valid 'status' in it); delete it and train the run again to resume it "
                f"from its last checkpoint, or delete the run ({self.path})"
            )
        return info

    @property
    def status(self) -> str:
        return self.status_info["status"]

    @property
    def done(self) -> bool:
        """True when the run ended by itself (completed or diverged) and can be reused."""
        return self.status in TERMINAL

    @property
    def metadata(self) -> dict[str, Any]:
        p = self.path / "metadata.json"
        return read_json(p, fix="train the run again to rewrite it") if p.exists() else {}

    @property
    def records(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "metrics.jsonl")

    def _kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == kind]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Per-step records: step, loss, lr, grad_norm, grad_norm_clipped, clipped, update_ratio,
        skipped, time, wall (see ``ravine.experiments.train``)."""
        return self._kind("step")

    @property
    def evals(self) -> list[dict[str, Any]]:
        """Evaluation records: step, train_loss, train_acc, test_loss, test_acc."""
        return self._kind("eval")

    @property
    def hessian(self) -> list[dict[str, Any]]:
        """Hessian records: step, top_eig (and eigs: the k largest)."""
        return self._kind("hessian")

    @property
    def sharpness(self) -> list[dict[str, Any]]:
        """Sharpness records (``config.sharpness_every``): step, lambda_max, threshold, ratio, ..."""
        return self._kind("sharpness")

    def columns(self, kind: str = "step") -> dict[str, np.ndarray]:
        """Records of ``kind`` as numpy columns (missing values become NaN; booleans stay bool)."""
        recs = self._kind(kind)
        keys: list[str] = []
        for r in recs:
            keys.extend(k for k in r if k not in keys and k != "kind")
        out: dict[str, np.ndarray] = {}
        for k in keys:
            vals = [r.get(k) for r in recs]
            if all(isinstance(v, bool) for v in vals):
                out[k] = np.array(vals, dtype=bool)
            elif all(isinstance(v, int | float) and not isinstance(v, bool) or v is None for v in vals):
                out[k] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
                if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
                    out[k] = out[k].astype(np.int64)
            else:
                out[k] = np.array(vals, dtype=object)
        return out

    @property
    def checkpoints(self) -> list[int]:
        return list_checkpoints(self.path)

    def load_model(self, step: int | None = None, map_location: str | torch.device = "cpu") -> torch.nn.Module:
        """The run's model with the weights of checkpoint ``step`` (default: latest), in eval mode."""
        return load_model(self.path, step=step, map_location=map_location)

    def load_dataset(self):
        """The run's dataset, rebuilt from its config (same split: data loading is deterministic)."""
        from .data import load

        cfg = self.config
        return load(cfg.data, seed=cfg.data_seed, **cfg.data_kwargs)


def load_model(
    run_dir: str | os.PathLike, step: int | None = None, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Rebuild the model of a run from ``metadata.json``'s model spec and load checkpoint ``step``'s
    weights (latest by default) from safetensors. The model is returned in eval mode, on
    ``map_location``, in the dtype stored in the checkpoint."""
    from .models import from_spec

    run_dir = Path(run_dir)
    meta_p = run_dir / "metadata.json"
    if not meta_p.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no metadata.json)")
    spec = read_json(meta_p, fix=f"delete the run ({run_dir}) and train it again")["model"]
    _, weights, _ = load_checkpoint(run_dir, step, map_location=map_location)
    model = from_spec(spec)
    dtypes = {v.dtype for v in weights.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    model.load_state_dict(weights)
    return model.to(map_location).eval()


class RunStore:
    """Runs under one root folder, named by content hash.

    ``path_for(config)`` is ``root / "<data>-<model>-<optimizer>-<hash12>"``; ``get(config)`` returns the
    :class:`Run` if that directory exists, else None; ``runs()`` iterates every run under the root.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = runs_root(root)

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def run_id(self, config: Any) -> str:
        """The run directory's name: ``data-model-optimizer-<config hash>``."""
        d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        parts = [str(d.get("data", "")), str(d.get("model", "")), str(d.get("optimizer", ""))]
        prefix = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts if p)
        return f"{prefix}-{config_hash(config)}" if prefix else config_hash(config)

    def path_for(self, config: Any) -> Path:
        """Where the run of ``config`` lives (whether or not it exists yet)."""
        return self.root / self.run_id(config)

    def get(self, config: Any) -> Run | None:
        """The run of exactly this config, or ``None`` if none was started."""
        p = self.path_for(config)
        return Run(p) if (p / "config.json").exists() else None

    def is_done(self, config: Any) -> bool:
        """True when a completed (or diverged) run of exactly this config exists."""
        r = self.get(config)
        return r is not None and r.done

    def runs(self) -> Iterator[Run]:
        """Every run in the store, in directory-name order."""
        if not self.root.is_dir():
            return
        for p in sorted(self.root.iterdir()):
            if (p / "config.json").exists():
                yield Run(p)
