"""Training recipes: ``RECIPES[name](model, data, config=None, **options) -> TrainResult``.

Every recipe takes the model, the training data (a map-style dataset, or a
loader / iterable of batches) and a typed config (a dataclass per recipe,
sharing [TrainConfig][segrobust.training.TrainConfig]); options that are not
fields of the recipe's config are an error. The model is trained in place.

| name | config | what is trained |
|---|---|---|
| ``standard`` | [StandardConfig][segrobust.training.StandardConfig] | the segmenter, clean images |
| ``pgd_at`` | [PGDATConfig][segrobust.training.PGDATConfig] | the segmenter, NAA (PGD) examples |
| ``eroseg_at`` | [EroSegATConfig][segrobust.training.EroSegATConfig] | the segmenter, EroSeg examples |
| ``nat`` | [NATConfig][segrobust.training.NATConfig] | the segmenter, NAA examples of rainy images |
| ``pearl`` | [PEARLConfig][segrobust.training.PEARLConfig] | a derainer in front of the frozen segmenter |
| ``depth`` | [DepthConfig][segrobust.training.DepthConfig] | segmentation + self-supervised depth |

Examples:
    >>> from segrobust.training import RECIPES
    >>> sorted(RECIPES)
    ['depth', 'eroseg_at', 'nat', 'pearl', 'pgd_at', 'standard']
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from segrobust.training.recipes._base import Artifact, Recipe, TrainResult
from segrobust.training.recipes.adversarial import (
    eroseg_at,
    nat,
    pgd_at,
    standard,
    train_eroseg_at,
    train_nat,
    train_pgd_at,
    train_standard,
)
from segrobust.training.recipes.config import (
    DepthConfig,
    EroSegATConfig,
    NATConfig,
    PEARLConfig,
    PGDATConfig,
    StandardConfig,
    TrainConfig,
    make_config,
)
from segrobust.training.recipes.defenses import depth, pearl

__all__ = [
    "RECIPES",
    "Artifact",
    "DepthConfig",
    "EroSegATConfig",
    "NATConfig",
    "PEARLConfig",
    "PGDATConfig",
    "Recipe",
    "StandardConfig",
    "TrainConfig",
    "TrainResult",
    "eroseg_at",
    "get_recipe",
    "make_config",
    "nat",
    "pgd_at",
    "register_recipe",
    "standard",
    "train_eroseg_at",
    "train_nat",
    "train_pgd_at",
    "train_standard",
]

RECIPES: dict[str, Recipe] = {}


def register_recipe(
    name: str, config_type: type, function: Callable[[Any, Any, Any], TrainResult], description: str = ""
) -> Recipe:
    """Add (or replace) a recipe: ``function(model, data, config) -> TrainResult`` with a ``config_type`` config.

    Examples:
        >>> RECIPES["standard"].config_type.__name__
        'StandardConfig'
    """
    if not (isinstance(config_type, type) and issubclass(config_type, TrainConfig)):
        raise TypeError(f"config_type must be a TrainConfig subclass, got {config_type!r}")
    if not callable(function):
        raise TypeError(f"function must be callable (model, data, config) -> TrainResult, got {function!r}")
    RECIPES[name] = Recipe(name, config_type, function, description)
    return RECIPES[name]


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (``-`` and ``_`` alike, any case); a ``KeyError`` lists the known ones.

    Examples:
        >>> get_recipe("PGD-AT").name
        'pgd_at'
    """
    key: Optional[str] = name.lower().replace("-", "_") if isinstance(name, str) else None
    if key not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return RECIPES[key]


register_recipe("standard", StandardConfig, standard, "masked cross-entropy on clean images")
register_recipe("pgd_at", PGDATConfig, pgd_at, "Madry PGD adversarial training (NAA inner maximiser)")
register_recipe("eroseg_at", EroSegATConfig, eroseg_at, "adversarial training with EroSeg")
register_recipe("nat", NATConfig, nat, "NAT: PGD-AT on rainy images (PEARL's baseline)")
register_recipe("pearl", PEARLConfig, pearl, "PEARL+AMA: train a derainer in front of the frozen model")
register_recipe("depth", DepthConfig, depth, "SGDepth multi-task training on the data's frame triplets")
