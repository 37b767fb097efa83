"""Depth multi-task defence (Klingner et al., CVPRW 2020 / SGDepth; monodepth2 loss).

[`DepthMultiTask`][segrobust.defenses.DepthMultiTask] adds a self-supervised depth branch to any smp
segmentation model; [`DepthLoss`][segrobust.defenses.DepthLoss] (or the functional
[`self_supervised_depth_loss`][segrobust.defenses.self_supervised_depth_loss]) trains it on frame triplets;
[`depth_multitask_loss`][segrobust.defenses.depth_multitask_loss] is the joint objective a training recipe calls.
The functional core lives in [`segrobust.defenses.depth.functional`][segrobust.defenses.depth.functional].
"""

from .functional import (
    DepthLossTerms,
    ScaleGradient,
    depth_loss_terms,
    disparity_to_depth,
    edge_aware_smoothness,
    invert_pose,
    median_scaled_abs_rel,
    photometric_error,
    pose_vec_to_matrix,
    reprojection_loss,
    scale_gradient,
    self_supervised_depth_loss,
    warp_to_target,
)
from .modules import DepthLoss, GradientScale, PoseNet, predict_poses
from .multitask import (
    SUPPORTED_ARCHITECTURES,
    DepthMultiTask,
    DepthMultiTaskCriterion,
    DepthMultiTaskOutput,
    MultiTaskLossTerms,
    depth_multitask_loss,
    multitask_inputs,
)
from .training import TripletSegmentationView, depth_recipe

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "DepthLoss",
    "DepthLossTerms",
    "DepthMultiTask",
    "DepthMultiTaskCriterion",
    "DepthMultiTaskOutput",
    "GradientScale",
    "MultiTaskLossTerms",
    "PoseNet",
    "ScaleGradient",
    "TripletSegmentationView",
    "depth_loss_terms",
    "depth_multitask_loss",
    "depth_recipe",
    "disparity_to_depth",
    "edge_aware_smoothness",
    "invert_pose",
    "median_scaled_abs_rel",
    "multitask_inputs",
    "photometric_error",
    "pose_vec_to_matrix",
    "predict_poses",
    "reprojection_loss",
    "scale_gradient",
    "self_supervised_depth_loss",
    "warp_to_target",
]
