"""Joint training of a [`DepthMultiTask`][segrobust.defenses.DepthMultiTask] model on the shared trainer.

Each step feeds the current frame of a batch of triplets to the model; the
segmentation half is trained with the masks (optionally on adversarial
examples), the depth half with the self-supervised reprojection loss on the
previous and next frames, in the same forward and backward pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segrobust.defenses.depth.modules import DepthLoss, PoseNet
from segrobust.defenses.depth.multitask import DepthMultiTask, DepthMultiTaskCriterion
from segrobust.training.recipes.config import DepthConfig

__all__ = ["TripletSegmentationView", "fit_depth", "train_depth_multitask", "triplets_like"]


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

    The stages of [train_depth_multitask][segrobust.defenses.train_depth_multitask]
    and of the ``depth`` recipe: wrap the model, build the depth loss (with a
    pose network when needed), fit.
    """
    from segrobust.training import AdversarialTrainer
    from segrobust.training.recipes._base import scheduler_for, trainer_options

    if not isinstance(model, DepthMultiTask):
        model = DepthMultiTask(
            model,
            depth_grad_scale=config.depth_grad_scale,
            seg_grad_scale=config.seg_grad_scale,
            min_depth=config.min_depth,
            max_depth=config.max_depth,
            initial_depth=config.initial_depth,
        )
    has_poses = "poses" in triplets[0]
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


def train_depth_multitask(
    model: nn.Module,
    train_data: Union[Dataset, DataLoader],
    *,
    pose_net: Union[nn.Module, str, None] = "auto",
    attack: Any = None,
    epochs: int = 1,
    batch_size: int = 8,
    lr: float = 1e-3,
    seg_weight: float = 1.0,
    depth_weight: float = 1.0,
    depth_grad_scale: float = 0.9,
    seg_grad_scale: float = 0.1,
    min_depth: float = 0.1,
    max_depth: float = 100.0,
    initial_depth: Optional[float] = 10.0,
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    depth_loss_kwargs: Optional[Mapping[str, Any]] = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
) -> tuple[DepthMultiTask, list[dict[str, Any]]]:
    """Train segmentation and self-supervised depth jointly; returns ``(multitask_model, history)``.

    The keyword form of the ``depth`` recipe (see [DepthConfig][segrobust.training.DepthConfig]).

    Args:
        model: an smp model (wrapped in [`DepthMultiTask`][segrobust.defenses.DepthMultiTask] with the given
            gradient scales, depth range and ``initial_depth``) or an existing
            [`DepthMultiTask`][segrobust.defenses.DepthMultiTask].
        train_data: a dataset of triplet items ``{"frames": (3, 3, H, W),
            "mask", "K", optional "poses"}`` (e.g. ``CamVidTriplets``,
            ``SyntheticStreetTriplets``) or a ``DataLoader`` over one (read
            for its dataset and batch size).
        pose_net: ``"auto"`` builds a [`PoseNet`][segrobust.defenses.PoseNet] when items carry no known
            poses; a module to use one; ``None`` to require known poses.
        attack: optional inner maximiser for the segmentation half (any
            ``attack(images, masks)`` or factory, as in the trainer); it
            attacks the segmentation output of the model in training mode.
        trainer_kwargs: passed to [`AdversarialTrainer`][segrobust.training.AdversarialTrainer].

    Examples:
        >>> from segrobust.datasets import SyntheticStreetTriplets  # doctest: +SKIP
        >>> mt, history = train_depth_multitask(smp.Unet("resnet18", encoder_weights=None, classes=11),
        ...                                     SyntheticStreetTriplets(64, (48, 64)), epochs=2)  # doctest: +SKIP
    """
    from segrobust.training.recipes._base import legacy_config

    if isinstance(train_data, DataLoader):
        batch_size = train_data.batch_size or batch_size
        train_data = train_data.dataset
    kwargs = dict(trainer_kwargs or {})
    scheduler = kwargs.pop("scheduler", "poly")
    config = legacy_config(
        DepthConfig,
        kwargs,
        pose_net=pose_net,
        attack=attack,
        epochs=epochs,
        lr=lr,
        seg_weight=seg_weight,
        depth_weight=depth_weight,
        depth_grad_scale=depth_grad_scale,
        seg_grad_scale=seg_grad_scale,
        min_depth=min_depth,
        max_depth=max_depth,
        initial_depth=initial_depth,
        num_classes=num_classes,
        ignore_index=ignore_index,
        depth_loss_kwargs=dict(depth_loss_kwargs or {}),
        scheduler=scheduler,
        **({} if "batch_size" in kwargs else {"batch_size": batch_size}),
    )
    return fit_depth(model, train_data, config)


def triplets_like(dataset: Any) -> Any:
    """The frame-triplet dataset behind a segmentation dataset (SyntheticStreets or CamVid), same split and size.

    Examples:
        >>> from segrobust.datasets import SyntheticStreets
        >>> type(triplets_like(SyntheticStreets(4, (32, 48)))).__name__
        'SyntheticStreetTriplets'
    """
    from torch.utils.data import Subset

    from segrobust.datasets import CamVid, CamVidTriplets, SyntheticStreets, SyntheticStreetTriplets

    if isinstance(dataset, Subset):
        dataset = dataset.dataset
    if len(dataset) and "frames" in dataset[0]:
        return dataset
    if isinstance(dataset, SyntheticStreets):
        return SyntheticStreetTriplets(len(dataset), dataset.size, seed=dataset.seed, split=dataset.split)
    if isinstance(dataset, CamVid):
        return CamVidTriplets(dataset.root, dataset.split, size=dataset.size)
    raise ValueError(
        f"depth multi-task training needs video frame triplets; {type(dataset).__name__} has none "
        "(use the synthetic or camvid data sets)"
    )
