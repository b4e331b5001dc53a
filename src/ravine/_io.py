"""Atomic file writes: a file on disk is either the old one or the complete new one, never half.

Every writer in ravine (run records, checkpoints' side files, figures, the report, JSON outputs)
goes through :func:`atomic_path`: write to a temporary name in the destination folder, optionally
fsync, give it the usual permissions (``mkstemp`` creates 0600), then ``os.replace``.
Standard library only, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` (default: ``path``'s) matters to writers that pick the format from the name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (fsync'ed by default, so it also survives a power loss)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str, fsync: bool = True) -> Path:
    """:func:`write_bytes` of UTF-8 ``text``."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = False,
               fsync: bool = True) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf raise ``ValueError``) atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=False)
    return write_text(path, text + "\n", fsync=fsync)
