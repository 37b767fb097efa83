"""The recipes that train the segmenter itself: standard, PGD-AT, EroSeg-AT and NAT.

They share the optimiser defaults of semantic segmentation (SGD, momentum
0.9, weight decay 1e-4, poly learning-rate decay with power 0.9, stepped per
iteration) and differ only in the inner maximiser and the rain. The attacks
are imported when a recipe runs, so ``import segrobust.training`` does not
load ``segrobust.attacks``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from segrobust.training.recipes.base import TrainResult, fit_segmenter, rain_transform
from segrobust.training.recipes.config import EroSegATConfig, NATConfig, PGDATConfig, StandardConfig

__all__ = ["eroseg_at", "nat", "pgd_at", "standard"]


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
