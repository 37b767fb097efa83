"""Pixel losses shared by every layer: attacks, training, depth multi-task and ART.

Conventions: ``logits`` ``(N, K, H, W)``; ``labels`` ``(N, H, W)`` integer with
``ignore_index`` on void pixels. Per-pixel losses are ``(N, H, W)`` and exactly
zero on ignored pixels. A "mean" is over valid pixels only, and a batch with no
valid pixel gives 0 (and a zero gradient), never NaN.

Pixel losses an attack can ascend are registered by name in
[PIXEL_LOSSES][segrobust.losses.PIXEL_LOSSES]; each entry is a
[PixelLoss][segrobust.losses.PixelLoss] class whose instances are called as
``loss(logits, labels, valid, step, steps) -> (N, H, W)``. An attack creates a
fresh instance per call, so a loss may carry state across the steps of one
call (EroSeg's attacked set) and never across calls.

This module sits at the bottom of the package: it imports only torch and
[segrobust.validation][] (which imports only torch); kornia is imported inside
[dilate_mask][segrobust.losses.dilate_mask].
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar, Optional, Union

import torch
import torch.nn.functional as F

from segrobust.validation import check_class_ids

__all__ = [
    "PIXEL_LOSSES",
    "BalancedMaskedCELoss",
    "CELoss",
    "CosPGDLoss",
    "EroSegLoss",
    "JSLoss",
    "MaskedCELoss",
    "MaskedSphericalLoss",
    "PixelLoss",
    "SegPGDLoss",
    "balanced_class_weights",
    "cospgd_weights",
    "dilate_mask",
    "erosion_quantile",
    "js_divergence",
    "lowest_fraction_mask",
    "make_pixel_loss",
    "masked_cross_entropy",
    "masked_mean",
    "pixel_confidence",
    "pixel_cross_entropy",
    "segpgd_weights",
    "spherical_score",
    "success_mask",
    "valid_mask",
    "weighted_pixel_loss",
]


def valid_mask(labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Boolean ``(N, H, W)``: pixels whose label counts."""
    return labels != ignore_index


def pixel_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Per-pixel cross-entropy ``(N, H, W)``, zero on ignored pixels.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 2)
        >>> pixel_cross_entropy(logits, torch.tensor([[[0, 255]]]))
        tensor([[[0.6931, 0.0000]]])
    """
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index, reduction="none")


def masked_mean(values: torch.Tensor, valid: torch.Tensor, per_image: bool = False) -> torch.Tensor:
    """Mean of ``values`` over ``valid`` pixels (all images, or each image with ``per_image``).

    Zero where there is no valid pixel, so gradients stay finite.

    Examples:
        >>> import torch
        >>> masked_mean(torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[True, False]]]))
        tensor(1.)
        >>> masked_mean(torch.ones(1, 1, 2), torch.zeros(1, 1, 2, dtype=torch.bool))
        tensor(0.)
    """
    weights = valid.to(values.dtype)
    if per_image:
        return (values * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1)
    return (values * weights).sum() / weights.sum().clamp_min(1)


def weighted_pixel_loss(
    pixel_loss: torch.Tensor,
    weights: Optional[torch.Tensor],
    valid: torch.Tensor,
) -> torch.Tensor:
    """``mean over valid pixels of weights · pixel_loss`` (``weights=None`` means 1)."""
    if weights is not None:
        pixel_loss = pixel_loss * weights
    return masked_mean(pixel_loss, valid)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy averaged over valid pixels; exactly ``0`` (zero gradient, never NaN) when none is valid.

    ``torch.nn.functional.cross_entropy(..., ignore_index=...)`` with the
    default ``reduction="mean"`` returns NaN on a batch whose pixels are all
    ignored; dividing the summed loss by ``max(#valid, 1)`` does not.

    Args:
        logits: ``(N, K, H, W)`` scores.
        target: ``(N, H, W)`` integer class ids, ``ignore_index`` on void pixels.
        ignore_index: label of pixels that do not count.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 1, 2, requires_grad=True)
        >>> round(float(masked_cross_entropy(logits, torch.tensor([[[0, 255]]])).detach()), 4)
        0.6931
        >>> loss = masked_cross_entropy(logits, torch.full((1, 1, 2), 255))
        >>> loss.backward(); float(loss.detach()), bool(torch.isfinite(logits.grad).all())
        (0.0, True)
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor (N, K, H, W), got {shape}")
    if not isinstance(target, torch.Tensor) or target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(
            f"target must be an integer mask (N, H, W), got {getattr(target, 'dtype', type(target).__name__)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: expected {expected} "
            "(upsample the logits to the mask size inside the model or the loss)"
        )
    check_class_ids(target, logits.shape[1], ignore_index, "target")
    pixel_loss = pixel_cross_entropy(logits.float(), target, ignore_index)
    return masked_mean(pixel_loss, valid_mask(target, ignore_index))


def success_mask(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Pixels where the attack already succeeds: wrong (untargeted) or on target (targeted)."""
    pred = logits.max(dim=1).indices  # first maximum, as segrobust.utils.predicted_classes
    return pred == labels if targeted else pred != labels


