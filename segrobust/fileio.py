"""File access: atomic writes (the one place segrobust replaces a file on disk), guarded reads, owned output folders.

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

An output folder ([OutputFolder][segrobust.fileio.OutputFolder]) is locked for
a run and records what segrobust wrote there, so that nothing it did not write
is ever overwritten (``segrobust benchmark`` and ``segrobust train`` use it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Callable, Optional, Union

import torch

from segrobust.utils import error_line

__all__ = [
    "OutputFolder",
    "OutputFolderError",
    "UnreadableFileError",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_regular_file",
    "file_sha256",
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


def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- output folders
class OutputFolderError(ValueError):
    """The output folder cannot be used: not a folder, not writable, locked, or holding files segrobust did not write."""


#: The largest ownership record segrobust reads back.
_MAX_RECORD_BYTES = 16 * 2**20


class OutputFolder:
    """``OUT`` of a ``command`` (``"benchmark"``, ``"train"``): made if missing, locked, touched only where segrobust owns it.

    ``OUT/.segrobust-<command>.lock`` is held with ``fcntl.flock`` for the run
    (the kernel drops it when the process dies), so two runs never write one
    folder. ``OUT/.segrobust-<command>.json`` records what segrobust wrote:
    files with their SHA-256 (a file of that name that is not recorded, or was
    changed since, is never overwritten), sub-folders it made and owns
    whatever they hold (e.g. ``checkpoints``), and the settings of the run
    that wrote them (a resumed run must match them).

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder, OutputFolder(folder) as out:
        ...     out.check_files(["results.json"])  # nothing foreign there
    """

    def __init__(self, path: PathLike, command: str = "benchmark"):
        self.path = Path(path)
        self.command = command
        self.marker = self.path / f".segrobust-{command}.json"
        self.lock_path = self.path / f".segrobust-{command}.lock"
        self._format = f"segrobust.{command}.output/1"
        self._lock: Optional[Any] = None

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> OutputFolder:
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    def lock(self) -> None:
        """Make the folder if needed and take its lock; [OutputFolderError][segrobust.fileio.OutputFolderError] if another run holds it."""
        import fcntl

        self._make()
        try:
            handle = open(self.lock_path, "a")
        except OSError as error:
            raise OutputFolderError(f"--out {self.path}: cannot create its lock file: {error_line(error)}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputFolderError(
                    f"--out {self.path} is in use by another segrobust {self.command} run (it holds {self.lock_path}); "
                    "wait for it or choose another --out"
                ) from None
            raise OutputFolderError(f"--out {self.path}: cannot lock {self.lock_path}: {error_line(error)}") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _make(self) -> None:
        path = self.path
        for parent in [path, *path.parents]:
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == path else f"is inside {parent}, which is a file"
                raise OutputFolderError(f"--out {path} {where}; give a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputFolderError(f"--out {path}: cannot create the folder: {error_line(error)}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputFolderError(f"--out {path} is not writable")

    # ------------------------------------------------------------------ the record
    def _record(self) -> dict[str, Any]:
        """The ownership record (empty without one); a damaged or foreign record stops the run."""
        if not (self.marker.exists() or self.marker.is_symlink()):
            return {"files": {}, "folders": []}
        try:
            data = json.loads(read_bytes_limited(self.marker, "record", _MAX_RECORD_BYTES))
        except (OSError, ValueError):
            data = None
        if (
            not isinstance(data, dict)
            or data.get("format") != self._format
            or not isinstance(data.get("files"), dict)
            or not isinstance(data.get("folders", []), list)
        ):
            raise OutputFolderError(f"{self.marker} is not a segrobust {self.command} record; choose another --out")
        return {
            "files": {str(k): str(v) for k, v in data["files"].items()},
            "folders": [str(name) for name in data.get("folders", [])],
            **({"settings": data["settings"]} if "settings" in data else {}),
        }

    def _write_record(self, record: Mapping[str, Any]) -> None:
        payload = {"format": self._format, **record, "files": dict(sorted(record["files"].items()))}
        if not payload.get("folders"):
            payload.pop("folders", None)
        atomic_write_text(self.marker, json.dumps(payload, indent=2) + "\n")

    def check_files(self, names: Iterable[str]) -> None:
        """Refuse when a file of one of these names is there but was not written by segrobust (or was changed since)."""
        recorded = self._record()["files"]
        for name in names:
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if target.is_symlink() or not target.is_file() or recorded.get(name) != file_sha256(target):
                raise OutputFolderError(
                    f"{target} was not written by segrobust {self.command} (or was changed since); "
                    "segrobust does not overwrite it: move it or choose another --out"
                )

    def check_folder(self, name: str) -> None:
        """Refuse when sub-folder ``name`` is there but segrobust did not make it."""
        target = self.path / name
        if (target.exists() or target.is_symlink()) and name not in self._record()["folders"]:
            raise OutputFolderError(
                f"{target} was not made by segrobust {self.command}; segrobust does not write into it: "
                "move it or choose another --out"
            )

    def record(self, paths: Iterable[PathLike]) -> None:
        """Note the files just written (name and SHA-256) in the record."""
        record = self._record()
        for path in paths:
            record["files"][Path(path).name] = file_sha256(path)
        self._write_record(record)

    def claim_folder(self, name: str) -> Path:
        """Record sub-folder ``name`` as segrobust's (call `check_folder` first) and make it."""
        record = self._record()
        if name not in record["folders"]:
            record["folders"] = sorted([*record["folders"], name])
            self._write_record(record)
        (self.path / name).mkdir(parents=True, exist_ok=True)
        return self.path / name

    def settings(self) -> Optional[dict[str, Any]]:
        """The settings recorded by the run that wrote the folder (``None`` if none were)."""
        settings = self._record().get("settings")
        return dict(settings) if isinstance(settings, dict) else None

    def record_settings(self, settings: Mapping[str, Any]) -> None:
        """Record the settings of this run (JSON values)."""
        self._write_record({**self._record(), "settings": dict(settings)})
