"""The built-in default: a small smp Unet trained on SyntheticStreets, and its evaluation set.

``segrobust benchmark`` with no arguments evaluates this model. Its weights
ship with the package (``segrobust/assets/default_model.pt``, written by
``scripts/train_default_model.py`` with [`train_default_model`][segrobust.benchmark.train_default_model]); if that
file is missing, the same fixed schedule is trained once (about a minute on
two CPU cores) and cached in ``$SEGROBUST_CACHE`` (default ``~/.cache/segrobust``).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

__all__ = [
    "DEFAULT_EVAL_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MODEL_SPEC",
    "DEFAULT_SCHEDULE",
    "DefaultSchedule",
    "cache_dir",
    "default_dataset",
    "default_model_path",
    "load_default_model",
    "train_default_model",
]

#: The default model: Unet, ResNet-18 encoder cut after its second stage (0.77 M parameters).
DEFAULT_MODEL_SPEC = "unet:resnet18:encoder_depth=3:decoder_channels=32,16,8"
#: Image size ``(H, W)`` of the default data.
DEFAULT_IMAGE_SIZE: tuple[int, int] = (96, 128)
#: Validation images evaluated by default.
DEFAULT_EVAL_IMAGES = 32
NUM_CLASSES = 11
_ASSET = "default_model.pt"


@dataclass(frozen=True)
class DefaultSchedule:
    """The fixed training schedule of the default model (AdamW, one-cycle learning rate)."""

    train_images: int = 256
    steps: int = 400
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    data_seed: int = 0


DEFAULT_SCHEDULE = DefaultSchedule()


def cache_dir() -> Path:
    """``$SEGROBUST_CACHE`` or ``~/.cache/segrobust``."""
    return Path(os.environ.get("SEGROBUST_CACHE") or Path.home() / ".cache" / "segrobust").expanduser()


def _packaged_asset() -> Optional[Path]:
    path = Path(__file__).resolve().parents[1] / "assets" / _ASSET
    return path if path.is_file() else None


def default_model_path() -> Path:
    """The shipped checkpoint when present, else the cached one (which may not exist yet)."""
    return _packaged_asset() or cache_dir() / _ASSET


def default_dataset(
    num_images: int = DEFAULT_EVAL_IMAGES, size: tuple[int, int] = DEFAULT_IMAGE_SIZE, seed: int = 0
) -> Any:
    """Held-out SyntheticStreets scenes (``split="val"``) the default model never saw.

    Examples:
        >>> data = default_dataset(2, size=(24, 32))
        >>> len(data), data[0]["image"].shape
        (2, torch.Size([3, 24, 32]))
    """
    from segrobust.datasets import SyntheticStreets

    return SyntheticStreets(n=num_images, size=size, seed=seed, split="val")


class _Steps(torch.utils.data.Sampler):
    """Exactly ``steps · batch_size`` indices drawn with replacement from a seeded generator."""

    def __init__(self, size: int, total: int, seed: int):
        self.size, self.total, self.seed = size, total, seed

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed)
        return iter(torch.randint(0, self.size, (self.total,), generator=generator).tolist())

    def __len__(self) -> int:
        return self.total


def train_default_model(
    out_path: Union[str, os.PathLike],
    schedule: DefaultSchedule = DEFAULT_SCHEDULE,
    *,
    size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    half: bool = True,
    progress: bool = True,
) -> Path:
    """Train the default model with the fixed ``schedule`` and save it (float16 by default).

    Uses the ``standard`` recipe ([`StandardConfig`][segrobust.training.StandardConfig]) with AdamW and a one-cycle
    learning rate; the data are ``SyntheticStreets(split="train")``.
    """
    from segrobust.datasets import SyntheticStreets
    from segrobust.models import build_model, save_model
    from segrobust.training import RECIPES, StandardConfig

    started = time.perf_counter()
    data = SyntheticStreets(n=schedule.train_images, size=size, seed=schedule.data_seed, split="train")
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=schedule.batch_size,
        sampler=_Steps(len(data), schedule.steps * schedule.batch_size, schedule.seed),
    )
    torch.manual_seed(schedule.seed)
    model = build_model(DEFAULT_MODEL_SPEC, NUM_CLASSES).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)

    def one_cycle(opt: torch.optim.Optimizer, total_steps: int) -> Any:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=schedule.lr, total_steps=total_steps, pct_start=0.1)

    config = StandardConfig(
        epochs=1,
        optimizer=optimizer,
        scheduler=one_cycle,
        num_classes=NUM_CLASSES,
        progress=progress,
        seed=schedule.seed,
    )
    history = RECIPES["standard"](model, loader, config).history
    metadata = {
        "trained_by": "segrobust.benchmark.defaults.train_default_model",
        "schedule": asdict(schedule),
        "image_size": list(size),
        "dataset": "SyntheticStreets(split='train')",
        "final_loss": float(history[-1]["loss"]) if history else None,
        "seconds": round(time.perf_counter() - started, 1),
        "torch": str(torch.__version__),
    }
    return save_model(model.eval(), out_path, DEFAULT_MODEL_SPEC, NUM_CLASSES, half=half, metadata=metadata)


def load_default_model(
    device: Union[str, torch.device] = "cpu", *, train_if_missing: bool = True, progress: bool = True
) -> nn.Module:
    """The default model in eval mode: shipped weights, else cached ones, else trained now and cached.

    Under ``torch.distributed`` only rank 0 trains; the others wait for it.
    """
    from segrobust import distributed
    from segrobust.models import load_model

    path = default_model_path()
    if not path.exists():
        if not train_if_missing:
            raise FileNotFoundError(f"the default model is not at {path}; run scripts/train_default_model.py")
        if distributed.is_main_process():
            if progress:
                print(f"segrobust: training the default model once (cached in {path}) ...", flush=True)
            train_default_model(path, progress=progress)
    distributed.barrier()
    return load_model(path, num_classes=NUM_CLASSES, device=device)
