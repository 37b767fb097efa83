"""The attack engine: the base class of every attack and the plumbing they share.

[`SegAttack`][segrobust.attacks.SegAttack] turns a model and a batch into
checked inputs, runs the model's forward in the right dtype (and under
``amp``), checks every step's logits and gradient for NaN, handles targeted
modes, normalisation and the model's train/eval flags, and converts the result
back. [`IterateTracker`][segrobust.attacks.engine.IterateTracker] keeps the best
iterate per image from logits already computed, and
[`SafeAttributeMixin`][segrobust.attacks.engine.SafeAttributeMixin] lets
setters reach the attacks an attack holds. Users write attacks with these;
they import the attacks themselves from ``segrobust.attacks``.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from segrobust.attacks import functional as AF
from segrobust.attacks.attack_api import TORCHATTACKS_AVAILABLE, AttackBase, MultiAttackBase
from segrobust.metrics.functional import (
    confusion_pixel_accuracy,
    per_image_confusion_unchecked,
)
from segrobust.utils import model_mode_preserved, predicted_classes, segmentation_logits
from segrobust.validation import (
    check_amp,
    check_bool,
    check_choice,
    check_class_ids,
    check_images,
    check_int,
    check_masks,
    check_steps,
    check_unit_interval,
)

__all__ = [
    "NONFINITE_POLICIES",
    "AttackStats",
    "IterateTracker",
    "NonFiniteGradientError",
    "NonFiniteLogitsError",
    "SafeAttributeMixin",
    "SegAttack",
]

#: What an attack does when a gradient holds NaN or Inf: raise (default) or warn and mark the stats.
NONFINITE_POLICIES = ("raise", "warn")


class NonFiniteGradientError(FloatingPointError):
    """An attack met a NaN or infinite gradient: its result would not measure robustness.

    ``sign(NaN) == 0``, so such a step silently stays where it is and a broken
    model (NaN logits, an overflow in half precision) would look robust.
    """


class NonFiniteLogitsError(NonFiniteGradientError):
    """The model returned NaN or infinite logits during an attack (a [NonFiniteGradientError][segrobust.attacks.NonFiniteGradientError]).

    A NaN logit at one pixel can leave the input gradient finite (the pixel's
    loss is NaN, not its gradient), so the attack checks the logits of every
    pass as well: a broken model must not report a plausible accuracy.
    """


@dataclass
class AttackStats:
    """What an attack saw at each iterate, for plots and diagnostics.

    Row ``t`` describes iterate ``x_t`` (row 0 is the start point, the last row
    the final iterate). ``loss`` is the mean cross-entropy over valid pixels
    w.r.t. the reference labels (true labels, or target labels when targeted);
    ``pixel_accuracy`` is the fraction of valid pixels predicted as those labels.
    ``best_step`` is the iterate returned for each image.
    ``nonfinite_gradient`` is True for an image whose gradient or logits held
    NaN or Inf at some step (only possible with ``nonfinite="warn"``): its result is not
    a robustness measurement. ``confusion`` holds the per-image confusion
    matrix of each returned image w.r.t. the reference labels, from the logits
    that scored it during the attack (no extra forward pass is needed to score
    the result).
    """

    loss: torch.Tensor  # (steps + 1, N)
    pixel_accuracy: torch.Tensor  # (steps + 1, N)
    best_step: torch.Tensor  # (N,)
    nonfinite_gradient: Optional[torch.Tensor] = None  # (N,) bool
    confusion: Optional[torch.Tensor] = None  # (N, K, K) int64

    def batch_means(self) -> dict[str, list[float]]:
        """Per-step batch means, ready for ``plt.plot``."""
        return {
            "loss": self.loss.mean(dim=1).tolist(),
            "pixel_accuracy": self.pixel_accuracy.mean(dim=1).tolist(),
        }


def _model_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the model's first floating parameter (``default`` for a model without any)."""
    for parameter in model.parameters():
        if parameter.dtype.is_floating_point:
            return parameter.dtype
    return default


