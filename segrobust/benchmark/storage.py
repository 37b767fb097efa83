"""Partial results on disk: one file per (condition, ε, batch), written atomically, for ``--resume``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from segrobust.fileio import atomic_torch_save, atomic_write_text

__all__ = ["ResumeMismatchError", "UnitStore", "fingerprint"]

_PARTIAL_DIR = "partial"
_MANIFEST = "manifest.json"


class ResumeMismatchError(ValueError):
    """``--resume`` on an output folder made with other settings."""


def fingerprint(obj: Any) -> str:
    """A short hash of JSON-able settings (or of a model's weights, for an ``nn.Module``)."""
    digest = hashlib.sha256()
    if isinstance(obj, torch.nn.Module):
        for name, tensor in sorted(obj.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, torch.Tensor):
        digest.update(obj.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(json.dumps(obj, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class UnitStore:
    """Where finished work units live: ``OUT/partial/<condition>/<eps>/batch_00007.pt``.

    The manifest records the settings that determine the numbers; ``resume``
    with a different manifest raises :class:`ResumeMismatchError` rather than
    mixing results. Without ``out_dir`` nothing is written (in-memory run).
    """

    def __init__(self, out_dir: Optional[os.PathLike], manifest: dict[str, Any], resume: bool, is_main: bool):
        self.root = None if out_dir is None else Path(out_dir) / _PARTIAL_DIR
        self.manifest = manifest
        self.resume = resume
        self.is_main = is_main

    def check(self) -> None:
        """With ``resume``: refuse a folder whose manifest differs. Read-only, so every rank may call it."""
        if self.root is None or not self.resume:
            return
        manifest_path = self.root / _MANIFEST
        if not manifest_path.exists():
            return
        try:
            stored = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
        if stored != self.manifest:
            differing = sorted(
                key
                for key in set(stored or {}) | set(self.manifest)
                if (stored or {}).get(key) != self.manifest.get(key)
            )
            raise ResumeMismatchError(
                f"cannot resume: {self.root.parent} holds results made with other settings "
                f"({', '.join(differing) or 'unreadable manifest'} differ); use another --out or drop --resume"
            )

    def prepare(self) -> None:
        """Main rank only, after :meth:`check`: start a fresh partial folder unless resuming one."""
        if self.root is None or not self.is_main:
            return
        manifest_path = self.root / _MANIFEST
        if self.resume and manifest_path.exists():
            return
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        atomic_write_text(manifest_path, json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")

    def path(self, tag: str, batch: int) -> Optional[Path]:
        if self.root is None:
            return None
        condition, _, eps = tag.partition("@")
        return self.root / condition / (eps or "none") / f"batch_{batch:05d}.pt"

    def load(self, tag: str, batch: int) -> Optional[dict[str, Any]]:
        """The stored unit, or ``None`` when it is not done (or unreadable: it is then recomputed)."""
        path = self.path(tag, batch)
        if path is None or not self.resume or not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return None

    def save(self, tag: str, batch: int, unit: dict[str, Any]) -> None:
        path = self.path(tag, batch)
        if path is not None:
            atomic_torch_save(unit, path)
