"""File access: atomic writes (the one place segrobust replaces a file on disk) and guarded reads.

A reader (or a run resumed after a crash mid-write) sees either the old file or
the new one, never half a file. The temporary file lives beside the target (so
``os.replace`` is atomic), is opened with ``"xb"`` so it honours the umask like
an ordinary ``open`` (``tempfile.mkstemp`` would leave mode 0600), is fsynced
before the rename, and is removed if anything fails.

Every file segrobust *reads* on a user's behalf (configs, results files,
checkpoints, images) first passes [check_regular_file][segrobust.fileio.check_regular_file]:
a FIFO, socket or device would block forever or never end, so only regular
files are read, and a cap on their size keeps the time and memory a file can
ask for bounded.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Union

import torch

__all__ = [
    "UnreadableFileError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_regular_file",
    "read_bytes_limited",
]

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


class UnreadableFileError(ValueError):
    """A file segrobust was asked to read is missing, not a regular file, unreadable or too large."""


def check_regular_file(path: PathLike, name: str, max_bytes: Union[int, None] = None) -> Path:
    """``path`` if it names a readable regular file (links followed) of at most ``max_bytes``.

    Raises [UnreadableFileError][segrobust.fileio.UnreadableFileError] naming
    ``name`` (the argument or the role of the file) otherwise: a missing path,
    a directory, a FIFO, socket or device (reading one blocks or never ends),
    a looping link, or a file larger than ``max_bytes``.

    Examples:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     fifo = os.path.join(folder, "pipe"); os.mkfifo(fifo)
        ...     try:
        ...         check_regular_file(fifo, "--config")
        ...     except UnreadableFileError as error:
        ...         print(str(error).split(": ", 1)[1])
        not a regular file (a FIFO); expected a file
    """
    path = Path(path).expanduser()
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UnreadableFileError(f"{name} {path} does not exist") from None
    except OSError as error:
        raise UnreadableFileError(f"{name} {path}: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UnreadableFileError(f"{name} {path} is a directory; expected a file")
    if not stat.S_ISREG(info.st_mode):
        kind = next(
            (label for test, label in _SPECIAL_FILES if test(info.st_mode)),
            "a special file",
        )
        raise UnreadableFileError(f"{name} {path}: not a regular file ({kind}); expected a file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise UnreadableFileError(
            f"{name} {path} is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit for such a file"
        )
    if not os.access(path, os.R_OK):
        raise UnreadableFileError(f"{name} {path} is not readable")
    return path


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_bytes_limited(path: PathLike, name: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (checked by `check_regular_file`), at most ``max_bytes``.

    The size is checked again while reading, so a file that grows after the
    check cannot make the read unbounded.
    """
    path = check_regular_file(path, name, max_bytes)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnreadableFileError(f"{name} {path} grew past the {max_bytes:,}-byte limit while being read")
    return data