def segpgd_weights(
    logits: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    steps: int,
    targeted: bool = False,
) -> torch.Tensor:
    """SegPGD pixel weights (Gu et al., ECCV 2022), detached, ``(N, H, W)``.

    At step ``t`` of ``T`` (1-based), ``λ_t = (t − 1) / (2T)``; pixels where the
    attack has not succeeded yet weigh ``1 − λ_t``, the others ``λ_t``. For an
    untargeted attack "not succeeded" means correctly classified, giving the
    paper's ``(1 − λ_t)·c + λ_t·(1 − c)``.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]]]])  # predicts 0, 1
        >>> segpgd_weights(logits, torch.tensor([[[0, 0]]]), step=3, steps=4)
        tensor([[[0.7500, 0.2500]]])
    """
    if not 1 <= step <= steps:
        raise ValueError(f"step must be in [1, steps={steps}], got {step}")
    lam = (step - 1) / (2 * steps)
    done = success_mask(logits.detach(), labels, targeted).to(logits.dtype)
    return (1 - lam) * (1 - done) + lam * done


def cospgd_weights(
    logits: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool = False,
    ignore_index: int = 255,
) -> torch.Tensor:
    """CosPGD pixel weights (Agnihotri & Keuper, ICML 2024), detached, ``(N, H, W)``.

    ``cos(softmax(logits), one_hot(labels))``, which for a one-hot vector is
    ``p_y / ‖p‖₂``; targeted attacks use ``1 − cos``. Ignored pixels get weight 0.

    Examples:
        >>> import torch
        >>> w = cospgd_weights(torch.zeros(1, 2, 1, 1), torch.tensor([[[1]]]))
        >>> round(float(w), 4)  # p = (0.5, 0.5): 0.5 / sqrt(0.5)
        0.7071
    """
    probs = torch.softmax(logits.detach(), dim=1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
    p_true = probs.gather(1, safe.unsqueeze(1)).squeeze(1)
    cos = p_true / probs.norm(dim=1).clamp_min(1e-12)
    weights = 1 - cos if targeted else cos
    return weights * valid.to(weights.dtype)


def pixel_confidence(
    logits: torch.Tensor, labels: torch.Tensor, kind: str = "true_prob", ignore_index: int = 255
) -> torch.Tensor:
    """Per-pixel confidence ``(N, H, W)``, detached: ``softmax[y]`` (``"true_prob"``) or ``max softmax`` (``"max_prob"``).

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[[0.0]], [[0.0]]]])
        >>> pixel_confidence(logits, torch.tensor([[[1]]]))
        tensor([[[0.5000]]])
    """
    probs = torch.softmax(logits.detach().float(), dim=1)
    if kind == "max_prob":
        return probs.max(dim=1).values
    if kind == "true_prob":
        safe = torch.where(labels != ignore_index, labels, torch.zeros_like(labels)).long()
        return probs.gather(1, safe.unsqueeze(1)).squeeze(1)
    raise ValueError(f"confidence must be 'true_prob' or 'max_prob', got {kind!r}")


def lowest_fraction_mask(score: torch.Tensor, valid: torch.Tensor, fraction: float) -> torch.Tensor:
    """Valid pixels whose ``score`` is among the lowest ``fraction`` of each image's valid pixels.

    The threshold is the per-image order statistic at rank ``ceil(fraction · n_valid)``
    (ties at the threshold are included); ``fraction ≥ 1`` selects every valid pixel.

    Examples:
        >>> import torch
        >>> score = torch.tensor([[[0.1, 0.9, 0.5, 0.3]]])
        >>> lowest_fraction_mask(score, torch.ones_like(score, dtype=torch.bool), 0.5)
        tensor([[[ True, False, False,  True]]])
    """
    if fraction >= 1:
        return valid.clone()
    n = score.shape[0]
    flat = torch.where(valid, score, torch.full_like(score, float("inf"))).reshape(n, -1)
    n_valid = valid.reshape(n, -1).sum(1)
    count = torch.ceil(fraction * n_valid.to(score.dtype)).long().clamp(min=1)
    ranked = flat.sort(dim=1).values
    threshold = ranked.gather(1, (count - 1).clamp(max=flat.shape[1] - 1).unsqueeze(1))
    chosen = (flat <= threshold) & (n_valid > 0).unsqueeze(1) & (count > 0).unsqueeze(1)
    return chosen.reshape(score.shape) & valid


def dilate_mask(mask: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Morphological dilation of a boolean ``(N, H, W)`` mask by a ``k×k`` square (kornia.morphology).

    Examples:
        >>> import torch
        >>> m = torch.zeros(1, 3, 3, dtype=torch.bool); m[0, 1, 1] = True
        >>> int(dilate_mask(m, 3).sum())
        9
    """
    if kernel_size <= 1:
        return mask.clone()
    from kornia.morphology import dilation

    kernel = torch.ones(kernel_size, kernel_size, device=mask.device)
    grown = dilation(mask.unsqueeze(1).float(), kernel, border_type="constant", border_value=0.0)
    return grown.squeeze(1) > 0.5


def _safe_labels(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Labels with ignored pixels set to class 0, so they can index a class dimension."""
    return torch.where(valid, labels, torch.zeros_like(labels)).long()


def js_divergence(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Jensen–Shannon divergence between ``softmax(logits)`` and ``one_hot(labels)`` per pixel, ``(N, H, W)``.

    With ``p = softmax(logits)``, ``e = one_hot(y)`` and ``m = (p + e)/2``,
    ``JS = ½ KL(p‖m) + ½ KL(e‖m)``, which depends on ``p_y`` alone:
    ``JS = log 2 + ½ (p_y log p_y − (1 + p_y) log(1 + p_y))``. It is bounded
    (``0`` at ``p_y = 1``, ``log 2`` at ``p_y = 0``), so pixels already fooled
    stop pulling the gradient. Zero on ignored pixels.

    Examples:
        >>> import torch
        >>> js = js_divergence(torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]]), torch.tensor([[[0, 255]]]))
        >>> [round(v, 4) for v in js.flatten().tolist()]
        [0.0432, 0.0]
    """
    valid = labels != ignore_index
    log_p = torch.log_softmax(logits, dim=1).gather(1, _safe_labels(labels, valid).unsqueeze(1)).squeeze(1)
    p = log_p.exp()
    # p·log p written as p·log_softmax: finite gradient even where p underflows to 0
    js = math.log(2.0) + 0.5 * (p * log_p - (1 + p) * torch.log1p(p))
    return js * valid.to(js.dtype)


def spherical_score(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Minus the correct-class entry of the L2-normalised logit vector, ``−z_y / ‖z‖₂``, per pixel ``(N, H, W)``.

    Zero on ignored pixels; in ``[−1, 1]`` elsewhere.

    Examples:
        >>> import torch
        >>> spherical_score(torch.tensor([[[[3.0]], [[4.0]]]]), torch.tensor([[[1]]]))
        tensor([[[-0.8000]]])
    """
    valid = labels != ignore_index
    z_y = logits.gather(1, _safe_labels(labels, valid).unsqueeze(1)).squeeze(1)
    score = -z_y / logits.norm(dim=1).clamp_min(1e-12)
    return score * valid.to(score.dtype)


