"""Trainer checkpoints: what a resumed run needs, written atomically and read with ``weights_only=True``.

A checkpoint holds the model, optimizer, scheduler and scaler states, the
counters, the history and every rank's random-number-generator states (as
tensors and primitives, no pickled objects). Resuming from it replays the
killed run exactly (see [AdversarialTrainer][segrobust.training.AdversarialTrainer]).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch

from segrobust import distributed as _dist
from segrobust.fileio import atomic_torch_save, check_regular_file
from segrobust.utils import error_line

if TYPE_CHECKING:
    from segrobust.training.trainer import AdversarialTrainer

__all__ = [
    "CHECKPOINT_FORMAT",
    "capture_rng",
    "epoch_seed",
    "load_checkpoint",
    "restore_rng",
    "restore_trainer",
    "resume_trainer",
    "save_trainer_checkpoint",
    "seed_all",
    "trainer_state",
]

CHECKPOINT_FORMAT = "segrobust.training/1"
_log = logging.getLogger("segrobust.training")


def load_checkpoint(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a trainer checkpoint on the CPU with ``weights_only=True`` (no arbitrary code runs).

    A special file (a FIFO would block), a truncated or foreign file is a
    ``ValueError`` naming the file.
    """
    path = check_regular_file(path, "checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, pickled objects: whatever torch raises
        raise ValueError(f"cannot resume from {path}: not a readable checkpoint ({error_line(error)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
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
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- a trainer's state ------------------------------------------------------------------------


def trainer_state(trainer: AdversarialTrainer) -> dict[str, Any]:
    """Everything a resumed run needs; every rank must call it (it gathers per-rank RNG states)."""
    acc = dict(trainer._acc)
    acc["matrix"] = acc["matrix"].cpu() if acc["matrix"] is not None else None
    acc["terms"] = dict(acc["terms"])
    rank_states = _dist.all_gather_object({"rng": capture_rng(trainer.device), "acc": acc})
    return {
        "format": CHECKPOINT_FORMAT,
        "model": trainer.module.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "scaler": trainer.scaler.state_dict(),
        "epoch": trainer.epoch,
        "step_in_epoch": trainer.step_in_epoch,
        "global_step": trainer.global_step,
        "num_classes": trainer.num_classes,
        "seed": trainer.seed,
        "world_size": trainer.world_size,
        "history": [dict(record) for record in trainer.history],
        "rank_states": rank_states,
    }


def save_trainer_checkpoint(trainer: AdversarialTrainer, path: Path) -> Optional[Path]:
    """Write `trainer_state` atomically on rank 0 (call it on every rank); the path on rank 0."""
    state = trainer_state(trainer)
    written = atomic_torch_save(state, path) if trainer.is_main else None
    _dist.barrier()
    return written


def resume_trainer(trainer: AdversarialTrainer, resume: Union[bool, str, os.PathLike], default: Optional[Path]) -> None:
    """Restore ``trainer`` from ``resume`` (a path) or ``default`` (``resume=True``); rank 0 reads, all ranks restore.

    A missing ``default`` checkpoint starts afresh; a missing explicit path is a ``FileNotFoundError``.
    """
    path = Path(resume) if isinstance(resume, (str, os.PathLike)) else default
    state = None
    if trainer.is_main:
        if path.exists():
            state = load_checkpoint(path)
        elif isinstance(resume, (str, os.PathLike)):
            raise FileNotFoundError(f"resume={str(resume)!r}: no such checkpoint")
    state = _dist.broadcast_object(state)  # one reader: no shared file system needed across nodes
    if state is None:
        if trainer.is_main:
            _log.info("resume: no checkpoint at %s, starting from scratch", path)
        return
    restore_trainer(trainer, state)
    if trainer.is_main:
        _log.info("resumed from %s at epoch %d, step %d", path, trainer.epoch, trainer.step_in_epoch)


def restore_trainer(trainer: AdversarialTrainer, state: Mapping[str, Any]) -> None:
    """Restore a `trainer_state` (model, optimizer, scheduler, scaler, counters, history, RNG)."""
    if state["step_in_epoch"] > 0 and state["world_size"] != trainer.world_size:
        raise ValueError(
            f"the checkpoint was written mid-epoch by {state['world_size']} processes; resume it with the same "
            f"number (got {trainer.world_size}), or from an epoch-end checkpoint"
        )
    if state["seed"] != trainer.seed:
        warnings.warn(f"the checkpoint used seed={state['seed']}, this trainer seed={trainer.seed}", stacklevel=3)
    try:
        trainer.module.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:  # another architecture or optimizer
        raise ValueError(
            f"cannot resume: the checkpoint does not fit this model or optimizer ({error_line(error)}); "
            "resume with the settings that wrote it, or start afresh"
        ) from None
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch, trainer.step_in_epoch, trainer.global_step = (
        state["epoch"],
        state["step_in_epoch"],
        state["global_step"],
    )
    trainer.num_classes = trainer.num_classes or state["num_classes"]
    trainer.history = [dict(record) for record in state["history"]]
    if trainer.step_in_epoch > 0:
        rank_state = state["rank_states"][trainer.rank]
        acc = dict(rank_state["acc"])
        acc["terms"] = dict(acc["terms"])
        acc["matrix"] = acc["matrix"].to(trainer.device) if acc["matrix"] is not None else None
        trainer._pending_rank_state = {"rng": rank_state["rng"], "acc": acc}
