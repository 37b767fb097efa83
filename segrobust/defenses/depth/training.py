"""Joint training of a [`DepthMultiTask`][segrobust.defenses.DepthMultiTask] model on the shared trainer.

Each step feeds the current frame of a batch of triplets to the model; the
segmentation half is trained with the masks (optionally on adversarial
examples), the depth half with the self-supervised reprojection loss on the
previous and next frames, in the same forward and backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from segrobust.defenses.depth.modules import DepthLoss, PoseNet
from segrobust.defenses.depth.multitask import DepthMultiTask, DepthMultiTaskCriterion
from segrobust.training.recipes.base import TrainResult, dataset_of
from segrobust.training.recipes.config import DepthConfig

__all__ = ["TripletSegmentationView", "depth_recipe", "fit_depth", "triplets_like"]


class TripletSegmentationView(Dataset):
    """Adds ``"image"`` (the current frame, ``frames[1]``) to triplet items so the trainer can use them.

    Examples:
        >>> import torch
        >>> base = [{"frames": torch.rand(3, 3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.long)}]
        >>> item = TripletSegmentationView(base)[0]
        >>> torch.equal(item["image"], item["frames"][1])
        True
    """

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        if "frames" not in item or "mask" not in item:
            raise KeyError(f"triplet items need 'frames' (3, 3, H, W) and 'mask'; got keys {sorted(item)}")
        item["image"] = item["frames"][1]
        return item


class _WithPoseNet(nn.Module):
    def __init__(self, model: nn.Module, pose_net: nn.Module):
        super().__init__()
        self.model = model
        self.pose_net = pose_net

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)


def fit_depth(model: nn.Module, triplets: Any, config: DepthConfig) -> tuple[DepthMultiTask, list[dict[str, Any]]]:
    """Joint training of ``model`` on a map-style triplet dataset as ``config`` says; returns ``(multitask_model, history)``.

    The stages of the ``depth`` recipe: wrap the model, build the depth loss (with a
    pose network when needed), fit.
    """
    from segrobust.training import AdversarialTrainer
    from segrobust.training.recipes.base import scheduler_for, trainer_options

    if not isinstance(model, DepthMultiTask):
        model = DepthMultiTask(
            model,
            depth_grad_scale=config.depth_grad_scale,
            seg_grad_scale=config.seg_grad_scale,
            min_depth=config.min_depth,
            max_depth=config.max_depth,
            initial_depth=config.initial_depth,
        )
    first = triplets[0]
    if not isinstance(first, Mapping) or "frames" not in first:
        raise ValueError(
            f"depth multi-task training needs video frame triplets; {type(triplets).__name__} has none "
            "(use the synthetic or camvid data sets, or a dataset of {'frames', 'mask', 'K'} items)"
        )
    has_poses = "poses" in first
    pose_net = config.pose_net
    if pose_net == "auto":
        pose_net = None if has_poses else PoseNet()
    elif isinstance(pose_net, str):
        raise ValueError(f"pose_net must be 'auto', an nn.Module or None, got {pose_net!r}")
    if pose_net is None and not has_poses:
        raise ValueError("the triplets carry no 'poses': pass pose_net='auto' or a PoseNet")
    depth_loss = DepthLoss(
        pose_net=pose_net,
        min_depth=config.min_depth,
        max_depth=config.max_depth,
        use_known_poses=has_poses,
        **dict(config.depth_loss_kwargs),
    )
    criterion = DepthMultiTaskCriterion(
        depth_loss, seg_weight=config.seg_weight, depth_weight=config.depth_weight, ignore_index=config.ignore_index
    )
    criterion.to(torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu")))
    params = list(model.parameters()) + list(criterion.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr or 1e-3, weight_decay=1e-4)
    # the pose network is trained through the criterion; holding it here puts it in the trainer's modes
    # and checkpoints (under DDP pass ddp_kwargs={"find_unused_parameters": True} with a pose network)
    trained = _WithPoseNet(model, pose_net) if pose_net is not None else model
    trainer = AdversarialTrainer(
        trained,
        optimizer,
        TripletSegmentationView(triplets),
        **trainer_options(
            config,
            attack=config.attack,
            batch_size=config.batch_size,
            scheduler=scheduler_for(config.scheduler),
            loss_fn=criterion,
        ),
    )
    return model, trainer.fit()


def depth_recipe(model: nn.Module, data: Any, config: DepthConfig) -> TrainResult:
    """Joint segmentation and self-supervised depth training on the frame triplets behind ``data`` (recipe ``depth``).

    ``data`` is a triplet dataset (``{"frames": (3, 3, H, W), "mask", "K",
    optional "poses"}`` items, e.g. ``CamVidTriplets``,
    ``SyntheticStreetTriplets``), or a SyntheticStreets / CamVid segmentation
    set whose triplets (same split and size) are used; a ``DataLoader`` is
    read for its dataset. ``model`` (an smp model, or a
    [DepthMultiTask][segrobust.defenses.DepthMultiTask] to continue) is
    trained in place inside the returned ``DepthMultiTask``.

    Examples:
        >>> from segrobust.defenses import RECIPES
        >>> config = RECIPES["depth"].config(epochs=2, batch_size=8)
        >>> result = RECIPES["depth"](smp_model, SyntheticStreetTriplets(64, (48, 64)), config)  # doctest: +SKIP
    """
    dataset, _ = dataset_of(data)
    multitask, history = fit_depth(model, triplets_like(dataset), config)
    return TrainResult(multitask, history)


def triplets_like(dataset: Any) -> Any:
    """The frame-triplet dataset behind a segmentation dataset (SyntheticStreets or CamVid), same split and size.

    Any other dataset is returned as it is, taken to hold triplets already
    ([fit_depth][segrobust.defenses.depth.training.fit_depth] checks its first
    item). No item is read here: a dataset with random augmentation draws
    from the global generator exactly as often as without this call.

    Examples:
        >>> from segrobust.datasets import SyntheticStreets
        >>> type(triplets_like(SyntheticStreets(4, (32, 48)))).__name__
        'SyntheticStreetTriplets'
    """
    from torch.utils.data import Subset

    from segrobust.datasets import CamVid, CamVidTriplets, SyntheticStreets, SyntheticStreetTriplets

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    if isinstance(base, SyntheticStreets):
        return SyntheticStreetTriplets(len(base), base.size, seed=base.seed, split=base.split)
    if isinstance(base, CamVid):
        return CamVidTriplets(base.root, base.split, size=base.size)
    return dataset
