"""Defences: models and training objectives that make segmentation robust, and the recipes that train them (``RECIPES``)."""

from .depth import (
    DepthLoss,
    DepthMultiTask,
    DepthMultiTaskCriterion,
    DepthMultiTaskOutput,
    PoseNet,
    depth_multitask_loss,
    self_supervised_depth_loss,
)
from .derain import PReNet, ResidualUNet, build_derainer
from .pearl import PEARL
from .pearl_training import AMATargetDataset, compute_ama_targets, load_pearl_defense, save_pearl_defense
from .recipes import RECIPES

__all__ = [
    "PEARL",
    "RECIPES",
    "AMATargetDataset",
    "DepthLoss",
    "DepthMultiTask",
    "DepthMultiTaskCriterion",
    "DepthMultiTaskOutput",
    "PReNet",
    "PoseNet",
    "ResidualUNet",
    "build_derainer",
    "compute_ama_targets",
    "depth_multitask_loss",
    "load_pearl_defense",
    "save_pearl_defense",
    "self_supervised_depth_loss",
]
