"""Atomic file writes: the one place segrobust replaces a file on disk.

A reader (or a run resumed after a crash mid-write) sees either the old file or
the new one, never half a file. The temporary file lives beside the target (so
``os.replace`` is atomic), is opened with ``"xb"`` so it honours the umask like
an ordinary ``open`` (``tempfile.mkstemp`` would leave mode 0600), is fsynced
before the rename, and is removed if anything fails.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Union

import torch

__all__ = ["atomic_torch_save", "atomic_write", "atomic_write_bytes", "atomic_write_text"]

PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it over ``path``.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     target = atomic_write(f"{folder}/a.bin", lambda handle: handle.write(b"abc"))
        ...     target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
        (b'abc', ['a.bin'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))
