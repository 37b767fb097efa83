"""Checkpoint files and random-number-generator states, in a form ``torch.load(weights_only=True)`` reads."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

__all__ = ["capture_rng", "epoch_seed", "load_checkpoint", "restore_rng", "seed_all"]


def load_checkpoint(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a trainer checkpoint on the CPU with ``weights_only=True`` (no arbitrary code runs)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != "segrobust.training/1":
        raise ValueError(f"{path} is not a segrobust.training checkpoint")
    return state


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A well-mixed 32-bit seed for one (run seed, epoch, rank): distinct streams, replayable."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - user code draws from the legacy global generator
    random.seed(seed)


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every global generator state as tensors and primitives (no numpy arrays, no pickled objects)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global state is what resume restores
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
