"""One training loop for standard, adversarial and preprocessor (PEARL-style) training.

The loop is Madry's min-max: an inner maximiser (any ``attack(images, masks)``
callable) turns part of each batch into adversarial samples, the outer step
minimises a loss on them. Resume is exact: a run killed and resumed from its
last checkpoint ends with the same weights as one that never stopped.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from segrobust import distributed as _dist
from segrobust.metrics import ConfusionMatrix
from segrobust.training import checkpoint
from segrobust.training.functional import as_batch, segmentation_loss, split_batch_output
from segrobust.utils import model_mode_preserved, segmentation_logits

__all__ = ["AdversarialTrainer", "Callback", "evaluate", "poly_lr"]

_END = object()

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[Any, Mapping[str, Any]], Union[torch.Tensor, Mapping[str, torch.Tensor]]]
EvalFn = Callable[[nn.Module, Any], Mapping[str, float]]


class Callback:
    """Hooks the trainer calls on every rank; override the ones you need (all do nothing here).

    Any object with some of these methods works too (duck typing). Raising from
    a hook stops training: do it on every rank under ``torch.distributed``, or
    the other ranks wait for ever in the next collective.

    Examples:
        >>> class PrintLoss(Callback):
        ...     def on_epoch_end(self, trainer, record):
        ...         print(f"epoch {record['epoch']}: loss {record['loss']:.3f}")
    """

    def on_fit_start(self, trainer: AdversarialTrainer) -> None:
        """Before the first epoch (after resuming)."""

    def on_epoch_start(self, trainer: AdversarialTrainer, epoch: int) -> None:
        """Before the epoch's first batch (after the epoch's seeding)."""

    def on_step_end(self, trainer: AdversarialTrainer, info: dict[str, Any]) -> None:
        """After each optimizer step and its checkpoint; ``info`` has epoch, step, global_step, loss, lr."""

    def on_epoch_end(self, trainer: AdversarialTrainer, record: dict[str, Any]) -> None:
        """After the epoch's evaluation and checkpoint; ``record`` is the new history entry."""

    def on_fit_end(self, trainer: AdversarialTrainer, history: list[dict[str, Any]]) -> None:
        """After the last epoch."""


