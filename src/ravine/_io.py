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


def check_output_path(name: str, path: str | os.PathLike, *, folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written; raise ``ValueError`` naming ``name`` if not.

    The one check every command runs on its output arguments, so that a bad path fails in
    milliseconds with one line (``--out 'a/b.png': 'a' is a file, not a folder``) rather than
    with a traceback after minutes of work. It refuses:

    - a file path that is an existing folder, or an existing special file (a device, a FIFO, a
      socket: the atomic rename of :func:`atomic_path` would replace it);
    - a folder path (``folder=True``) that is an existing file;
    - a path under an existing file (``a/b.png`` where ``a`` is a file);
    - a path whose nearest existing folder does not take a new file: read-only, no permission,
      or a kernel pseudo-filesystem such as ``/proc`` (found by creating and removing an empty
      temporary file there, the same operation :func:`atomic_path` starts with).

    Missing folders are fine (writers create them); nothing is left behind.

    Args:
        name: the argument as the user wrote it, e.g. ``"--out"``; it starts the message.
        path: the output path to check.
        folder: ``path`` is a folder to write into rather than a file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``"{name} {path!r}: {what is wrong}"``.
    """
    p = Path(path)
    where = f"{name} {str(path)!r}"
    if not str(path):
        raise ValueError(f"{name} must be a path, got an empty string")
    if p.exists():
        if folder and not p.is_dir():
            raise ValueError(f"{where}: is an existing file; give a folder (existing or new)")
        if not folder and p.is_dir():
            raise ValueError(f"{where}: is a folder; give a file path")
        if not folder and not p.is_file():
            raise ValueError(f"{where}: is a special file (device, FIFO or socket); give a regular file path")
    existing = p if folder and p.is_dir() else p.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{where}: {str(existing)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ravine-probe-", dir=existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(
            f"{where}: cannot create a file in {str(existing)!r} ({reason}); choose a writable folder"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return p


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
