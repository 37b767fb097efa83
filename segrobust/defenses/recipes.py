"""The recipes that train a defence: ``RECIPES[name](model, data, config) -> TrainResult``.

The same protocol as the segmenter's recipes in
`segrobust.training.RECIPES` (a [Recipe][segrobust.training.Recipe] with a
typed config); ``segrobust train --recipe`` takes the names of both tables.

| name | config | what is trained |
|---|---|---|
| ``pearl`` | [PEARLConfig][segrobust.training.PEARLConfig] | a derainer in front of the frozen segmenter |
| ``depth`` | [DepthConfig][segrobust.training.DepthConfig] | segmentation + self-supervised depth |

Examples:
    >>> from segrobust.defenses import RECIPES
    >>> sorted(RECIPES)
    ['depth', 'pearl']
"""

from __future__ import annotations

from segrobust.defenses.depth.training import depth_recipe
from segrobust.defenses.pearl_training import PEARL_DEFENSE_FILE, pearl_recipe
from segrobust.training.recipes import DepthConfig, PEARLConfig, Recipe

__all__ = ["RECIPES"]

#: The defences' training recipes by name.
RECIPES: dict[str, Recipe] = {
    "pearl": Recipe(
        "pearl",
        PEARLConfig,
        pearl_recipe,
        "PEARL+AMA: train a derainer in front of the frozen model",
        artifacts=(PEARL_DEFENSE_FILE,),
    ),
    "depth": Recipe("depth", DepthConfig, depth_recipe, "SGDepth multi-task training on the data's frame triplets"),
}
