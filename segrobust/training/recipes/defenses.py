"""The recipes that train a defence: PEARL (a derainer in front of the frozen segmenter) and SGDepth multi-task.

Their training code lives with the defences (``segrobust.defenses``), imported
when a recipe runs.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from segrobust.training.recipes._base import Artifact, TrainResult, dataset_of
from segrobust.training.recipes.config import DepthConfig, PEARLConfig

__all__ = ["depth", "pearl"]


def pearl(model: nn.Module, data: Any, config: PEARLConfig) -> TrainResult:
    """PEARL (+AMA by default) with a fresh derainer in front of the frozen ``model`` (recipe ``pearl``).

    ``data`` is a map-style dataset (a ``DataLoader`` is read for its dataset).
    A derainer given by name is initialised from ``config.seed``.
    The result's model is ``PEARL(model, derainer)``; with a named derainer
    its artifact ``defense.pt`` is what ``segrobust benchmark --defense
    pearl:PATH`` loads.
    """
    from segrobust.defenses.derain import build_derainer
    from segrobust.defenses.pearl_training import fit_pearl, save_pearl_defense

    if isinstance(config.derainer, str):
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only, not on import order
            torch.manual_seed(config.seed)
            derainer = build_derainer(config.derainer)
    else:
        derainer = config.derainer
    dataset, _ = dataset_of(data)
    defended, history = fit_pearl(model, derainer, dataset, config)
    artifacts = {}
    if isinstance(config.derainer, str):
        write = functools.partial(save_pearl_defense, derainer, name=config.derainer)
        artifacts["defense.pt"] = Artifact(lambda path: write(path=path), "--defense pearl:{path}")
    return TrainResult(defended, history, artifacts)


def depth(model: nn.Module, data: Any, config: DepthConfig) -> TrainResult:
    """Joint segmentation and self-supervised depth training on the frame triplets behind ``data`` (recipe ``depth``).

    ``data`` is a triplet dataset, or a SyntheticStreets / CamVid segmentation
    set whose triplets (same split and size) are used. ``model`` (an smp model)
    is trained in place inside the returned [DepthMultiTask][segrobust.defenses.DepthMultiTask].
    """
    from segrobust.defenses.depth.training import fit_depth, triplets_like

    dataset, _ = dataset_of(data)
    multitask, history = fit_depth(model, triplets_like(dataset), config)
    return TrainResult(multitask, history)
