"""Defences: models and training objectives that make segmentation robust."""

from .depth import (
    DepthLoss,
    DepthMultiTask,
    DepthMultiTaskCriterion,
    DepthMultiTaskOutput,
    PoseNet,
    depth_multitask_loss,
    self_supervised_depth_loss,
    train_depth_multitask,
)
from .derain import PReNet, ResidualUNet, build_derainer
from .pearl import PEARL
from .pearl_training import AMATargetDataset, compute_ama_targets, train_nat, train_pearl

__all__ = [
    "PEARL",
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
    "self_supervised_depth_loss",
    "train_depth_multitask",
    "train_nat",
    "train_pearl",
]
