"""The recipes that train the segmenter itself: standard, PGD-AT, EroSeg-AT and NAT.

They share the optimiser defaults of semantic segmentation (SGD, momentum
0.9, weight decay 1e-4, poly learning-rate decay with power 0.9, stepped per
iteration) and differ only in the inner maximiser and the rain. The attacks
are imported when a recipe runs, so ``import segrobust.training`` does not
load ``segrobust.attacks``.

``train_standard``, ``train_pgd_at``, ``train_eroseg_at`` and ``train_nat``
are the same recipes with keyword arguments; they return the history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional

import torch
from torch import nn

from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT
from segrobust.training.recipes._base import (
    TrainResult,
    fit_segmenter,
    legacy_config,
    rain_transform,
)
from segrobust.training.recipes.config import (
    EroSegATConfig,
    NATConfig,
    PGDATConfig,
    RainSpec,
    StandardConfig,
)

__all__ = [
    "eroseg_at",
    "nat",
    "pgd_at",
    "standard",
    "train_eroseg_at",
    "train_nat",
    "train_pgd_at",
    "train_standard",
]

Transform = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _attack_factory(key: str, config: PGDATConfig, **options: Any) -> Callable[[nn.Module], Any]:
    """The inner maximiser ``key`` of [ATTACKS][segrobust.attacks.registry.ATTACKS], built by the trainer on its model."""

    def make_attack(module: nn.Module) -> Any:
        from segrobust.attacks.registry import ATTACKS  # imported when a recipe runs

        return ATTACKS[key].build(
            module,
            config.eps,
            config.step_size,
            config.steps,
            random_start=config.random_start,
            ignore_index=config.ignore_index,
            **options,
        )

    return make_attack


def standard(model: nn.Module, data: Any, config: StandardConfig) -> TrainResult:
    """Standard (non-adversarial) training with masked cross-entropy (recipe ``standard``)."""
    return fit_segmenter(model, data, config, None, config.input_transform)


def pgd_at(model: nn.Module, data: Any, config: PGDATConfig) -> TrainResult:
    """Madry PGD adversarial training: NAA (PGD on the masked pixel cross-entropy) as inner maximiser (recipe ``pgd_at``).

    The attack is built by the trainer on the bare model once it is on its device.
    """
    return fit_segmenter(model, data, config, _attack_factory("naa", config), config.input_transform)


def eroseg_at(model: nn.Module, data: Any, config: EroSegATConfig) -> TrainResult:
    """Adversarial training with [EroSeg][segrobust.attacks.EroSeg] as the inner maximiser (recipe ``eroseg_at``)."""
    return fit_segmenter(
        model, data, config, _attack_factory("eroseg", config, **dict(config.eroseg)), config.input_transform
    )


def nat(model: nn.Module, data: Any, config: NATConfig) -> TrainResult:
    """NAT, PEARL's baseline: NAA adversarial training on rainy images (recipe ``nat``).

    Rain from ``config.rain`` (scaled to the image height, see
    [NATConfig][segrobust.training.NATConfig]) is added to every batch, then
    ``config.input_transform`` if set, then NAA attacks the result.
    """
    rain = rain_transform(config.rain, config.rain_reference_height, data)
    extra = config.input_transform
    if rain is None or extra is None:
        transform = rain if extra is None else extra
    else:

        def transform(images: torch.Tensor) -> torch.Tensor:
            return extra(rain(images))

    return fit_segmenter(model, data, config, _attack_factory("naa", config), transform)


# -- keyword-argument forms -----------------------------------------------------------------


def train_standard(
    model: nn.Module,
    train_loader: Any,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    input_transform: Transform = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
) -> list[dict[str, Any]]:
    """Standard training; the keyword form of the ``standard`` recipe ([StandardConfig][segrobust.training.StandardConfig]).

    ``train_loader`` is a loader, an iterable of batches or a map-style dataset;
    ``optimizer`` your own (``None``: SGD with ``lr``, ``momentum``,
    ``weight_decay``); ``trainer_kwargs`` any other
    [AdversarialTrainer][segrobust.training.AdversarialTrainer] argument. The model is
    trained in place; returns the per-epoch history.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 2, 1)
        >>> data = [(torch.rand(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8)))]
        >>> history = train_standard(model, data, epochs=2, trainer_kwargs={"progress": False})
        >>> len(history)
        2
    """
    config = legacy_config(
        StandardConfig,
        trainer_kwargs,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        optimizer=optimizer or "sgd",
        scheduler=scheduler,
        num_classes=num_classes,
        ignore_index=ignore_index,
        input_transform=input_transform,
    )
    return standard(model, train_loader, config).history


def train_pgd_at(
    model: nn.Module,
    train_loader: Any,
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 7,
    random_start: bool = True,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    input_transform: Transform = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
) -> list[dict[str, Any]]:
    """Madry PGD-AT; the keyword form of the ``pgd_at`` recipe ([PGDATConfig][segrobust.training.PGDATConfig]).

    ``adv_fraction`` and ``clean_loss_weight`` (mixed clean/adversarial
    training) go in ``trainer_kwargs``. Other arguments as in [train_standard][segrobust.training.train_standard].

    Examples:
        >>> history = train_pgd_at(model, loader, eps=4/255, steps=3, epochs=2)  # doctest: +SKIP
    """
    config = legacy_config(
        PGDATConfig,
        trainer_kwargs,
        eps=eps,
        alpha=alpha,
        steps=steps,
        random_start=random_start,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        optimizer=optimizer or "sgd",
        scheduler=scheduler,
        num_classes=num_classes,
        ignore_index=ignore_index,
        input_transform=input_transform,
    )
    return pgd_at(model, train_loader, config).history


def train_eroseg_at(
    model: nn.Module,
    train_loader: Any,
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 7,
    random_start: bool = True,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    input_transform: Transform = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
    **eroseg_kwargs: Any,
) -> list[dict[str, Any]]:
    """EroSeg-AT; the keyword form of the ``eroseg_at`` recipe ([EroSegATConfig][segrobust.training.EroSegATConfig]).

    ``eroseg_kwargs`` (``q0``, ``schedule``, ``kernel_size``, ``fooled_weight``,
    ``confidence``...) go to ``EroSeg``, which rejects unknown ones; the rest as in
    [train_pgd_at][segrobust.training.train_pgd_at].

    Examples:
        >>> history = train_eroseg_at(model, loader, eps=4/255, steps=3, q0=0.3)  # doctest: +SKIP
    """
    config = legacy_config(
        EroSegATConfig,
        trainer_kwargs,
        eps=eps,
        alpha=alpha,
        steps=steps,
        random_start=random_start,
        epochs=epochs,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        optimizer=optimizer or "sgd",
        scheduler=scheduler,
        num_classes=num_classes,
        ignore_index=ignore_index,
        input_transform=input_transform,
        eroseg=eroseg_kwargs,
    )
    return eroseg_at(model, train_loader, config).history


def train_nat(
    model: nn.Module,
    train_loader: Any,
    *,
    rain: RainSpec = "medium",
    rain_reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT,
    eps: float = 4 / 255,
    alpha: Optional[float] = None,
    steps: int = 3,
    epochs: int = 1,
    lr: float = 0.01,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
) -> list[dict[str, Any]]:
    """NAT; the keyword form of the ``nat`` recipe ([NATConfig][segrobust.training.NATConfig]).

    ``rain`` is a preset name, a mapping of rain ranges or a module; a
    preset's streak lengths are scaled from ``rain_reference_height`` (360)
    to the training images' height (``None``: unscaled); a mapping is used as given. ``alpha=None`` is
    ``2.5·eps/steps``. Other arguments as in [train_pgd_at][segrobust.training.train_pgd_at].

    Examples:
        >>> history = train_nat(model, loader, rain="heavy", eps=4/255, steps=3, epochs=5)  # doctest: +SKIP
    """
    config = legacy_config(
        NATConfig,
        trainer_kwargs,
        rain=rain,
        rain_reference_height=rain_reference_height,
        eps=eps,
        alpha=alpha,
        steps=steps,
        epochs=epochs,
        lr=lr,
        optimizer=optimizer or "sgd",
        scheduler=scheduler,
        num_classes=num_classes,
        ignore_index=ignore_index,
    )
    return nat(model, train_loader, config).history