class IterateTracker:
    """Keeps, per image, the best iterate seen so far, from logits already computed.

    "Best" means lowest pixel accuracy w.r.t. the reference labels for an attack
    ascending the loss (``direction=+1``), highest for one descending it
    (``direction=-1``: AMA, targeted attacks); ties go to the iterate with the
    more extreme loss, so a saturated attack still returns its strongest point.
    """

    def __init__(self, start: torch.Tensor, labels: torch.Tensor, ignore_index: int, direction: int, steps: int):
        n = start.shape[0]
        self.labels = labels
        self.ignore_index = ignore_index
        self.direction = direction
        self.best = start.detach().clone()
        self._best_acc_key = torch.full((n,), float("inf"), device=start.device)
        self._best_loss_key = torch.full((n,), float("inf"), device=start.device)
        self.best_step = torch.zeros(n, dtype=torch.long, device=start.device)
        self.loss = torch.zeros(steps + 1, n, device=start.device)
        self.pixel_accuracy = torch.zeros(steps + 1, n, device=start.device)
        self.nonfinite_gradient = torch.zeros(n, dtype=torch.bool, device=start.device)
        self.best_confusion: Optional[torch.Tensor] = None  # (N, K, K), from the first update on

    def update(self, iterate: torch.Tensor, logits: torch.Tensor, pixel_loss: torch.Tensor, index: int) -> None:
        valid = AF.valid_mask(self.labels, self.ignore_index)
        loss = AF.masked_mean(pixel_loss.detach().float(), valid, per_image=True)
        prediction = predicted_classes(logits.detach())
        confusion = per_image_confusion_unchecked(prediction, self.labels, logits.shape[1], self.ignore_index)
        acc = confusion_pixel_accuracy(confusion)
        self.loss[index] = loss
        self.pixel_accuracy[index] = acc
        acc_key, loss_key = self.direction * acc, -self.direction * loss
        better = (acc_key < self._best_acc_key) | ((acc_key == self._best_acc_key) & (loss_key < self._best_loss_key))
        self._best_acc_key = torch.where(better, acc_key, self._best_acc_key)
        self._best_loss_key = torch.where(better, loss_key, self._best_loss_key)
        self.best_step = torch.where(better, torch.full_like(self.best_step, index), self.best_step)
        self.best = torch.where(better.view(-1, *([1] * (iterate.dim() - 1))), iterate.detach(), self.best)
        kept = confusion if self.best_confusion is None else self.best_confusion
        self.best_confusion = torch.where(better.view(-1, 1, 1), confusion, kept)

    def stats(self) -> AttackStats:
        return AttackStats(
            self.loss, self.pixel_accuracy, self.best_step, self.nonfinite_gradient, confusion=self.best_confusion
        )


def _nested_attacks(value: Any, seen: set[int]) -> list[Any]:
    """Attacks held by ``value`` (itself, or inside lists, tuples and dicts), by identity."""
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, AttackBase):
        return [value]
    if isinstance(value, dict):
        value = list(value.keys()) + list(value.values())
    if isinstance(value, (list, tuple)):
        return [atk for item in value for atk in _nested_attacks(item, seen)]
    return []