def poly_lr(power: float = 0.9) -> Callable[[torch.optim.Optimizer, int], LRScheduler]:
    """A scheduler factory for the polynomial decay ``lr · (1 − t/T)^power`` common in segmentation.

    Pass it as ``AdversarialTrainer(scheduler=poly_lr())``: the trainer calls it
    with the optimizer and ``T``, the number of scheduler steps of the run, which
    it knows only once the (possibly sharded) loader is built.

    Examples:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = poly_lr(1.0)(opt, 4)
        >>> _ = opt.step(); sched.step(); opt.param_groups[0]["lr"]
        0.75
    """

    def build(optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        total = max(int(total_steps), 1)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(1.0 - step / total, 0.0) ** power)

    return build


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    device: Union[torch.device, str, None] = None,
    attack: Optional[AttackFn] = None,
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    reduce: bool = True,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> dict[str, float]:
    """mIoU, pixel accuracy and mean class accuracy of ``model`` over ``loader``, from one confusion matrix.

    The model runs in eval mode (its modes are restored afterwards). With
    ``attack`` the scores are those on ``attack(images, masks)``; with
    ``input_transform`` the images are transformed first (e.g. rain). With
    ``reduce`` the matrix is summed over ``torch.distributed`` ranks, so each
    rank should see a disjoint shard (see [`ShardSampler`][segrobust.training.ShardSampler]).
    With ``mean``/``std`` (a model that expects normalised images) the model is
    wrapped in [SegmentationModel][segrobust.models.SegmentationModel], so the
    loader's images stay in ``[0, 1]``; build ``attack`` on that wrapped model too.

    Returns:
        ``{"miou", "pixel_accuracy", "mean_class_accuracy", "num_pixels"}``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 2, 1)
        >>> data = [(torch.rand(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8)))]
        >>> scores = evaluate(model, data, num_classes=2)
        >>> 0.0 <= scores["miou"] <= 1.0, scores["num_pixels"]
        (True, 128)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if mean is not None or std is not None:
        from segrobust.models import SegmentationModel

        model = SegmentationModel(model, mean=mean, std=std)
    if reduce and num_classes is None and _dist.get_world_size() > 1:
        raise ValueError("pass num_classes when evaluating under torch.distributed (every rank needs the matrix shape)")
    device = torch.device(device) if device is not None else _model_device(model)
    matrix: Optional[ConfusionMatrix] = (
        None if num_classes is None else ConfusionMatrix(num_classes, ignore_index, device)
    )
    with model_mode_preserved(model):
        model.eval()
        for raw in loader:
            batch = as_batch(raw, device)
            images, masks = batch["image"], batch["mask"]
            if input_transform is not None:
                images = input_transform(images)
            if attack is not None:
                images = attack(images, masks).detach()
            with torch.no_grad():
                logits = segmentation_logits(model(images))
            if matrix is None:
                matrix = ConfusionMatrix(logits.shape[1], ignore_index, device)
            matrix.update(logits, masks)
    if matrix is None:
        raise ValueError("loader yielded no batch and num_classes was not given")
    if reduce:
        matrix.all_reduce()
    scores = matrix.compute()
    return {
        "miou": scores.miou,
        "pixel_accuracy": scores.pixel_accuracy,
        "mean_class_accuracy": scores.mean_class_accuracy,
        "num_pixels": scores.num_pixels,
    }


def _is_attack_factory(attack: Any) -> bool:
    """A class, or a callable taking exactly one required positional argument (the model), builds an attack."""
    if isinstance(attack, type):
        return True
    if isinstance(attack, nn.Module) or callable(getattr(attack, "forward", None)):
        return False  # a built attack: torchattacks.Attack, nn.Module
    try:
        parameters = inspect.signature(attack).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) == 1 and not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_positive_int(value: Any, name: str, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return value


def _check_arguments(
    *,
    model: Any,
    optimizer: Any,
    attack: Any,
    loss_fn: Any,
    eval_fn: Any,
    input_transform: Any,
    logger: Any,
    scheduler: Any,
    scheduler_interval: Any,
    grad_clip: Any,
    clean_loss_weight: Any,
    seed: Any,
    num_classes: Any,
    checkpoint_dir: Any,
    checkpoint_every: Any,
    resume: Any,
) -> None:
    """The trainer's argument checks that need no state: a clear ``TypeError``/``ValueError`` naming the argument."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if attack is not None and not callable(attack):
        raise TypeError(
            f"attack must be None, a callable attack(images, masks) or a factory(model), got {type(attack).__name__}"
        )
    for name, fn in (
        ("loss_fn", loss_fn),
        ("eval_fn", eval_fn),
        ("input_transform", input_transform),
        ("logger", logger),
    ):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {type(fn).__name__}")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
    if isinstance(scheduler, ReduceLROnPlateau):
        raise TypeError("ReduceLROnPlateau needs a metric: step it from a Callback.on_epoch_end instead")
    if grad_clip is not None and (
        isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) or grad_clip <= 0
    ):
        raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
    if (
        isinstance(clean_loss_weight, bool)
        or not isinstance(clean_loss_weight, (int, float))
        or not clean_loss_weight >= 0
    ):
        raise ValueError(f"clean_loss_weight must be a number >= 0, got {clean_loss_weight!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if num_classes is not None:
        _check_positive_int(num_classes, "num_classes")
    if checkpoint_every is not None and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs checkpoint_dir")
    if resume and checkpoint_dir is None and not isinstance(resume, (str, os.PathLike)):
        raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint path as resume=...)")


