"""The benchmark's output folder: its lock, what segrobust owns there, and the per-unit partial results.

Promises (see ``docs/reliability.md``):

- nothing is deleted or overwritten that segrobust did not write: the report
  files are recorded with their SHA-256 in ``OUT/.segrobust-benchmark.json``
  and ``OUT/partial/manifest.json`` lists the unit files of the run that made it;
  anything else found there makes the run stop with [`OutputFolderError`][segrobust.benchmark.OutputFolderError];
- one run at a time per folder: ``OUT/.segrobust-benchmark.lock`` is held with
  ``fcntl.flock`` for the run (the kernel drops it when the process dies);
- a unit file is used only when its checksum and its data fingerprint match.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

import torch

from segrobust.fileio import atomic_torch_save, atomic_write_text

__all__ = [
    "REPORT_FILES",
    "OutputFolder",
    "OutputFolderError",
    "ResumeMismatchError",
    "UnitStore",
    "fingerprint",
    "unit_checksum",
]

PARTIAL_DIR = "partial"
MANIFEST = "manifest.json"
MARKER = ".segrobust-benchmark.json"
LOCK = ".segrobust-benchmark.lock"
PARTIAL_FORMAT = "segrobust.benchmark.partial/2"
MARKER_FORMAT = "segrobust.benchmark.output/1"
#: Files ``write_report`` may write into the output folder.
REPORT_FILES = (
    "results.json",
    "report.md",
    "miou_vs_eps.png",
    "convergence.png",
    "examples.png",
    "rain_examples.png",
    "corruptions.png",
    "corruption_examples.png",
    "robustness_card.png",
)


class ResumeMismatchError(ValueError):
    """``--resume`` on an output folder made with other settings."""


class OutputFolderError(ValueError):
    """The output folder cannot be used: not a folder, not writable, locked, or holding files segrobust did not write."""


def fingerprint(obj: Any) -> str:
    """A short hash of JSON-able settings, of a tensor's bytes, or of a model's weights (for an ``nn.Module``).

    A model's hash covers its state dict and its non-persistent buffers too (the
    ``mean``/``std`` of a [SegmentationModel][segrobust.models.SegmentationModel]).
    """
    digest = hashlib.sha256()
    if isinstance(obj, torch.nn.Module):
        tensors = {**dict(obj.named_buffers()), **obj.state_dict()}
        for name, tensor in sorted(tensors.items()):
            digest.update(name.encode())
            digest.update(_tensor_bytes(tensor))
    elif isinstance(obj, torch.Tensor):
        digest.update(_tensor_bytes(obj))
    else:
        digest.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def unit_checksum(unit: dict[str, Any]) -> str:
    """SHA-256 over a unit's entries (name, dtype, shape and bytes of each tensor; text as is), ``checksum`` excluded."""
    digest = hashlib.sha256()
    for name in sorted(key for key in unit if key != "checksum"):
        value = unit[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(_tensor_bytes(value))
        else:
            digest.update(json.dumps(value, sort_keys=True).encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----------------------------------------------------------------------------- the output folder
class OutputFolder:
    """``OUT``: made if missing, locked for the run, and only touched where segrobust owns the files.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder, OutputFolder(folder) as out:
        ...     out.check_report_files()  # nothing foreign there
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._lock: Optional[Any] = None

    # ------------------------------------------------------------------ lock
    def __enter__(self) -> OutputFolder:
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()

    def lock(self) -> None:
        """Make the folder if needed and take its lock; [`OutputFolderError`][segrobust.benchmark.OutputFolderError] if another run holds it."""
        import fcntl

        self._make()
        try:
            handle = open(self.path / LOCK, "a")
        except OSError as error:
            raise OutputFolderError(f"--out {self.path}: cannot create its lock file: {_first_line(error)}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputFolderError(
                    f"--out {self.path} is in use by another segrobust benchmark run (it holds {self.path / LOCK}); "
                    "wait for it or choose another --out"
                ) from None
            raise OutputFolderError(
                f"--out {self.path}: cannot lock {self.path / LOCK}: {_first_line(error)}"
            ) from None
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
            raise OutputFolderError(f"--out {path}: cannot create the folder: {_first_line(error)}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputFolderError(f"--out {path} is not writable")

    # ------------------------------------------------------------------ report files
    def _recorded(self) -> dict[str, str]:
        marker = self.path / MARKER
        if not marker.exists():
            return {}
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT or not isinstance(data.get("files"), dict):
            raise OutputFolderError(f"{marker} is not a segrobust benchmark record; choose another --out")
        return {str(k): str(v) for k, v in data["files"].items()}

    def check_report_files(self, names: Iterable[str] = REPORT_FILES) -> None:
        """Refuse when a report file there was not written by segrobust (or was changed since)."""
        recorded = self._recorded()
        for name in names:
            target = self.path / name
            if not (target.exists() or target.is_symlink()):
                continue
            if target.is_symlink() or not target.is_file() or recorded.get(name) != _file_sha256(target):
                raise OutputFolderError(
                    f"{target} was not written by segrobust benchmark (or was changed since); "
                    "segrobust does not overwrite it: move it or choose another --out"
                )

    def record(self, paths: Iterable[Path]) -> None:
        """Note the report files just written (name and SHA-256) in ``OUT/.segrobust-benchmark.json``."""
        files = self._recorded()
        for path in paths:
            files[Path(path).name] = _file_sha256(Path(path))
        payload = {"format": MARKER_FORMAT, "files": dict(sorted(files.items()))}
        atomic_write_text(self.path / MARKER, json.dumps(payload, indent=2) + "\n")


# ----------------------------------------------------------------------------- units
class UnitStore:
    """Where finished work units live: ``OUT/partial/<condition>/<eps>/batch_00007.pt``.

    ``OUT/partial/manifest.json`` records the settings that determine the
    numbers and lists the run's unit files (the only files segrobust removes
    there). ``resume`` with a different manifest raises
    [`ResumeMismatchError`][segrobust.benchmark.ResumeMismatchError] rather than mixing results. A unit is read
    back only if its checksum matches and it was computed on the same data
    (fingerprint of the loaded batch); otherwise it is computed again. Without
    ``out_dir`` nothing is written (in-memory run).
    """

    def __init__(self, out_dir: Optional[os.PathLike], manifest: dict[str, Any], resume: bool, unit_files: list[str]):
        self.root = None if out_dir is None else Path(out_dir) / PARTIAL_DIR
        self.manifest = {"format": PARTIAL_FORMAT, **manifest}
        self.resume = resume
        self.unit_files = unit_files

    @staticmethod
    def relative_path(tag: str, batch: int) -> str:
        condition, _, eps = tag.partition("@")
        return f"{condition}/{eps or 'none'}/batch_{batch:05d}.pt"

    def _stored_manifest(self) -> Optional[dict[str, Any]]:
        """The manifest there (``None`` without ``partial/``); refuses a ``partial/`` segrobust did not write."""
        assert self.root is not None
        if self.root.is_symlink():
            raise OutputFolderError(
                f"{self.root} is a symbolic link; segrobust writes partial results only into a folder it made"
            )
        if not self.root.exists():
            return None
        if not self.root.is_dir():
            raise OutputFolderError(f"{self.root} is not a folder; move it or choose another --out")
        manifest_path = self.root / MANIFEST
        try:
            stored = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict) or stored.get("format") != PARTIAL_FORMAT:
            raise OutputFolderError(
                f"{self.root} was not made by this version of segrobust benchmark (no readable {MANIFEST}); "
                "segrobust does not delete it: move it or choose another --out"
            )
        return stored

    def prepare(self) -> None:
        """Main rank only, with the folder locked: keep a matching partial folder (resume) or start a fresh one."""
        if self.root is None:
            return
        stored = self._stored_manifest()
        if stored is not None and self.resume:
            if stored != self._manifest_record():
                differing = sorted(
                    key for key in set(stored) | set(self.manifest) if stored.get(key) != self.manifest.get(key)
                )
                differing = [key for key in differing if key != "unit_files"] or ["unit_files"]
                raise ResumeMismatchError(
                    f"cannot resume: {self.root.parent} holds results made with other settings "
                    f"({', '.join(differing)} differ); use another --out or drop --resume"
                )
            return
        if stored is not None:
            self._remove_units(stored.get("unit_files", []))
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / MANIFEST, json.dumps(self._manifest_record(), indent=2, sort_keys=True) + "\n")

    def _manifest_record(self) -> dict[str, Any]:
        return {**self.manifest, "unit_files": self.unit_files}

    def _remove_units(self, listed: list[Any]) -> None:
        """Delete the unit files an earlier run listed (regular files inside ``partial/`` only) and their emptied folders."""
        assert self.root is not None
        root = self.root.resolve()
        folders = set()
        for relative in listed:
            path = self.root / str(relative)
            if not path.resolve().is_relative_to(root) or path.is_symlink() or not path.is_file():
                continue
            path.unlink()
            folders.update(p for p in path.parents if p != self.root and p.is_relative_to(self.root))
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: other files stay
            except OSError:
                continue
        (self.root / MANIFEST).unlink()

    def load(self, tag: str, batch: int, data_fingerprint: str) -> Optional[dict[str, Any]]:
        """The stored unit, or ``None`` when not done, corrupt, or computed on other data (it is then recomputed)."""
        if self.root is None or not self.resume:
            return None
        path = self.root / self.relative_path(tag, batch)
        if not path.is_file():
            return None
        try:
            unit = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file: recompute it
            return None
        if (
            not isinstance(unit, dict)
            or unit.get("checksum") != unit_checksum(unit)
            or unit.get("data") != data_fingerprint
        ):
            return None
        return unit

    def save(self, tag: str, batch: int, unit: dict[str, Any]) -> None:
        """Write ``unit`` atomically with its checksum."""
        if self.root is not None:
            atomic_torch_save({**unit, "checksum": unit_checksum(unit)}, self.root / self.relative_path(tag, batch))