class SafeAttributeMixin:
    """Registers sub-attacks for setter forwarding without torchattacks' scan of every value.

    torchattacks' ``Attack.__setattr__`` compares each new attribute value with
    ``in`` against a list that persists across calls (a mutable default): it
    grows forever and raises on tensors ("Boolean value of Tensor ... is
    ambiguous"). This version looks for attacks by identity only.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        registry = self.__dict__.get("_attacks")
        if registry is None:
            return
        for number, attack in enumerate(_nested_attacks(value, set())):
            if attack is self:
                continue
            registry[f"{name}.{number}"] = attack
            for sub_name, sub_attack in attack.__dict__.get("_attacks", {}).items():
                registry[f"{name}.{sub_name}"] = sub_attack


class SegAttack(SafeAttributeMixin, AttackBase):
    """Base class of every segmentation attack in segrobust (a ``torchattacks.Attack`` when installed).

    With torchattacks importable, every segrobust attack is a
    ``torchattacks.attack.Attack``; without it, the same API comes from
    [StandaloneAttack][segrobust.attacks.attack_api.StandaloneAttack].

    It fixes what stock torchattacks gets wrong for segmentation: logits are
    ``(N, K, H, W)`` (tuple outputs of smp ``aux_params`` models and
    ``{"out": ...}`` dicts are reduced to them), labels are masks ``(N, H, W)``
    with ``ignore_index`` pixels that add nothing to any loss, targeted modes
    work per pixel, inputs are validated with clear errors, the model's
    per-module train/eval flags are restored exactly, and the best iterate per
    image is returned rather than the last one.

    Subclasses implement `_attack_batch`, get logits from `_logits` and
    pass every step's logits and gradients through `_check_finite`.

    The attack works inside ``torch.no_grad()`` and ``torch.inference_mode()``.
    **Precision.** The iterate, the step and the projection stay in the
    images' dtype (float32 arithmetic for float16/bfloat16 images); only the
    model's forward casts its input to the dtype of the model's parameters,
    and its logits are scored in float32 (or float64). So any model dtype
    works with any image dtype, and the ε promise holds exactly in the
    returned dtype: ``(x_adv.double() - x.double()).abs().max() <= eps`` and
    ``0 <= x_adv <= 1`` (see [linf_bounds][segrobust.attacks.functional.linf_bounds]).

    A NaN or infinite gradient or logit raises
    [NonFiniteGradientError][segrobust.attacks.NonFiniteGradientError] (for logits its subclass
    [NonFiniteLogitsError][segrobust.attacks.NonFiniteLogitsError]) naming
    the attack and the step; with ``nonfinite="warn"`` it warns instead and
    marks the images in ``AttackStats.nonfinite_gradient``. The check reads
    the logits and gradient the step already computed, with one host sync per step.

    ``amp`` (``None``, ``torch.bfloat16``, ``torch.float16`` or ``"bf16"``,
    ``"fp16"``, ``"bfloat16"``, ``"float16"``) runs the model's forward under
    ``torch.autocast`` of that dtype; the loss, the step and the projection
    stay in float32 (the images' dtype), so the ε promise still holds exactly.

    Call: ``attack(images, masks=None, *, return_stats=False)`` with images
    ``(N, C, H, W)`` float in ``[0, 1]`` (or normalised, after
    ``set_normalization_used``) and masks ``(N, H, W)`` integer; ``masks=None``
    attacks the model's own prediction on the clean images. Returns adversarial
    images of the same shape, dtype and device (and an [`AttackStats`][segrobust.attacks.AttackStats]
    with ``return_stats=True``).
    """

    _loss_sign = 1  # +1: ascend the loss on the reference labels; -1: descend it
    _eps_may_be_zero = False  # True for attacks whose pixel budget is optional (RainAttack)
    _returns_eps_ball = True  # the result lies in the eps ball around the images (not RainAttack)

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: Optional[float],
        steps: int,
        random_start: bool = True,
        ignore_index: int = 255,
        nonfinite: str = "raise",
        amp: Union[str, torch.dtype, None] = None,
    ):
        """The shared arguments, checked; called by subclasses, whose own signature is the public one."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.nonfinite = check_choice(nonfinite, NONFINITE_POLICIES, "nonfinite")
        self.amp = check_amp(amp, "amp")
        super().__init__(type(self).__name__, model)
        self.steps = check_steps(steps, "steps")
        self.eps = check_unit_interval(eps, "eps", allow_zero=self._eps_may_be_zero)
        self.alpha = None if alpha is None else check_unit_interval(alpha, "alpha")  # subclasses set the default
        self.random_start = check_bool(random_start, "random_start")
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.supported_mode = ["default", "targeted"]
        self._pending_checks: list[tuple[str, torch.Tensor]] = []

    # ------------------------------------------------------------------ calling
    def __call__(
        self, images: torch.Tensor, labels: Optional[torch.Tensor] = None, *, return_stats: bool = False
    ) -> Union[torch.Tensor, tuple[torch.Tensor, AttackStats]]:
        self._refuse_stock_multiattack(sys._getframe(1))
        adv, stats = self._call(images, labels, {})
        return (adv, stats) if return_stats else adv

    def _call(
        self, images: torch.Tensor, labels: Optional[torch.Tensor], options: dict[str, Any]
    ) -> tuple[torch.Tensor, AttackStats]:
        """The call's stages: check, move and convert the inputs, attack, convert back.

        ``options`` are keyword arguments of this call for `_attack_batch`
        (per-call state stays local, so an attack may be called re-entrantly).
        """
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
        normalised = self._normalization_applied is True
        # The steps need autograd even when the caller evaluates under no_grad or inference_mode;
        # inputs are copied into ordinary tensors so that autograd may save them.
        with torch.inference_mode(False), torch.enable_grad(), model_mode_preserved(self.model):
            self._change_model_mode(self.model.training)
            pixels = self.inverse_normalize(images) if normalised and images.dim() == 4 else images
            check_images(pixels, "images")
            if labels is not None:
                check_masks(labels, images, "masks")
            device = self.device if self.device is not None else images.device
            # contiguous: results must not depend on the caller's memory layout
            given = pixels.detach().to(device=device).clamp(0, 1).contiguous()
            x = given.to(self._work_dtype(images.dtype))
            y = labels.detach().to(device).clone() if labels is not None else None
            if normalised:
                self._set_normalization_applied(False)
            try:
                adv, stats = self._attack_with_targets(x, y, options)
            finally:
                self._pending_checks = []
                if normalised:
                    self._set_normalization_applied(True)
            if x.dtype != given.dtype and self._returns_eps_ball:
                adv = AF.cast_into_ball(adv, given, self.eps)  # rounding must not leave the ball
            if normalised:
                adv = self.normalize(adv)
        return adv.to(device=images.device, dtype=images.dtype), stats

    @staticmethod
    def _refuse_stock_multiattack(caller: Any) -> None:
        """Stop ``torchattacks.MultiAttack`` (the ``caller`` frame's ``self``) before it compares
        masks with one label per image and fails deep inside with a shape error."""
        if not TORCHATTACKS_AVAILABLE:
            return
        owner = caller.f_locals.get("self")
        if isinstance(owner, MultiAttackBase) and not getattr(owner, "handles_masks", False):
            raise TypeError(
                "torchattacks.MultiAttack judges success by one class label per image and cannot combine "
                "segmentation attacks; use segrobust.attacks.SegMultiAttack (per-image worst case by pixel accuracy)"
            )

    @staticmethod
    def _work_dtype(images_dtype: torch.dtype) -> torch.dtype:
        """The dtype of the iterate: the images' own, float32 for float16/bfloat16 images."""
        return torch.float32 if images_dtype in (torch.float16, torch.bfloat16) else images_dtype

    def _check_finite(
        self,
        where: str,
        tracker: Optional[IterateTracker],
        logits: torch.Tensor,
        grads: Sequence[Optional[torch.Tensor]] = (),
    ) -> None:
        """Raise (or warn and mark ``tracker``) when the logits or a per-image gradient ``(N, ...)`` hold NaN or Inf.

        One ``isfinite`` per tensor the step already has and one host sync per step.
        """
        logits_ok = torch.isfinite(logits.detach()).reshape(logits.shape[0], -1).all(dim=1)
        finite = logits_ok
        for grad in grads:
            if grad is not None:
                finite = finite & torch.isfinite(grad).reshape(grad.shape[0], -1).all(dim=1)
        if bool(finite.all()):
            return
        bad_logits = not bool(logits_ok.all())
        images = (~(logits_ok if bad_logits else finite)).nonzero().flatten().tolist()
        what, error = ("logits", NonFiniteLogitsError) if bad_logits else ("gradient", NonFiniteGradientError)
        message = (
            f"{self.attack}: the {what} {where} {'are' if bad_logits else 'is'} NaN or infinite for images "
            f"{images[:8]} ({'a broken model or weights' if bad_logits else 'NaN logits or an overflow in the model'}?); "
            "its result would not measure robustness"
        )
        if self.nonfinite == "raise":
            raise error(message + " (nonfinite='warn' warns and marks AttackStats.nonfinite_gradient)")
        warnings.warn(message + "; marked in AttackStats.nonfinite_gradient", RuntimeWarning, stacklevel=3)
        if tracker is not None:
            tracker.nonfinite_gradient |= ~finite

    def _at(self, step: int) -> str:
        """Where a check happens, for messages: ``"at step 3 of 10"``."""
        return f"at step {step} of {self.steps}"

    def _input_gradients(
        self, objective: torch.Tensor, inputs: Sequence[torch.Tensor], allow_unused: bool = False
    ) -> tuple[Optional[torch.Tensor], ...]:
        """``torch.autograd.grad(objective, inputs)`` with a clear error for a model that blocks the gradient."""
        if objective.requires_grad:
            grads = torch.autograd.grad(objective, list(inputs), allow_unused=True)
            used = [grad is not None for grad in grads]
            if all(used) or (allow_unused and any(used)):  # allow_unused: some inputs may not matter
                return grads
        raise ValueError(
            f"{self.attack}: the model's output has no gradient with respect to the input images (a model that "
            "detaches its input, runs under torch.no_grad(), or ends in a non-differentiable step such as argmax "
            "or rounding); a white-box attack needs the gradient of the logits w.r.t. the images"
        )

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """torchattacks entry point: images already in ``[0, 1]`` on the attack's device."""
        return self._attack_with_targets(images, labels, {})[0]

    def _attack_with_targets(
        self, images: torch.Tensor, labels: Optional[torch.Tensor], options: dict[str, Any]
    ) -> tuple[torch.Tensor, AttackStats]:
        if labels is None:
            with torch.no_grad():
                clean = self._logits(images)
            self._check_finite("of the clean images (masks=None)", None, clean)
            labels = predicted_classes(clean)
        elif not (self.targeted and self.attack_mode == "targeted(label)"):
            self._pending_checks.append(("masks", labels))
        if self.targeted:
            if self.attack_mode == "targeted(label)":
                self._pending_checks.append(("target masks", labels))
                reference = labels
            else:
                reference = self.get_target_label(images, labels)
                check_masks(reference, images, "target masks")
                self._pending_checks.append(("target masks", reference))
        else:
            reference = labels
        direction = self._loss_sign * (-1 if self.targeted else 1)
        return self._attack_batch(images, reference.long(), direction, **options)

    def _attack_batch(
        self, images: torch.Tensor, labels: torch.Tensor, direction: int, **options: Any
    ) -> tuple[torch.Tensor, AttackStats]:
        """Attack a checked batch in ``[0, 1]``; ``direction`` is +1 to ascend the loss on ``labels``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ model
    def get_logits(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None, *args: Any, **kwargs: Any) -> Any:
        """The model's raw output on ``inputs`` (normalised first when asked), cast to the model's dtype."""
        if self._normalization_applied is False:
            inputs = self.normalize(inputs)
        inputs = inputs.to(_model_dtype(self.model, inputs.dtype))
        if self.amp is None:
            return self.model(inputs)
        with torch.autocast(device_type=inputs.device.type, dtype=self.amp):
            return self.model(inputs)

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        """Segmentation logits of the model, in float32 or wider; validates pending masks against them once."""
        logits = segmentation_logits(self.get_logits(images))
        if not logits.dtype.is_floating_point:
            raise TypeError(
                f"{self.attack}: the model returned logits of dtype {logits.dtype}; expected floating-point "
                "scores (N, K, H, W) (class ids or rounded scores have no gradient to attack)"
            )
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()  # losses and statistics in float32; the gradient flows back in the model's dtype
        if self._pending_checks:
            checks, self._pending_checks = self._pending_checks, []
            for name, masks in checks:
                if logits.shape[0] != masks.shape[0] or logits.shape[2:] != masks.shape[1:]:
                    raise ValueError(
                        f"model output {tuple(logits.shape)} does not match {name} {tuple(masks.shape)}: "
                        "expected logits (N, K, H, W) at the masks' resolution (upsample inside the model)"
                    )
                check_class_ids(masks, logits.shape[1], self.ignore_index, name)
        return logits

    # ------------------------------------------------------------------ targets
    def _clean_logits_and_labels(
        self, images: torch.Tensor, labels: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self._logits(images)
        if labels is None:
            labels = predicted_classes(logits)
        return logits, labels

    @torch.no_grad()
    def get_random_target_label(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A random class per pixel, never the true one; ignored pixels stay ignored."""
        logits, labels = self._clean_logits_and_labels(inputs, labels)
        num_classes = logits.shape[1]
        if num_classes < 2:
            raise ValueError("a random targeted attack needs a model with at least 2 classes")
        valid = labels != self.ignore_index
        offset = torch.randint(1, num_classes, labels.shape, device=labels.device)
        target = (labels.clamp(0, num_classes - 1) + offset) % num_classes
        return torch.where(valid, target, labels).long()

    @torch.no_grad()
    def get_least_likely_label(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The class with the ``kth_min``-smallest logit per pixel, never the true one."""
        logits, labels = self._clean_logits_and_labels(inputs, labels)
        num_classes = logits.shape[1]
        if not 1 <= self._kth_min < num_classes:
            raise ValueError(
                f"kth_min must be in [1, {num_classes - 1}] for {num_classes} classes, got {self._kth_min}"
            )
        valid = labels != self.ignore_index
        safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
        excluded = logits.float().scatter(1, safe.unsqueeze(1), float("inf"))
        target = excluded.kthvalue(self._kth_min, dim=1).indices
        return torch.where(valid, target, labels).long()

    def get_target_label(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.attack_mode == "targeted(custom)" and self._target_map_function is None:
            return labels
        if self.attack_mode == "targeted(custom)":
            target = self._target_map_function(inputs, labels)
            if not isinstance(target, torch.Tensor):
                raise TypeError(
                    f"the target map function must return a mask tensor (N, H, W), got {type(target).__name__}"
                )
            return target.to(inputs.device).long()
        return super().get_target_label(inputs, labels)
