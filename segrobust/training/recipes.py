"""Ready-made training recipes: thin calls of :class:`~segrobust.training.AdversarialTrainer`.

All three share the optimiser defaults of semantic segmentation (SGD,
momentum 0.9, weight decay 1e-4, poly learning-rate decay with power 0.9,
stepped per iteration) and differ only in the inner maximiser. Anything else
the trainer accepts goes in ``trainer_kwargs`` (``eval_loader``,
``checkpoint_dir``, ``resume``, ``amp``, ``callbacks``...). The model is
trained in place; each recipe returns the trainer's history.

NAT (PEARL's baseline) is :func:`train_pgd_at` with a rain augmentation as
``input_transform``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Optional

import torch
from torch import nn

from segrobust.training.trainer import AdversarialTrainer, poly_lr

__all__ = ["train_eroseg_at", "train_pgd_at", "train_standard"]


def _train(
    model: nn.Module,
    train_loader: Any,
    attack: Any,
    *,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    optimizer: Optional[torch.optim.Optimizer],
    scheduler: Any,
    num_classes: Optional[int],
    ignore_index: int,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]],
    trainer_kwargs: Optional[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    trainer = AdversarialTrainer(
        model,
        optimizer,
        train_loader,
        attack=attack,
        epochs=epochs,
        scheduler=poly_lr() if scheduler == "poly" else scheduler,
        num_classes=num_classes,
        ignore_index=ignore_index,
        input_transform=input_transform,
        **dict(trainer_kwargs or {}),
    )
    return trainer.fit()


def train_standard(
    model: nn.Module,
    train_loader: Any,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
) -> list[dict[str, Any]]:
    """Standard (non-adversarial) training with masked cross-entropy.

    Args:
        model: segmentation model returning logits ``(N, K, H, W)``; trained in place.
        train_loader: batches ``{"image", "mask"}`` or ``(image, mask)`` (see the trainer).
        epochs, lr, momentum, weight_decay: SGD settings used when ``optimizer`` is ``None``.
        optimizer: your own optimizer (then ``lr``/``momentum``/``weight_decay`` are unused).
        scheduler: ``"poly"`` (power 0.9 per iteration), ``None``, an
            ``LRScheduler`` or a factory ``(optimizer, total_steps) -> LRScheduler``.
        num_classes, ignore_index: as in the trainer.
        input_transform: augmentation applied to each batch of images.
        trainer_kwargs: any other :class:`AdversarialTrainer` argument.

    Returns:
        The per-epoch history (see :meth:`AdversarialTrainer.fit`).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 2, 1)
        >>> data = [(torch.rand(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8)))]
        >>> history = train_standard(model, data, epochs=2, trainer_kwargs={"progress": False})
        >>> len(history)
        2
    """
    return _train(
        model, train_loader, None, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
        optimizer=optimizer, scheduler=scheduler, num_classes=num_classes, ignore_index=ignore_index,
        input_transform=input_transform, trainer_kwargs=trainer_kwargs,
    )


def train_pgd_at(
    model: nn.Module,
    train_loader: Any,
    *,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 7,
    random_start: bool = True,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
) -> list[dict[str, Any]]:
    """Madry PGD adversarial training: PGD on the masked pixel cross-entropy (:class:`segrobust.attacks.NAA`).

    The inner maximiser is ``NAA(model, eps, alpha, steps, random_start)``
    (the defaults ε = 8/255, α = 2/255, 7 steps are Madry et al.'s CIFAR
    setting), built by the trainer on the bare model after it is placed on
    its device. With ``input_transform`` set to a rain augmentation this is
    NAT, PEARL's baseline. ``adv_fraction`` and ``clean_loss_weight`` (mixed
    clean/adversarial training) go in ``trainer_kwargs``. Other arguments as
    in :func:`train_standard`.

    Examples:
        >>> history = train_pgd_at(model, loader, eps=4/255, steps=3, epochs=2)  # doctest: +SKIP
    """
    from segrobust.attacks import NAA  # lazy: the trainer does not depend on the attacks package

    def make_attack(module: nn.Module) -> Any:
        return NAA(module, eps=eps, alpha=alpha, steps=steps, random_start=random_start, ignore_index=ignore_index)

    return _train(
        model, train_loader, make_attack, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
        optimizer=optimizer, scheduler=scheduler, num_classes=num_classes, ignore_index=ignore_index,
        input_transform=input_transform, trainer_kwargs=trainer_kwargs,
    )


def train_eroseg_at(
    model: nn.Module,
    train_loader: Any,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
    steps: int = 7,
    random_start: bool = True,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Any = "poly",
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    trainer_kwargs: Optional[Mapping[str, Any]] = None,
    **eroseg_kwargs: Any,
) -> list[dict[str, Any]]:
    """Adversarial training with :class:`segrobust.attacks.EroSeg` as the inner maximiser.

    ``eroseg_kwargs`` (``q0``, ``schedule``, ``kernel_size``,
    ``fooled_weight``, ``confidence``...) go to ``EroSeg``; everything else as
    in :func:`train_pgd_at`.

    Examples:
        >>> history = train_eroseg_at(model, loader, eps=4/255, steps=3, q0=0.3)  # doctest: +SKIP
    """
    from segrobust.attacks import EroSeg  # lazy: the trainer does not depend on the attacks package

    def make_attack(module: nn.Module) -> Any:
        return EroSeg(
            module, eps=eps, alpha=alpha, steps=steps, random_start=random_start, ignore_index=ignore_index,
            **eroseg_kwargs,
        )

    return _train(
        model, train_loader, make_attack, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
        optimizer=optimizer, scheduler=scheduler, num_classes=num_classes, ignore_index=ignore_index,
        input_transform=input_transform, trainer_kwargs=trainer_kwargs,
    )