class AdversarialTrainer:
    """Train a segmentation model (or a preprocessor in front of one) on adversarial samples.

    Each step: ``inputs = input_transform(images)`` (e.g. rain, for NAT); the
    first ``round(adv_fraction · N)`` inputs are replaced by
    ``attack(inputs, masks)``; one forward pass of the (DDP-wrapped) model on
    them; ``loss = loss_fn(outputs, batch)`` (plus ``clean_loss_weight ·
    loss_fn(model(inputs), batch)`` when set); backward, optional gradient
    clipping, optimizer and scheduler step. With ``attack=None`` it is plain
    training.

    Args:
        model: the module whose parameters ``optimizer`` updates. Parameters
            with ``requires_grad=False`` stay frozen, so PEARL trains a derainer
            ``D`` inside ``nn.Sequential(D, frozen_f)`` with an optimizer over
            ``D``'s parameters. ``fit`` puts it in train mode and restores every
            submodule's mode at the end: a frozen part whose BatchNorm must stay
            in eval mode should override ``train()``. An already
            ``DistributedDataParallel`` model is accepted.
        optimizer: a ``torch.optim.Optimizer`` over (some of) ``model``'s parameters.
        train_loader: a ``DataLoader``, a map-style ``Dataset`` (then give
            ``batch_size``) or any iterable of batches. Batches are dicts with
            ``"image"`` ``(N, 3, H, W)`` in ``[0, 1]`` and ``"mask"`` ``(N, H, W)``
            (extra keys are kept and reach ``loss_fn``) or ``(image, mask)`` tuples.
            Under ``torch.distributed`` a plain ``DataLoader`` is rebuilt with a
            ``DistributedSampler``.
        attack: the inner maximiser. ``None`` (standard training), a callable
            ``attack(images, masks) -> adv_images`` (a torchattacks-style
            attack, e.g. ``segrobust.attacks.NAA``), or a factory
            ``factory(model) -> attack`` such as the class ``NAA`` itself or
            ``functools.partial(NAA, eps=8/255)``. A factory is called with the
            bare module (never the DDP wrapper) after it has been moved to
            ``device``; prefer it, since torchattacks attacks fix their device
            when built. A class or a callable with one required positional
            argument counts as a factory. The attack runs in float32 outside
            autocast, must not change the model's parameters, and must restore
            its modes.
        adv_fraction: fraction of each batch replaced by adversarial samples
            (the first ``round(adv_fraction · N)``; shuffle your data).
        clean_loss_weight: weight of an extra loss on the clean (transformed)
            inputs, ``0`` to disable; only used when samples are attacked. The
            clean inputs join the adversarial ones in one forward pass, so
            BatchNorm sees both (and DDP sees one forward per step).
        loss_fn: ``loss_fn(outputs, batch) -> loss`` or a dict with key
            ``"loss"`` and other scalar terms (averaged per epoch into the
            history). ``batch`` is the loader's dict plus ``"input"`` (what the
            model saw), ``"clean_input"`` (after ``input_transform``, before the
            attack) and ``"adversarial"`` (bool ``(N,)``). Default:
            [`segmentation_loss`][segrobust.training.segmentation_loss], the mean
            cross-entropy over valid pixels (zero, not NaN, without any).
        num_classes: for the training and evaluation mIoU; inferred from the
            logits of the first batch when ``None``.
        ignore_index: mask label of void pixels.
        epochs: number of epochs to train in total (counting resumed ones).
        scheduler: a ``torch.optim.lr_scheduler`` instance, or a factory
            ``factory(optimizer, total_steps)`` (e.g. [`poly_lr`][segrobust.training.poly_lr]) built
            once the number of steps of the run is known. ``ReduceLROnPlateau``
            is not supported (use a callback).
        scheduler_interval: ``"step"`` (default: stepped after every optimizer
            step, as poly schedules expect) or ``"epoch"``.
        grad_clip: clip the global gradient norm to this value (after
            unscaling under AMP); ``None`` to disable.
        amp: mixed precision (``torch.autocast`` + ``GradScaler``) on CUDA.
            On another device it is ignored with a warning.
        amp_dtype: autocast dtype; the scaler is used for ``float16`` only.
        checkpoint_dir: where ``last.pt`` is written (atomically, rank 0 only)
            at each epoch end; ``None`` disables checkpoints.
        checkpoint_every: also checkpoint every this many optimizer steps
            (mid-epoch resume); ``None``: epoch ends only.
        resume: ``True`` continues from ``checkpoint_dir/last.pt`` when it
            exists; a path continues from that file; ``False`` starts afresh.
        eval_loader: evaluation data (a loader, a ``Dataset`` or an iterable),
            sharded over ranks without padding.
        eval_fn: ``eval_fn(model, eval_loader) -> {name: value}``, called with
            the bare module on each rank's shard; the values enter the history
            as ``eval_<name>``. Default: [`evaluate`][segrobust.training.evaluate] (clean mIoU, pixel
            accuracy, mean class accuracy, reduced over ranks). A custom one
            must reduce over ranks itself (``ConfusionMatrix.all_reduce``).
        eval_every: evaluate every this many epochs (and after the last one).
        seed: every epoch starts by seeding torch, numpy, python ``random`` and
            the loader's generators from ``(seed, epoch, rank)``; this is what
            makes the shuffling, the attack's random starts and
            ``input_transform`` replayable under resume.
        device: where to train; default ``cuda:LOCAL_RANK`` under
            ``torch.distributed`` with CUDA, else ``cuda`` if available, else CPU.
        progress: a tqdm bar with the running loss and mIoU (rank 0 only).
        input_transform: ``images -> images`` applied to every clean batch
            before the attack (e.g. a rain augmentation for NAT). Its random
            draws must come from the global torch/numpy/random generators (as
            kornia's do) for resume to replay them. It runs without gradient.
        callbacks: [`Callback`][segrobust.training.Callback] objects (or any object with some of its methods).
        logger: ``logger(record)`` called on rank 0 with every epoch record,
            and with step records every ``log_every`` steps.
        log_every: see ``logger``; ``None`` for epoch records only.
        batch_size: batch size when ``train_loader``/``eval_loader`` is a ``Dataset``.
        ddp_kwargs: extra arguments of ``DistributedDataParallel`` (e.g.
            ``find_unused_parameters=True``). Buffers (BatchNorm statistics)
            are broadcast from rank 0 after every step by the trainer itself
            (``broadcast_buffers=False`` here turns that off), because the
            attack runs on the bare module before any DDP forward.

    Under ``torch.distributed`` (e.g. ``torchrun``) the trainer starts the
    process group if needed, wraps the model in ``DistributedDataParallel``,
    shards the loaders, reduces the history's metrics over ranks and writes
    checkpoints and logs on rank 0 only. See ``docs/training.md``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 2, 3, padding=1)
        >>> data = [(torch.rand(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8))) for _ in range(3)]
        >>> def fgsm(images, masks, eps=4 / 255):
        ...     x = images.clone().requires_grad_(True)
        ...     loss = nn.functional.cross_entropy(model(x), masks)
        ...     grad, = torch.autograd.grad(loss, x)
        ...     return (images + eps * grad.sign()).clamp(0, 1)
        >>> trainer = AdversarialTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), data,
        ...                              attack=fgsm, epochs=2, progress=False)
        >>> history = trainer.fit()
        >>> len(history), sorted(history[0])[:4]
        (2, ['epoch', 'global_step', 'loss', 'lr'])
    """

    checkpoint_name = "last.pt"

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Any,
        *,
        attack: Any = None,
        adv_fraction: float = 1.0,
        clean_loss_weight: float = 0.0,
        loss_fn: Optional[LossFn] = None,
        num_classes: Optional[int] = None,
        ignore_index: int = 255,
        epochs: int = 1,
        scheduler: Any = None,
        scheduler_interval: str = "step",
        grad_clip: Optional[float] = None,
        amp: bool = False,
        amp_dtype: torch.dtype = torch.float16,
        checkpoint_dir: Union[str, os.PathLike, None] = None,
        checkpoint_every: Optional[int] = None,
        resume: Union[bool, str, os.PathLike] = False,
        eval_loader: Any = None,
        eval_fn: Optional[EvalFn] = None,
        eval_every: int = 1,
        seed: int = 0,
        device: Union[torch.device, str, None] = None,
        progress: bool = True,
        input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        callbacks: Sequence[Any] = (),
        logger: Optional[Callable[[dict[str, Any]], None]] = None,
        log_every: Optional[int] = None,
        batch_size: Optional[int] = None,
        ddp_kwargs: Optional[Mapping[str, Any]] = None,
    ):
        _check_arguments(
            model=model,
            optimizer=optimizer,
            attack=attack,
            loss_fn=loss_fn,
            eval_fn=eval_fn,
            input_transform=input_transform,
            logger=logger,
            scheduler=scheduler,
            scheduler_interval=scheduler_interval,
            grad_clip=grad_clip,
            clean_loss_weight=clean_loss_weight,
            seed=seed,
            num_classes=num_classes,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume=resume,
        )
        self.adv_fraction = _check_fraction(adv_fraction, "adv_fraction")
        self.clean_loss_weight = float(clean_loss_weight)
        self.epochs = _check_positive_int(epochs, "epochs")
        self.checkpoint_every = _check_positive_int(checkpoint_every, "checkpoint_every", allow_none=True)
        self.eval_every = _check_positive_int(eval_every, "eval_every")
        self.log_every = _check_positive_int(log_every, "log_every", allow_none=True)
        self.num_classes, self.ignore_index, self.seed = num_classes, ignore_index, seed
        self.grad_clip, self.scheduler_interval, self.progress = grad_clip, scheduler_interval, progress
        self.loss_fn = loss_fn or functools.partial(segmentation_loss, ignore_index=ignore_index)
        self.input_transform, self.logger = input_transform, logger
        self.callbacks = list(callbacks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume = resume

        self.world_size, self.rank = _dist.init_distributed()
        self.is_main = self.rank == 0
        self.device = self._resolve_device(device)
        self._place_and_wrap(model, ddp_kwargs)
        self.optimizer = optimizer
        self._setup_amp(amp, amp_dtype)
        self.train_loader = _dist.prepare_train_loader(train_loader, batch_size, seed)
        self.eval_loader = _dist.prepare_eval_loader(eval_loader, batch_size)
        self.eval_fn = eval_fn
        try:
            self.steps_per_epoch: Optional[int] = len(self.train_loader)
        except TypeError:
            self.steps_per_epoch = None
        self.attack = self._build_attack(attack)
        self.scheduler = self._resolve_scheduler(scheduler)

        self.epoch = 0  # the epoch in progress (0-based), or the next one between epochs
        self.step_in_epoch = 0  # optimizer steps done in the current epoch
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self._acc = self._fresh_accumulators()
        self._pending_rank_state: Optional[dict[str, Any]] = None
        self._checked_attack = False

    # -- set-up helpers ---------------------------------------------------

    def _place_and_wrap(self, model: nn.Module, ddp_kwargs: Optional[Mapping[str, Any]]) -> None:
        """Move the bare module to the device; under ``torch.distributed`` wrap it in DDP (buffers synced by us)."""
        self.module = model.module if isinstance(model, DistributedDataParallel) else model
        self.module.to(self.device)
        self.model: nn.Module = model
        ddp_kwargs = dict(ddp_kwargs or {})
        sync_requested = [ddp_kwargs.pop(k, None) for k in ("forward_sync_buffers", "broadcast_buffers")]
        if isinstance(model, DistributedDataParallel):
            self._sync_buffers = bool(model.broadcast_buffers)
        else:
            self._sync_buffers = self.world_size > 1 and all(v is None or bool(v) for v in sync_requested)
        if self.world_size > 1 and not isinstance(model, DistributedDataParallel):
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            # The trainer broadcasts buffers after each step itself (see _train_step); DDP's own
            # pre-forward broadcast would only repeat it.
            new_api = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
            ddp_kwargs["forward_sync_buffers" if new_api else "broadcast_buffers"] = False
            self.model = DistributedDataParallel(self.module, device_ids=device_ids, **ddp_kwargs)
            if self._sync_buffers:
                _dist.broadcast_buffers(self.module)

    def _setup_amp(self, amp: bool, amp_dtype: torch.dtype) -> None:
        """Autocast on CUDA only (a warning elsewhere); a loss scaler for float16."""
        self.amp = bool(amp) and self.device.type == "cuda"
        if amp and not self.amp:
            warnings.warn(
                f"amp=True is ignored on {self.device}: autocast and GradScaler run on CUDA only; training in float32",
                stacklevel=3,
            )
        self.amp_dtype = amp_dtype
        use_scaler = self.amp and amp_dtype == torch.float16
        if hasattr(torch.amp, "GradScaler"):
            self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        else:  # torch < 2.3
            self.scaler = torch.cuda.amp.GradScaler(enabled=use_scaler)

    def _build_attack(self, attack: Any) -> Any:
        """The attack itself, or the one a factory builds on the bare, placed module."""
        built = attack(self.module) if attack is not None and _is_attack_factory(attack) else attack
        if attack is not None and not callable(built):
            raise TypeError(f"the attack factory returned {type(built).__name__}, which is not callable")
        if isinstance(getattr(built, "model", None), DistributedDataParallel):
            warnings.warn(
                "the attack is bound to the DistributedDataParallel wrapper: every attack step then broadcasts "
                "buffers across ranks; build it on the bare module (pass a factory) instead",
                stacklevel=3,
            )
        return built

    def _resolve_device(self, device: Union[torch.device, str, None]) -> torch.device:
        if device is not None:
            return torch.device(device)
        if torch.cuda.is_available():
            return torch.device("cuda", _dist.local_rank()) if self.world_size > 1 else torch.device("cuda")
        return torch.device("cpu")

    def _resolve_scheduler(self, scheduler: Any) -> Optional[LRScheduler]:
        if scheduler is None or isinstance(scheduler, LRScheduler):
            return scheduler
        if not callable(scheduler):
            raise TypeError(
                f"scheduler must be an LRScheduler, a factory(optimizer, total_steps) or None, got {type(scheduler).__name__}"
            )
        if self.scheduler_interval == "step" and self.steps_per_epoch is None:
            raise ValueError("a scheduler factory with scheduler_interval='step' needs a train_loader with a length")
        total = self.epochs * (self.steps_per_epoch if self.scheduler_interval == "step" else 1)
        built = scheduler(self.optimizer, total)
        if not isinstance(built, LRScheduler):
            raise TypeError(f"the scheduler factory returned {type(built).__name__}, not an LRScheduler")
        return built

    @property
    def checkpoint_path(self) -> Optional[Path]:
        """``checkpoint_dir / "last.pt"``, or ``None`` without a checkpoint directory."""
        return self.checkpoint_dir / self.checkpoint_name if self.checkpoint_dir is not None else None

    def _fresh_accumulators(self) -> dict[str, Any]:
        return {"loss_sum": 0.0, "count": 0, "terms": {}, "matrix": None, "time": 0.0, "lr": float("nan")}

    # -- the loop ---------------------------------------------------------

    def fit(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are done (resuming first when asked); return the history.

        Each history entry: ``epoch`` (0-based), ``global_step``, ``loss`` (mean
        over the epoch's samples, reduced over ranks) and any extra loss terms,
        ``train_miou`` / ``train_pixel_accuracy`` (on the samples trained on,
        adversarial ones included), ``lr`` (of the epoch's last step, first
        parameter group), ``time`` (seconds, training and evaluation), and
        ``eval_*`` metrics on evaluated epochs.
        """
        if self.resume:
            checkpoint.resume_trainer(self, self.resume, self.checkpoint_path)
        with model_mode_preserved(self.model):
            self.model.train()
            self._call("on_fit_start")
            for epoch in range(self.epoch, self.epochs):
                self._run_epoch(epoch)
            self._call("on_fit_end", self.history)
        return self.history

    def _run_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        seed = checkpoint.epoch_seed(self.seed, epoch, self.rank)
        checkpoint.seed_all(seed)
        _dist.set_loader_epoch(self.train_loader, epoch, seed)
        if self._pending_rank_state is None:
            self._acc = self._fresh_accumulators()
            self.step_in_epoch = 0
        self._call("on_epoch_start", epoch)
        started = time.perf_counter()
        batches = iter(self.train_loader)
        if self._pending_rank_state is not None:
            # Replaying (not index-skipping) the seen batches keeps loader
            # workers' random streams where the killed run left them.
            for seen in range(self.step_in_epoch):
                if next(batches, _END) is _END:
                    raise ValueError(
                        f"resume: the train loader ran out after {seen} batches, but the checkpoint was "
                        f"written after {self.step_in_epoch} batches of epoch {epoch}; is it the same data?"
                    )
            self._acc = dict(self._pending_rank_state["acc"])
            checkpoint.restore_rng(self._pending_rank_state["rng"], self.device)
            self._pending_rank_state = None
        bar = self._progress_bar(epoch)
        for raw in batches:
            info = self._train_step(raw)
            self.step_in_epoch += 1
            self.global_step += 1
            info.update(epoch=epoch, step=self.step_in_epoch, global_step=self.global_step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    loss=f"{self._acc['loss_sum'] / max(self._acc['count'], 1):.4f}", miou=f"{self._running_miou():.3f}"
                )
            last_of_epoch = self.step_in_epoch == self.steps_per_epoch
            if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 and not last_of_epoch:
                self._acc["time"] += time.perf_counter() - started
                started = time.perf_counter()
                self.save_checkpoint()
            if self.log_every and self.global_step % self.log_every == 0 and self.is_main and self.logger:
                self.logger(dict(info))
            self._call("on_step_end", info)
        if bar is not None:
            bar.close()
        if self.scheduler is not None and self.scheduler_interval == "epoch":
            self.scheduler.step()
        record = self._epoch_record(epoch)
        if self.eval_loader is not None and ((epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs):
            metrics = self.run_eval()
            record.update({f"eval_{key}": value for key, value in metrics.items()})
        record["time"] = self._acc["time"] + time.perf_counter() - started
        self.history.append(record)
        self.epoch, self.step_in_epoch = epoch + 1, 0
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        if self.is_main and self.logger:
            self.logger(dict(record))
        self._call("on_epoch_end", record)

    def _train_step(self, raw: Any) -> dict[str, Any]:
        batch = as_batch(raw, self.device)
        images, masks = batch["image"], batch["mask"]
        inputs = images
        if self.input_transform is not None:
            with torch.no_grad():  # a data augmentation: nothing to learn through it
                inputs = self.input_transform(images)
        if not isinstance(inputs, torch.Tensor) or inputs.shape != images.shape:
            raise ValueError(
                f"input_transform must return a tensor shaped like its input {tuple(images.shape)}, got "
                f"{tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__}"
            )
        n = inputs.shape[0]
        n_adv = math.floor(self.adv_fraction * n + 0.5) if self.attack is not None else 0
        train_inputs = inputs
        if n_adv > 0:
            adv = self._attack(inputs[:n_adv], masks[:n_adv])
            train_inputs = adv if n_adv == n else torch.cat([adv, inputs[n_adv:]])
        adversarial = torch.arange(n, device=self.device) < n_adv
        batch.update(input=train_inputs, clean_input=inputs, adversarial=adversarial)
        with_clean = self.clean_loss_weight > 0 and n_adv > 0

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            outputs = self.model(torch.cat([train_inputs, inputs.detach()]) if with_clean else train_inputs)
            if with_clean:
                outputs, clean_outputs = split_batch_output(outputs, n)
            terms = self._loss_terms(outputs, batch)
            loss = terms["loss"]
            if with_clean:
                clean_batch = {**batch, "input": inputs, "adversarial": torch.zeros_like(adversarial)}
                clean_loss = self._loss_terms(clean_outputs, clean_batch)["loss"]
                terms["clean_loss"] = clean_loss
                loss = loss + self.clean_loss_weight * clean_loss
                terms["loss"] = loss
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        if self._sync_buffers:
            # The next attack runs on the bare module, before any DDP forward: it must see the
            # same BatchNorm statistics on every rank, or ranks (and resumed runs) drift apart.
            _dist.broadcast_buffers(self.module)

        values = {key: float(value.detach()) for key, value in terms.items()}
        acc = self._acc
        acc["loss_sum"] += values["loss"] * n
        acc["count"] += n
        acc["lr"] = lr
        for key, value in values.items():
            if key != "loss":
                acc["terms"][key] = acc["terms"].get(key, 0.0) + value * n
        self._update_train_matrix(outputs, masks)
        return {**values, "lr": lr}

    def _attack(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        adv = self.attack(images, masks)
        if not self._checked_attack:
            if not isinstance(adv, torch.Tensor) or adv.shape != images.shape:
                got = tuple(adv.shape) if isinstance(adv, torch.Tensor) else type(adv).__name__
                raise ValueError(
                    f"attack(images, masks) must return adversarial images shaped {tuple(images.shape)}, got {got}"
                )
            self._checked_attack = True
        return adv.detach().to(images.dtype)

    def _loss_terms(self, outputs: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        result = self.loss_fn(outputs, batch)
        terms = dict(result) if isinstance(result, Mapping) else {"loss": result}
        loss = terms.get("loss")
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss_fn must return a scalar tensor or a dict whose 'loss' is one")
        terms["loss"] = loss.reshape(())
        return terms

    def _update_train_matrix(self, outputs: Any, masks: torch.Tensor) -> None:
        try:
            logits = segmentation_logits(outputs)
        except (TypeError, ValueError):
            return
        if logits.shape[0] != masks.shape[0] or logits.shape[2:] != masks.shape[1:]:
            return
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        if self._acc["matrix"] is None:
            self._acc["matrix"] = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self.device)
        matrix = ConfusionMatrix(self.num_classes, self.ignore_index, self.device)
        matrix.update(logits.detach(), masks)
        self._acc["matrix"] = self._acc["matrix"].to(self.device) + matrix.matrix

    def _running_miou(self) -> float:
        matrix = self._acc["matrix"]
        if matrix is None:
            return float("nan")
        cm = ConfusionMatrix(self.num_classes, self.ignore_index, matrix.device)
        cm.matrix = matrix
        return cm.compute().miou

    def _epoch_record(self, epoch: int) -> dict[str, Any]:
        acc = self._acc
        keys = sorted(acc["terms"])
        sums = torch.tensor(
            [acc["loss_sum"], acc["count"], *(acc["terms"][k] for k in keys)], dtype=torch.float64, device=self.device
        )
        sums = _dist.all_reduce_sum(sums).tolist()
        count = max(sums[1], 1.0)
        record: dict[str, Any] = {"epoch": epoch, "global_step": self.global_step, "loss": sums[0] / count}
        record.update({key: value / count for key, value in zip(keys, sums[2:])})
        if self.num_classes is not None:
            # Every rank takes part in the reduction, even one without a matrix yet.
            cm = ConfusionMatrix(self.num_classes, self.ignore_index, self.device)
            if acc["matrix"] is not None:
                cm.matrix = acc["matrix"].to(self.device).clone()
            scores = cm.all_reduce().compute()
            record.update(train_miou=scores.miou, train_pixel_accuracy=scores.pixel_accuracy)
        record["lr"] = acc["lr"]
        return record

    def run_eval(self) -> dict[str, float]:
        """Evaluate with ``eval_fn`` (default [`evaluate`][segrobust.training.evaluate]) on ``eval_loader``; same result on every rank."""
        if self.eval_loader is None:
            raise ValueError("no eval_loader was given")
        if self.eval_fn is not None:
            return dict(self.eval_fn(self.module, self.eval_loader))
        return evaluate(
            self.module,
            self.eval_loader,
            num_classes=self.num_classes,
            ignore_index=self.ignore_index,
            device=self.device,
        )

    def _progress_bar(self, epoch: int) -> Any:
        if not (self.progress and self.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.steps_per_epoch, initial=self.step_in_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False
        )

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    # -- checkpoints -----------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs; every rank must call it (it gathers per-rank RNG states)."""
        return checkpoint.trainer_state(self)

    def save_checkpoint(self, path: Union[str, os.PathLike, None] = None) -> Optional[Path]:
        """Write [`state_dict`][segrobust.training.AdversarialTrainer.state_dict] atomically; returns the path on rank 0.

        Only rank 0 writes, but every rank must call it.
        """
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("no checkpoint path: give checkpoint_dir to the trainer or a path here")
        return checkpoint.save_trainer_checkpoint(self, path)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a [`state_dict`][segrobust.training.AdversarialTrainer.state_dict] (model, optimizer, scheduler, scaler, counters, history, RNG)."""
        checkpoint.restore_trainer(self, state)
