"""Every default of a benchmark or training run, in one place, and the built-in default model.

The settings: the budgets, iterations and batch size a
[BenchmarkConfig][segrobust.benchmark.BenchmarkConfig] starts from, and what
``segrobust benchmark`` / ``segrobust train`` do when their flags do not say
([BENCHMARK_RUN][segrobust.benchmark.defaults.BENCHMARK_RUN],
[TRAIN_RUN][segrobust.benchmark.defaults.TRAIN_RUN], their ``--fast``
variants and the built-in default run). The command line holds none of its own.

The built-in default: a small smp Unet trained on SyntheticStreets, and its evaluation set.

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

from segrobust.validation import MAX_STEPS

__all__ = [
    "BENCHMARK_RUN",
    "BUILTIN_RUN",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPS",
    "DEFAULT_EVAL_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MODEL_SPEC",
    "DEFAULT_NUM_CLASSES",
    "DEFAULT_RELIABLE_PRESET",
    "DEFAULT_SCHEDULE",
    "DEFAULT_STEPS",
    "FAST_BENCHMARK_RUN",
    "FAST_SIZE",
    "FAST_TRAIN_RUN",
    "MAX_STEPS",
    "TRAIN_RUN",
    "BenchmarkRun",
    "DefaultSchedule",
    "RunSizes",
    "TrainRun",
    "cache_dir",
    "default_dataset",
    "default_model_path",
    "load_default_model",
    "train_default_model",
]

# ----------------------------------------------------------------------------- settings of a run
#: L∞ budgets: 2/255, 4/255 and 8/255.
DEFAULT_EPS: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
#: Iterations of the short attacks.
DEFAULT_STEPS = 10
#: The reliable evaluation's preset (a name in ``segrobust.attacks.RELIABLE_PRESETS``).
DEFAULT_RELIABLE_PRESET = "default"
#: Images per batch.
DEFAULT_BATCH_SIZE = 8
#: Image size ``(H, W)`` of the generated SyntheticStreets data (the default data).
DEFAULT_IMAGE_SIZE: tuple[int, int] = (96, 128)
#: Classes of a model built from a spec when nothing says otherwise (CamVid's 11).
DEFAULT_NUM_CLASSES = 11


@dataclass(frozen=True)
class RunSizes:
    """A smoke-test size of run (``--fast``): each field that is not ``None`` is a default of its flag."""

    num_images: Optional[int] = None
    size: Optional[tuple[int, int]] = None
    batch_size: Optional[int] = None
    eps: Optional[tuple[float, ...]] = None
    steps: Optional[int] = None
    reliable_steps: Optional[int] = None
    reliable_preset: Optional[str] = None
    epochs: Optional[int] = None

    def given(self) -> dict[str, Any]:
        """The fields that are set, by flag name (``dest``)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class BenchmarkRun:
    """What ``segrobust benchmark`` does when a flag does not say (the rest: [BenchmarkConfig][segrobust.benchmark.BenchmarkConfig]'s defaults)."""

    out: str = "segrobust-benchmark"
    dataset: str = "synthetic"
    device: str = "auto"
    attacks: str = "all"
    rain: str = "all"
    corruptions: str = "none"
    format: str = "table"
    #: images of the generated SyntheticStreets validation set
    synthetic_images: int = 32
    #: image size of the generated data (other data sets keep their native size)
    synthetic_size: tuple[int, int] = DEFAULT_IMAGE_SIZE


@dataclass(frozen=True)
class TrainRun:
    """What ``segrobust train`` does when a flag does not say (the rest: the recipe config's defaults)."""

    out: str = "segrobust-train"
    recipe: str = "standard"
    model: str = "unet:resnet18"
    dataset: str = "synthetic"
    device: str = "auto"
    epochs: int = 10
    #: images of the generated SyntheticStreets training set
    synthetic_images: int = 200
    #: at most this many validation images are scored after each epoch
    eval_images: int = 50
    synthetic_size: tuple[int, int] = DEFAULT_IMAGE_SIZE


#: ``segrobust benchmark`` without flags.
BENCHMARK_RUN = BenchmarkRun()
#: ``segrobust train`` without flags.
TRAIN_RUN = TrainRun()
#: The built-in default run (no ``--model``, generated data): 16 images, 5-step short attacks and the
#: ``quick`` reliable preset at 5 iterations per member (a smoke test, said so in the output), so it
#: finishes in under 2 minutes on 2 CPU cores (measured on 2 idle cores: 1 min 3 s; 2 min 28 s with 32 images
#: and 10 per member; 24 images took 1 min 40 s there and about 2 min in a CI run).
BUILTIN_RUN = RunSizes(num_images=16, steps=5, reliable_steps=5, reliable_preset="quick")
#: Image size of ``--fast``: sides that are multiples of 32 (and of ViT patch sizes 8, 16), which
#: models with a strided encoder or patch embeddings require.
FAST_SIZE: tuple[int, int] = (64, 64)
#: ``segrobust benchmark --fast``: a smoke test in seconds.
FAST_BENCHMARK_RUN = RunSizes(
    num_images=4, size=FAST_SIZE, batch_size=2, eps=(8 / 255,), steps=2, reliable_preset="quick"
)
#: ``segrobust train --fast``: one epoch on a few small images (``steps``: of a recipe with an inner attack).
FAST_TRAIN_RUN = RunSizes(num_images=8, size=FAST_SIZE, batch_size=4, epochs=1, steps=2)


# ----------------------------------------------------------------------------- the built-in default model
#: The default model: Unet, ResNet-18 encoder cut after its second stage (0.77 M parameters).
DEFAULT_MODEL_SPEC = "unet:resnet18:encoder_depth=3:decoder_channels=32,16,8"
#: Validation images evaluated by default.
DEFAULT_EVAL_IMAGES = BENCHMARK_RUN.synthetic_images
NUM_CLASSES = DEFAULT_NUM_CLASSES
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
