"""The benchmark's output folder: its lock, what segrobust owns there, and the per-unit partial results.

Promises (see ``docs/reliability.md``):

- nothing is deleted or overwritten that segrobust did not write: the report
  files are recorded with their SHA-256 in ``OUT/.segrobust-benchmark.json``
  ([OutputFolder][segrobust.fileio.OutputFolder]) and ``OUT/partial/manifest.json``
  lists the unit files of the run that made it; anything else found there makes
  the run stop with [`OutputFolderError`][segrobust.benchmark.OutputFolderError];
- one run at a time per folder: ``OUT/.segrobust-benchmark.lock`` is held with
  ``fcntl.flock`` for the run (the kernel drops it when the process dies);
- a unit file is used only when its checksum and its data fingerprint match, and
  a resume only when the model computes the same function (its
  [fingerprint][segrobust.benchmark.storage.fingerprint] covers the architecture,
  its settings and its weights).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, Optional

import torch

from segrobust.fileio import OutputFolder, OutputFolderError, atomic_torch_save, atomic_write_text, read_bytes_limited

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
PARTIAL_FORMAT = "segrobust.benchmark.partial/2"
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


def fingerprint(obj: Any) -> str:
    """A short hash of JSON-able settings, of a tensor's bytes, or of what a model computes (an ``nn.Module``).

    A model's hash covers its architecture and weights: per submodule its
    name, class (and the source code of the class), its ``extra_repr`` (layer
    sizes, an activation, the ``output_key``, upsampling and normalisation of a
    [SegmentationModel][segrobust.models.SegmentationModel]), its plain
    attributes (numbers, strings, flags), its hooks and, for TorchScript, its
    code; then the state dict and the non-persistent buffers. So
    ``unet:resnet18:activation=sigmoid`` and ``unet:resnet18`` with the same
    weights, or a model behind another defence, have different fingerprints.
    Python code the model calls outside its classes' source is not covered.

    Examples:
        >>> from torch import nn
        >>> fingerprint(nn.Sequential(nn.Identity())) == fingerprint(nn.Sequential(nn.Sigmoid()))
        False
    """
    digest = hashlib.sha256()
    if isinstance(obj, torch.nn.Module):
        digest.update(_architecture(obj).encode())
        tensors = {**dict(obj.named_buffers()), **obj.state_dict()}
        for name, tensor in sorted(tensors.items()):
            digest.update(name.encode())
            digest.update(_tensor_bytes(tensor))
    elif isinstance(obj, torch.Tensor):
        digest.update(_tensor_bytes(obj))
    else:
        digest.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _architecture(model: torch.nn.Module) -> str:
    """One line per submodule: what it is and how it is set up (see `fingerprint`)."""
    lines = []
    for name, module in model.named_modules(remove_duplicate=False):
        cls = type(module)
        attributes = {
            key: value
            for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and _is_plain(value)
        }
        hooks = [
            getattr(hook, "__qualname__", type(hook).__qualname__)
            for table in (module._forward_pre_hooks, module._forward_hooks)
            for hook in table.values()
        ]
        lines.append(
            f"{name}|{cls.__module__}.{cls.__qualname__}|{_class_source_hash(cls)}|{module.extra_repr()}|"
            f"{json.dumps(attributes, sort_keys=True)}|{hooks}|{_script_code(module)}"
        )
    return "\n".join(lines)


def _is_plain(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    return isinstance(value, (tuple, list)) and all(_is_plain(item) for item in value)


@functools.cache
def _class_source_hash(cls: type) -> str:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # built in, or defined where the source is gone
        return ""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _script_code(module: torch.nn.Module) -> str:
    if not isinstance(module, torch.jit.ScriptModule):
        return ""
    try:
        return str(module.code)
    except Exception:  # a module without its own forward has no code
        return ""


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
            stored = json.loads(read_bytes_limited(manifest_path, "manifest", 64 * 2**20))
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
