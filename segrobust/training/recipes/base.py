"""The recipe protocol and the pieces recipes share (result, loaders, optimizer, rain, the trainer call).

Public, so that recipes outside ``segrobust.training`` (the defence recipes in
``segrobust.defenses``) are built from the same pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segrobust.training.recipes.config import RainSpec, StandardConfig, TrainConfig, make_config
from segrobust.training.trainer import AdversarialTrainer, poly_lr

__all__ = [
    "Artifact",
    "Recipe",
    "TrainResult",
    "dataset_of",
    "eval_loader",
    "fit_segmenter",
    "optimizer_for",
    "rain_transform",
    "scheduler_for",
    "train_loader",
    "trainer_options",
]


@dataclass(frozen=True)
class Artifact:
    """A file a recipe's result can write besides the model (e.g. PEARL's derainer).

    Attributes:
        write: ``write(path) -> path`` (atomic).
        benchmark_option: how ``segrobust benchmark`` uses the file, with
            ``{path}`` for its path, e.g. ``"--defense pearl:{path}"``.
    """

    write: Callable[[Path], Path]
    benchmark_option: Optional[str] = None


@dataclass
class TrainResult:
    """What every recipe returns.

    Attributes:
        model: the trained model; for a defence recipe the defended model
            (e.g. ``PEARL(segmenter, derainer)``). The model passed in is
            trained in place (or frozen, for PEARL).
        history: one record per epoch (see [AdversarialTrainer.fit][segrobust.training.AdversarialTrainer.fit]).
        artifacts: file name → [Artifact][segrobust.training.Artifact] to save besides the model.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    artifacts: dict[str, Artifact] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A training recipe: ``recipe(model, data, config) -> TrainResult``, the one way to train.

    ``config`` is a ``config_type`` instance (``None``: its defaults); build one
    with [config][segrobust.training.Recipe.config] to change some settings.
    ``artifacts`` names the files its result may write besides the model (see
    [TrainResult][segrobust.training.TrainResult]), so a caller can check an
    output folder before training.
    ``function(model, data, config)`` is the implementation; the recipes that
    need the attacks import them when they run, so the table costs no import of them.

    Examples:
        >>> from segrobust.training import RECIPES
        >>> RECIPES["nat"].config(eps=2 / 255).steps
        3
    """

    name: str
    config_type: type
    function: Callable[[nn.Module, Any, Any], TrainResult]
    description: str = ""
    artifacts: tuple[str, ...] = ()

    def config(self, config: Optional[TrainConfig] = None, **options: Any) -> Any:
        """The config this recipe runs with: ``config`` or the defaults, with ``options`` set (unknown ones are an error)."""
        return make_config(self.name, self.config_type, config, **options)

    def __call__(self, model: nn.Module, data: Any, config: Optional[TrainConfig] = None) -> TrainResult:
        return self.function(model, data, self.config(config))


# -- shared stages ------------------------------------------------------------------------


def is_map_dataset(data: Any) -> bool:
    return (
        isinstance(data, Dataset)
        and not isinstance(data, DataLoader)
        and hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
    )


def train_loader(data: Any, config: TrainConfig) -> Any:
    """A shuffling loader over a map-style dataset (seeded by ``config.seed``); loaders and iterables pass through.

    The last incomplete batch is dropped when the dataset holds more than one batch.
    """
    if not is_map_dataset(data):
        return data
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=True,
        num_workers=config.num_workers,
        generator=generator,
        drop_last=len(data) > config.batch_size,
    )


def eval_loader(data: Any, config: TrainConfig) -> Any:
    if not is_map_dataset(data):
        return data
    return DataLoader(data, batch_size=config.batch_size, num_workers=config.num_workers)


def dataset_of(data: Any) -> tuple[Any, Optional[int]]:
    """``(map-style dataset, batch size)`` behind ``data`` (a dataset or a ``DataLoader``)."""
    if isinstance(data, DataLoader):
        return data.dataset, data.batch_size
    return data, None


def image_height(data: Any) -> int:
    """Height of the first training image of a dataset or loader."""
    dataset, _ = dataset_of(data)
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__") and len(dataset):
        item = dataset[0]
        image = item["image"] if isinstance(item, Mapping) else item[0]
        return int(image.shape[-2])
    for raw in data:  # an iterable of batches
        image = raw["image"] if isinstance(raw, Mapping) else raw[0]
        return int(image.shape[-2])
    raise ValueError("the training data is empty")


def rain_transform(rain: RainSpec, reference_height: Optional[int], data: Any) -> Optional[nn.Module]:
    """The rain augmentation (``p=1``) of a config's ``rain`` and ``rain_reference_height`` for ``data``.

    A preset name has its streak lengths scaled from ``reference_height`` to
    the height of ``data``'s images (unscaled when it is ``None``). A mapping
    holds ranges for your images already and is used as given (with ``p=1``
    unless it sets ``p``); a module is used as is.
    """
    if rain is None or isinstance(rain, nn.Module):
        return rain
    from segrobust.rain import RandomRainStreaks, scale_rain_ranges

    if isinstance(rain, str):
        if reference_height is None:  # no need to know the data's image height
            return RandomRainStreaks.from_preset(rain, p=1.0)
        return RandomRainStreaks(**scale_rain_ranges(rain, image_height(data), reference_height), p=1.0)
    return RandomRainStreaks(**{"p": 1.0, **dict(rain)})


def optimizer_for(model: nn.Module, config: StandardConfig) -> torch.optim.Optimizer:
    if isinstance(config.optimizer, torch.optim.Optimizer):
        return config.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr or 1e-3, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr or 0.01, momentum=config.momentum, weight_decay=config.weight_decay)


def scheduler_for(scheduler: Any) -> Any:
    return poly_lr() if scheduler == "poly" else scheduler


def trainer_options(config: TrainConfig, **recipe_options: Any) -> dict[str, Any]:
    """The [`AdversarialTrainer`][segrobust.training.AdversarialTrainer] keyword arguments of ``config``; ``trainer_kwargs`` may not repeat a setting."""
    options: dict[str, Any] = {
        "epochs": config.epochs,
        "num_classes": config.num_classes,
        "ignore_index": config.ignore_index,
        "seed": config.seed,
        "device": config.device,
        "checkpoint_dir": config.checkpoint_dir,
        "resume": config.resume,
        "progress": config.progress,
        **recipe_options,
    }
    if config.eval_data is not None:
        options["eval_loader"] = eval_loader(config.eval_data, config)
    clash = sorted(set(options) & set(config.trainer_kwargs))
    if clash:
        raise TypeError(
            f"trainer_kwargs sets {clash[0]!r}, which the recipe sets from its config or itself: set the config field"
        )
    return {**options, **dict(config.trainer_kwargs)}


def fit_segmenter(
    model: nn.Module,
    data: Any,
    config: StandardConfig,
    attack: Any,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]],
) -> TrainResult:
    """Train ``model`` itself on (transformed, attacked) batches: the standard, PGD-AT, EroSeg-AT and NAT recipes."""
    trainer = AdversarialTrainer(
        model,
        optimizer_for(model, config),
        train_loader(data, config),
        **trainer_options(
            config, attack=attack, scheduler=scheduler_for(config.scheduler), input_transform=input_transform
        ),
    )
    return TrainResult(model, trainer.fit())