def balanced_class_weights(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Per-class weights ``(K,)`` inversely proportional to each class's valid-pixel count in ``labels``.

    ``w_c = n_valid / (n_present · n_c)`` for classes present in the batch
    (``n_present`` of them), ``0`` for absent ones: every present class then
    carries the same total weight, and the mean weight over valid pixels is 1.

    Examples:
        >>> import torch
        >>> balanced_class_weights(torch.tensor([[[0, 0, 0, 1, 255]]]), num_classes=3)
        tensor([0.6667, 2.0000, 0.0000])
    """
    valid = labels != ignore_index
    counts = torch.bincount(labels[valid].long().flatten(), minlength=num_classes)[:num_classes].double()
    present = counts > 0
    n_present = int(present.sum())
    if n_present == 0:
        return torch.zeros(num_classes, device=labels.device)
    weights = torch.where(present, counts.sum() / (n_present * counts.clamp_min(1)), torch.zeros_like(counts))
    return weights.float()


ErosionSchedule = Union[str, Callable[[float], float]]


def erosion_quantile(step: int, steps: int, q0: float, schedule: ErosionSchedule = "linear") -> float:
    """EroSeg's attacked fraction ``q_t`` at a 1-based step: ``q0`` at the first step, 1 at the last.

    ``schedule`` shapes the progress ``(t − 1)/(T − 1)``: ``"linear"``,
    ``"cosine"`` (slow start and end), or a callable mapping progress in
    ``[0, 1]`` to ``q`` directly (raised to ``q0`` at the first step).

    Examples:
        >>> [round(erosion_quantile(t, 5, 0.2), 2) for t in range(1, 6)]
        [0.2, 0.4, 0.6, 0.8, 1.0]
    """
    progress = 0.0 if steps <= 1 else (step - 1) / (steps - 1)
    if schedule == "linear":
        shaped = progress
    elif schedule == "cosine":
        shaped = (1 - math.cos(math.pi * progress)) / 2
    else:
        q = float(schedule(progress))
        if not 0 <= q <= 1:
            raise ValueError(f"schedule({progress}) returned {q}; expected a fraction in [0, 1]")
        return max(q, q0) if step == 1 else q
    return q0 + (1 - q0) * shaped


# ---------------------------------------------------------------------------- pixel-loss objects
class PixelLoss:
    """A per-pixel objective that an attack ascends (or descends, when targeted).

    Called as ``loss(logits, labels, valid, step, steps)`` with logits
    ``(N, K, H, W)``, reference labels ``(N, H, W)`` (the true masks, or the
    target masks of a targeted attack), the boolean ``valid`` mask, and the
    1-based ``step`` of ``steps``; returns ``(N, H, W)``, zero where ``valid``
    is False. Masks and weights are computed from detached logits, so the
    gradient flows through the loss term only (as in SegPGD and CosPGD).

    ``targeted`` changes what "already fooled" means for the masked and
    weighted losses: a pixel predicted as its target rather than one predicted
    wrongly. The attack descends a targeted loss; the loss itself is always
    measured against the labels it is given.

    An attack creates one instance per call (see
    [make_pixel_loss][segrobust.losses.make_pixel_loss]); a subclass may keep
    state across the steps of that call.
    """

    stateful: ClassVar[bool] = False

    def __init__(self, *, targeted: bool = False, ignore_index: int = 255):
        self.targeted = bool(targeted)
        self.ignore_index = ignore_index

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def _still_holds(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Detached float mask of valid pixels the attack has not won yet."""
        return (valid & ~success_mask(logits.detach(), labels, self.targeted)).to(logits.dtype)


class CELoss(PixelLoss):
    """Cross-entropy per pixel (targeted: towards the target, descended)."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        return pixel_cross_entropy(logits, labels, self.ignore_index) * valid.to(logits.dtype)


class MaskedCELoss(PixelLoss):
    """Cross-entropy on the pixels still classified correctly (targeted: not yet on target); 0 elsewhere."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        return pixel_cross_entropy(logits, labels, self.ignore_index) * self._still_holds(logits, labels, valid)


class BalancedMaskedCELoss(PixelLoss):
    """Masked cross-entropy with per-class weights.

    ``class_weights`` ``(K,)`` if given, else
    [balanced_class_weights][segrobust.losses.balanced_class_weights] of the
    labels of the batch the attack is called on (inversely proportional to each
    class's valid-pixel count), so rare classes are not left standing.
    """

    def __init__(
        self, *, targeted: bool = False, ignore_index: int = 255, class_weights: Optional[torch.Tensor] = None
    ):
        super().__init__(targeted=targeted, ignore_index=ignore_index)
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if (
                class_weights.dim() != 1
                or not bool(torch.isfinite(class_weights).all())
                or bool((class_weights < 0).any())
            ):
                raise ValueError("class_weights must be a 1-D tensor (K,) of finite non-negative numbers")
        self.class_weights = class_weights

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        num_classes = logits.shape[1]
        if self.class_weights is None:
            weights = balanced_class_weights(labels, num_classes, self.ignore_index)
        elif self.class_weights.numel() != num_classes:
            raise ValueError(
                f"class_weights has {self.class_weights.numel()} entries for a model with {num_classes} classes"
            )
        else:
            weights = self.class_weights
        pixel_weights = weights.to(device=logits.device, dtype=logits.dtype)[_safe_labels(labels, valid)]
        masked = pixel_cross_entropy(logits, labels, self.ignore_index) * self._still_holds(logits, labels, valid)
        return masked * pixel_weights


class JSLoss(PixelLoss):
    """[js_divergence][segrobust.losses.js_divergence] between ``softmax(f(x))`` and ``one_hot(y)``."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        return js_divergence(logits, labels, self.ignore_index) * valid.to(logits.dtype)


class MaskedSphericalLoss(PixelLoss):
    """[spherical_score][segrobust.losses.spherical_score] ``−z_y/‖z‖₂`` on pixels still classified correctly.

    Targeted: on pixels not yet on target, descended, which raises the
    target's normalised logit.
    """

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        return spherical_score(logits, labels, self.ignore_index) * self._still_holds(logits, labels, valid)


class SegPGDLoss(PixelLoss):
    """Cross-entropy weighted by [segpgd_weights][segrobust.losses.segpgd_weights] at ``step`` of ``steps``."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        weights = segpgd_weights(logits, labels, min(step, steps), steps, targeted=self.targeted)
        return pixel_cross_entropy(logits, labels, self.ignore_index) * weights * valid.to(logits.dtype)


class CosPGDLoss(PixelLoss):
    """Cross-entropy weighted by [cospgd_weights][segrobust.losses.cospgd_weights] (targeted: ``1 − cos``)."""

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        weights = cospgd_weights(logits, labels, targeted=self.targeted, ignore_index=self.ignore_index)
        return pixel_cross_entropy(logits, labels, self.ignore_index) * weights


class EroSegLoss(PixelLoss):
    """EroSeg's weighting of the cross-entropy: a set of attacked pixels that erodes inwards.

    State: the attacked set ``M_t`` of the previous step (one instance per
    attack call). At step ``t``, with confidence ``c`` (the true-class
    probability, ``confidence="true_prob"``, or the top probability,
    ``"max_prob"``; targeted: ``1 − p_target``),
    ``M_t = dilate(M_{t−1}, kernel_size) ∪ {valid pixels in the lowest q_t fraction of c}``
    with ``q_t`` = [erosion_quantile][segrobust.losses.erosion_quantile]; pixels
    of ``M_t`` weigh 1, or ``fooled_weight`` when already fooled, the others 0.
    Calling it twice at the same step grows the set twice: call once per step.
    """

    stateful = True

    def __init__(
        self,
        *,
        targeted: bool = False,
        ignore_index: int = 255,
        q0: float = 0.85,
        schedule: ErosionSchedule = "linear",
        kernel_size: int = 5,
        fooled_weight: float = 0.1,
        confidence: str = "true_prob",
    ):
        super().__init__(targeted=targeted, ignore_index=ignore_index)
        if not 0 < q0 <= 1:
            raise ValueError(f"q0 must be in (0, 1], got {q0}")
        if not (callable(schedule) or schedule in ("linear", "cosine")):
            raise ValueError(f"schedule must be 'linear', 'cosine' or a callable progress -> q, got {schedule!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        if not 0 <= fooled_weight <= 1:
            raise ValueError(f"fooled_weight must be in [0, 1], got {fooled_weight}")
        if confidence not in ("true_prob", "max_prob"):
            raise ValueError(f"confidence must be 'true_prob' or 'max_prob', got {confidence!r}")
        self.q0, self.schedule, self.kernel_size = float(q0), schedule, kernel_size
        self.fooled_weight, self.confidence = float(fooled_weight), confidence
        self.attacked: Optional[torch.Tensor] = None

    def weights(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        """Detached weights ``(N, H, W)`` at ``step``; updates the attacked set."""
        conf = pixel_confidence(logits, labels, self.confidence, self.ignore_index)
        if self.targeted and self.confidence == "true_prob":
            conf = 1 - conf
        seeds = lowest_fraction_mask(conf, valid, erosion_quantile(min(step, steps), steps, self.q0, self.schedule))
        previous = self.attacked
        self.attacked = seeds if previous is None else (dilate_mask(previous, self.kernel_size) & valid) | seeds
        fooled = success_mask(logits.detach(), labels, self.targeted)
        weights = torch.where(fooled, torch.full_like(conf, self.fooled_weight), torch.ones_like(conf))
        return weights * self.attacked.to(weights.dtype)

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        weights = self.weights(logits, labels, valid, step, steps).to(logits.dtype)
        return pixel_cross_entropy(logits, labels, self.ignore_index) * weights


PIXEL_LOSSES: dict[str, type[PixelLoss]] = {
    "ce": CELoss,
    "masked_ce": MaskedCELoss,
    "balanced_masked_ce": BalancedMaskedCELoss,
    "js": JSLoss,
    "masked_spherical": MaskedSphericalLoss,
    "segpgd": SegPGDLoss,
    "cospgd": CosPGDLoss,
    "eroseg": EroSegLoss,
}
"""Pixel losses by name: each a [PixelLoss][segrobust.losses.PixelLoss] class (a plain dict; add your own)."""

PixelLossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def make_pixel_loss(
    loss: Union[str, type, PixelLossFunction],
    *,
    targeted: bool = False,
    ignore_index: int = 255,
    **options: object,
) -> PixelLossFunction:
    """A fresh pixel loss for one attack call.

    ``loss`` is a name in [PIXEL_LOSSES][segrobust.losses.PIXEL_LOSSES], a
    [PixelLoss][segrobust.losses.PixelLoss] subclass (both instantiated here
    with ``targeted``, ``ignore_index`` and ``options``), or any callable
    ``(logits, labels, valid, step, steps) -> (N, H, W)``, returned as is
    (it then owns its targeted handling and any state).

    Examples:
        >>> import torch
        >>> loss = make_pixel_loss("masked_ce")
        >>> logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 2.0]]]])  # predicts 0, 1
        >>> labels = torch.tensor([[[0, 0]]])
        >>> loss(logits, labels, labels != 255, 1, 10)  # the fooled pixel adds nothing
        tensor([[[0.1269, 0.0000]]])
    """
    if isinstance(loss, str):
        if loss not in PIXEL_LOSSES:
            raise ValueError(f"unknown pixel loss {loss!r}; expected one of {sorted(PIXEL_LOSSES)} or a callable")
        loss = PIXEL_LOSSES[loss]
    if isinstance(loss, type):
        if not issubclass(loss, PixelLoss):
            raise TypeError(f"a loss class must subclass segrobust.losses.PixelLoss, got {loss.__name__}")
        try:
            return loss(targeted=targeted, ignore_index=ignore_index, **options)
        except TypeError as err:
            raise TypeError(f"loss options {sorted(options)} do not fit {loss.__name__}: {err}") from None
    if callable(loss):
        if options:
            raise TypeError(f"loss options {sorted(options)} only apply to a named loss or a PixelLoss class")
        return loss
    raise TypeError(f"loss must be a name in PIXEL_LOSSES, a PixelLoss class or a callable, got {type(loss).__name__}")
