"""Typed settings of the training recipes: one shared base and one dataclass per recipe.

Every field has a default, so ``PGDATConfig(eps=4/255)`` is a complete
configuration. A recipe never ignores a setting: an option that is not a field
of its config is an error naming the option and the recipe
(`make_config`). Values are checked when the config is built.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import nn

from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT

__all__ = [
    "DepthConfig",
    "EroSegATConfig",
    "NATConfig",
    "PEARLConfig",
    "PGDATConfig",
    "RainSpec",
    "StandardConfig",
    "TrainConfig",
    "make_config",
]

RainSpec = Union[str, Mapping[str, Any], nn.Module, None]
PathLike = Union[str, "os.PathLike[str]"]


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _positive_number(value: Any, name: str, *, at_most: Optional[float] = None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or (at_most is not None and value > at_most)
    ):
        bound = f" in (0, {at_most:g}]" if at_most is not None else " > 0"
        raise ValueError(f"{name} must be a number{bound}, got {value!r}")


@dataclass
class TrainConfig:
    """Settings every recipe shares.

    Attributes:
        epochs: epochs to train (counting resumed ones).
        batch_size: samples per step when the recipe is given a map-style dataset.
        lr: learning rate; ``None`` is the recipe's default (see its config).
        num_classes: classes of the model's logits; inferred from the first batch when ``None``.
        ignore_index: mask label of void pixels.
        seed: seed of the shuffling, the attacks' random starts and the rain (see
            [AdversarialTrainer][segrobust.training.AdversarialTrainer]).
        num_workers: ``DataLoader`` worker processes for a map-style dataset.
        device: where to train (default CUDA when available).
        eval_data: evaluation data (dataset or loader), scored after each epoch.
        checkpoint_dir: where ``last.pt`` (and recipe caches) are written; ``None`` for no checkpoints.
        resume: continue from ``checkpoint_dir/last.pt`` (``True``) or from a path.
        progress: a progress bar.
        trainer_kwargs: any other [AdversarialTrainer][segrobust.training.AdversarialTrainer]
            argument (``amp``, ``callbacks``, ``grad_clip``, ``checkpoint_every``, ``adv_fraction``...).
    """

    epochs: int = 1
    batch_size: int = 8
    lr: Optional[float] = None
    num_classes: Optional[int] = None
    ignore_index: int = 255
    seed: int = 0
    num_workers: int = 0
    device: Union[torch.device, str, None] = None
    eval_data: Any = None
    checkpoint_dir: Optional[PathLike] = None
    resume: Union[bool, PathLike] = False
    progress: bool = True
    trainer_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive_int(self.epochs, "epochs")
        _positive_int(self.batch_size, "batch_size")
        if self.lr is not None:
            _positive_number(self.lr, "lr")
        if self.num_classes is not None:
            _positive_int(self.num_classes, "num_classes")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {self.num_workers!r}")
        if not isinstance(self.trainer_kwargs, Mapping):
            raise TypeError(f"trainer_kwargs must be a mapping, got {type(self.trainer_kwargs).__name__}")


@dataclass
class StandardConfig(TrainConfig):
    """Plain training of the segmenter with masked cross-entropy (recipe ``standard``).

    Attributes:
        optimizer: ``"sgd"`` (momentum, weight decay; ``lr`` default 0.01),
            ``"adamw"`` (weight decay; ``lr`` default 1e-3) or your own
            ``torch.optim.Optimizer`` (then ``lr``, ``momentum`` and
            ``weight_decay`` are unused).
        momentum: SGD momentum.
        weight_decay: SGD / AdamW weight decay.
        scheduler: ``"poly"`` (``lr·(1 − t/T)^0.9`` per step), ``None``, an
            ``LRScheduler`` or a factory ``(optimizer, total_steps) -> LRScheduler``.
        input_transform: ``images -> images`` applied to every batch (an augmentation).
    """

    optimizer: Union[str, torch.optim.Optimizer] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: Any = "poly"
    input_transform: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.optimizer, str) and self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd', 'adamw' or a torch.optim.Optimizer, got {self.optimizer!r}")
        if not isinstance(self.optimizer, (str, torch.optim.Optimizer)):
            raise TypeError(
                f"optimizer must be 'sgd', 'adamw' or a torch.optim.Optimizer, got {type(self.optimizer).__name__}"
            )
        if self.input_transform is not None and not callable(self.input_transform):
            raise TypeError(f"input_transform must be callable or None, got {type(self.input_transform).__name__}")


@dataclass
class PGDATConfig(StandardConfig):
    """Madry PGD adversarial training with NAA as the inner maximiser (recipe ``pgd_at``).

    Attributes:
        eps: L∞ budget of the inner attack, in (0, 1].
        alpha: its step size; ``None`` for ``2.5·eps/steps``.
        steps: its number of steps.
        random_start: start it from a uniform point of the ε-ball.
    """

    eps: float = 8 / 255
    alpha: Optional[float] = 2 / 255
    steps: int = 7
    random_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_number(self.eps, "eps", at_most=1.0)
        if self.alpha is not None:
            _positive_number(self.alpha, "alpha", at_most=1.0)
        _positive_int(self.steps, "steps")

    @property
    def step_size(self) -> float:
        """``alpha``, or ``2.5·eps/steps`` when it is ``None``."""
        return 2.5 * self.eps / self.steps if self.alpha is None else self.alpha


@dataclass
class EroSegATConfig(PGDATConfig):
    """Adversarial training with EroSeg as the inner maximiser (recipe ``eroseg_at``).

    Attributes:
        eroseg: further [EroSeg][segrobust.attacks.EroSeg] arguments (``q0``,
            ``schedule``, ``kernel_size``, ``fooled_weight``, ``confidence``...).
    """

    eroseg: Mapping[str, Any] = field(default_factory=dict)


def _check_rain(rain: RainSpec, reference_height: Optional[int]) -> None:
    if reference_height is not None:
        _positive_int(reference_height, "rain_reference_height")
    if isinstance(rain, str):
        from segrobust.rain import resolve_rain_ranges

        resolve_rain_ranges(rain)
    elif rain is not None and not isinstance(rain, (nn.Module, Mapping)):
        raise TypeError(
            f"rain must be a preset name, a mapping of rain ranges, a module or None, got {type(rain).__name__}"
        )


@dataclass
class NATConfig(PGDATConfig):
    """NAT, PEARL's baseline: PGD-AT (NAA) of the segmenter on rainy images (recipe ``nat``).

    Attributes:
        rain: the rain added to every training image: a preset name
            (``"light"``, ``"medium"``, ``"heavy"``...), a mapping of
            [RandomRainStreaks][segrobust.rain.RandomRainStreaks] arguments
            (rain ranges, ``p`` defaults to 1), a module ``images -> rainy
            images``, or ``None`` (no rain).
        rain_reference_height: the image height the presets' streak lengths are
            meant for. A preset name is scaled from it to the height of the
            training images with [scale_rain_ranges][segrobust.rain.scale_rain_ranges],
            so the rain looks alike at any resolution (the benchmark does the
            same). Default ``PRESET_REFERENCE_HEIGHT`` (360); ``None`` uses the
            preset unscaled. A mapping of ranges is taken to be for your
            images already and is never scaled; a module is used as is.

    The attack defaults differ from PGD-AT's: ε = 4/255, 3 steps of
    ``2.5·eps/steps`` (PEARL's setting).
    """

    eps: float = 4 / 255
    alpha: Optional[float] = None
    steps: int = 3
    rain: RainSpec = "medium"
    rain_reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rain(self.rain, self.rain_reference_height)


@dataclass
class PEARLConfig(TrainConfig):
    """PEARL: a derainer trained in front of the frozen segmenter (recipe ``pearl``).

    Attributes:
        lr: Adam learning rate of the derainer (``None``: 1e-3).
        derainer: a registered derainer name (``"prenet"``, ``"unet"``) or a module.
        ama: reconstruct the AMA images of the clean ones (PEARL+AMA) instead of the clean images.
        rain, rain_reference_height: as in [NATConfig][segrobust.training.NATConfig].
        eps, alpha, steps: NAA on ``f ∘ D`` in each step (``alpha`` ``None``: ``2.5·eps/steps``).
        ama_eps, ama_steps: the AMA targets' budget (``None``: ``eps``) and steps.
        lambda_rec, lambda_seg: weights of the L1 reconstruction and segmentation losses.
        cache_dir: where AMA targets are cached; ``None``: ``checkpoint_dir/ama_cache``
            (no cache without a checkpoint directory).
        transform: augmentation of each item (moves ``"target"`` with the image).
        scheduler: as in [StandardConfig][segrobust.training.StandardConfig].
    """

    derainer: Union[str, nn.Module] = "prenet"
    ama: bool = True
    rain: RainSpec = "medium"
    rain_reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT
    eps: float = 4 / 255
    alpha: Optional[float] = None
    steps: int = 3
    ama_eps: Optional[float] = None
    ama_steps: int = 10
    lambda_rec: float = 1.0
    lambda_seg: float = 0.1
    cache_dir: Optional[PathLike] = None
    transform: Any = None
    scheduler: Any = "poly"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_rain(self.rain, self.rain_reference_height)
        _positive_number(self.eps, "eps", at_most=1.0)
        if self.alpha is not None:
            _positive_number(self.alpha, "alpha", at_most=1.0)
        if self.ama_eps is not None:
            _positive_number(self.ama_eps, "ama_eps", at_most=1.0)
        _positive_int(self.steps, "steps")
        _positive_int(self.ama_steps, "ama_steps")
        if not isinstance(self.derainer, (str, nn.Module)):
            raise TypeError(f"derainer must be a derainer name or an nn.Module, got {type(self.derainer).__name__}")


@dataclass
class DepthConfig(TrainConfig):
    """SGDepth multi-task training of segmentation and self-supervised depth (recipe ``depth``).

    Attributes:
        lr: Adam learning rate (``None``: 1e-3; weight decay 1e-4).
        pose_net: ``"auto"`` (a PoseNet when the triplets carry no poses), a module, or ``None``.
        attack: optional inner maximiser (or factory) for the segmentation half.
        seg_weight, depth_weight: weights of the two losses.
        depth_grad_scale, seg_grad_scale: gradient scales at the shared encoder.
        min_depth, max_depth, initial_depth: the depth head's range and starting depth.
        depth_loss_kwargs: further ``DepthLoss`` arguments.
        scheduler: as in [StandardConfig][segrobust.training.StandardConfig].
    """

    pose_net: Union[nn.Module, str, None] = "auto"
    attack: Any = None
    seg_weight: float = 1.0
    depth_weight: float = 1.0
    depth_grad_scale: float = 0.9
    seg_grad_scale: float = 0.1
    min_depth: float = 0.1
    max_depth: float = 100.0
    initial_depth: Optional[float] = 10.0
    depth_loss_kwargs: Mapping[str, Any] = field(default_factory=dict)
    scheduler: Any = "poly"


def make_config(recipe: str, config_type: type, config: Optional[TrainConfig] = None, **options: Any) -> Any:
    """``config`` (or the defaults of ``config_type``) with ``options`` set; an unknown option is an error.

    Examples:
        >>> make_config("pgd_at", PGDATConfig, eps=4 / 255).eps == 4 / 255
        True
        >>> make_config("standard", StandardConfig, eps=4 / 255)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: recipe 'standard' has no option 'eps' (its options: batch_size, ...)
    """
    if config is not None and not isinstance(config, config_type):
        raise TypeError(f"recipe {recipe!r} takes a {config_type.__name__}, got {type(config).__name__}")
    names = [f.name for f in dataclasses.fields(config_type)]
    unknown = [key for key in options if key not in names]
    if unknown:
        raise TypeError(f"recipe {recipe!r} has no option {unknown[0]!r} (its options: {', '.join(sorted(names))})")
    return dataclasses.replace(config, **options) if config is not None else config_type(**options)
