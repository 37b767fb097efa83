"""Training recipes of the segmenter: ``RECIPES[name](model, data, config) -> TrainResult``.

Every recipe takes the model, the training data (a map-style dataset, or a
loader / iterable of batches) and a typed config (a dataclass per recipe,
sharing [TrainConfig][segrobust.training.TrainConfig]; ``None`` for its
defaults). ``RECIPES[name].config(**options)`` builds one, and an option that
is not a field of the recipe's config is an error. The model is trained in place.

| name | config | what is trained |
|---|---|---|
| ``standard`` | [StandardConfig][segrobust.training.StandardConfig] | the segmenter, clean images |
| ``pgd_at`` | [PGDATConfig][segrobust.training.PGDATConfig] | the segmenter, NAA (PGD) examples |
| ``eroseg_at`` | [EroSegATConfig][segrobust.training.EroSegATConfig] | the segmenter, EroSeg examples |
| ``nat`` | [NATConfig][segrobust.training.NATConfig] | the segmenter, NAA examples of rainy images |

The recipes that train a defence (``pearl``, ``depth``) follow the same
protocol and live with the defences, in ``segrobust.defenses.RECIPES``. Both
tables are plain dicts: add a recipe with ``RECIPES[name] = Recipe(...)``.

Examples:
    >>> from segrobust.training import RECIPES
    >>> sorted(RECIPES)
    ['eroseg_at', 'nat', 'pgd_at', 'standard']
    >>> config = RECIPES["pgd_at"].config(eps=4 / 255, steps=3, epochs=2)
    >>> result = RECIPES["pgd_at"](model, train_set, config)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from segrobust.training.recipes.adversarial import eroseg_at, nat, pgd_at, standard
from segrobust.training.recipes.base import Artifact, Recipe, TrainResult
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
    "standard",
]

#: The segmenter's training recipes by name.
RECIPES: dict[str, Recipe] = {
    "standard": Recipe("standard", StandardConfig, standard, "masked cross-entropy on clean images"),
    "pgd_at": Recipe("pgd_at", PGDATConfig, pgd_at, "Madry PGD adversarial training (NAA inner maximiser)"),
    "eroseg_at": Recipe("eroseg_at", EroSegATConfig, eroseg_at, "adversarial training with EroSeg"),
    "nat": Recipe("nat", NATConfig, nat, "NAT: PGD-AT on rainy images (PEARL's baseline)"),
}


def get_recipe(name: str, recipes: Optional[Mapping[str, Recipe]] = None) -> Recipe:
    """The recipe called ``name`` in ``recipes`` (default `RECIPES`; ``-`` and ``_`` alike, any case).

    A ``KeyError`` lists the known ones.

    Examples:
        >>> get_recipe("PGD-AT").name
        'pgd_at'
    """
    table = RECIPES if recipes is None else recipes
    key: Optional[str] = name.lower().replace("-", "_") if isinstance(name, str) else None
    if key not in table:
        raise KeyError(f"unknown recipe {name!r}; expected one of {', '.join(table)}")
    return table[key]
