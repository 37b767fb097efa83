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
    "CosineLoss",
    "EroSegLoss",
    "JSLoss",
    "MaskedCELoss",
    "MaskedDLRLoss",
    "MaskedMarginLoss",
    "MaskedSphericalLoss",
    "PixelLoss",
    "SegPGDLoss",
    "TsallisLoss",
    "balanced_class_weights",
    "class_pixel_counts",
    "cospgd_weights",
    "dilate_mask",
    "erosion_quantile",
    "inverse_frequency_weights",
    "js_divergence",
    "logit_margin",
    "lowest_fraction_mask",
    "make_pixel_loss",
    "masked_cross_entropy",
    "masked_mean",
    "pixel_confidence",
    "pixel_cross_entropy",
    "sea_class_weights",
    "segpgd_weights",
    "spherical_score",
    "success_mask",
    "tsallis_cross_entropy",
    "tsallis_q",
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


def class_pixel_counts(masks: object, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Valid pixels per class ``(K,)`` (int64, on the CPU) over ``masks``: one integer tensor
    ``(..., H, W)`` or an iterable of them (a data set's masks, batch by batch).

    Examples:
        >>> import torch
        >>> class_pixel_counts(torch.tensor([[0, 0, 2, 255]]), 3)
        tensor([2, 0, 1])
        >>> class_pixel_counts([torch.tensor([[1]]), torch.tensor([[1, 0]])], 2)
        tensor([1, 2])
    """
    parts = [masks] if isinstance(masks, torch.Tensor) else masks
    counts = torch.zeros(num_classes, dtype=torch.long)
    for part in parts:  # type: ignore[union-attr]
        if not isinstance(part, torch.Tensor) or part.dtype.is_floating_point or part.dtype == torch.bool:
            raise TypeError(
                f"masks must be integer tensors of class ids, got {getattr(part, 'dtype', type(part).__name__)}"
            )
        check_class_ids(part, num_classes, ignore_index, "masks")
        counts += torch.bincount(part[part != ignore_index].long().flatten().cpu(), minlength=num_classes)
    return counts


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """Normalised inverse frequencies ``w_c = (1/n_c) / Σ_k (1/n_k)`` over the classes present, 0 for absent ones.

    ``counts`` ``(K,)`` are pixel counts per class; the weights ``(K,)`` (float32)
    sum to 1 (all zero when no class is present).

    Examples:
        >>> import torch
        >>> inverse_frequency_weights(torch.tensor([3, 1, 0]))
        tensor([0.2500, 0.7500, 0.0000])
    """
    counts = torch.as_tensor(counts).double()
    inverse = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    total = inverse.sum()
    return (inverse / total if total > 0 else inverse).float()


def sea_class_weights(masks: object, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """SEA's class weights for its balanced masked CE (Croce et al., ECCV 2024): normalised inverse pixel frequency.

    Counted over a whole evaluation set (``masks``: one tensor or an iterable of
    mask batches), as SEA's fixed per-data-set constants are:
    ``w_c = (1/n_c) / Σ_k (1/n_k)`` over the classes present, ``0`` for absent
    ones ([class_pixel_counts][segrobust.losses.class_pixel_counts], then
    [inverse_frequency_weights][segrobust.losses.inverse_frequency_weights]).
    Give them to ``"balanced_masked_ce"`` as ``class_weights``.

    Examples:
        >>> import torch
        >>> sea_class_weights(torch.tensor([[0, 0, 0, 1, 255]]), num_classes=3)
        tensor([0.2500, 0.7500, 0.0000])
    """
    return inverse_frequency_weights(class_pixel_counts(masks, num_classes, ignore_index))


def tsallis_q(step: int, steps: int, q_start: float = -2.0, q_end: float = 1.0, schedule: str = "linear") -> float:
    """The Tsallis index ``q`` at a 1-based ``step`` of ``steps``: ``q_start`` at step 1, moving towards ``q_end``.

    Progress is ``s = (step − 1) / steps`` (TsallisPGD's ``step / iterations``
    with its 0-based step), so the last gradient step sees ``s = (T − 1)/T``:
    ``"linear"`` gives ``q = q_start + (q_end − q_start)·s``, ``"cosine"``
    ``q = q_end + (q_start − q_end)·(1 + cos πs)/2``.

    Examples:
        >>> [tsallis_q(t, 3) for t in (1, 2, 3)]
        [-2.0, -1.0, 0.0]
    """
    progress = min(max((step - 1) / max(steps, 1), 0.0), 1.0)
    if schedule == "linear":
        return q_start + (q_end - q_start) * progress
    if schedule == "cosine":
        return q_end + (q_start - q_end) * (1 + math.cos(math.pi * progress)) / 2
    raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")


def tsallis_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, q: float, ignore_index: int = 255
) -> torch.Tensor:
    """Tsallis cross-entropy ``(1 − p_y^{1−q}) / (1 − q)`` per pixel ``(N, H, W)``, zero on ignored pixels.

    Computed in log space as ``−expm1((1 − q)·log p_y) / (1 − q)`` with
    ``log p_y`` from ``log_softmax`` (finite for every ``q ≤ 1``, also where
    ``p_y`` underflows), and as ``−log p_y`` (cross-entropy, the limit) when
    ``|1 − q| < 1e-6``. Its logit gradient is ``p_y^{1−q}`` times that of
    cross-entropy: ``q < 1`` turns pixels already lost (small ``p_y``) down.

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[[[0.0]], [[0.0]]]])  # p_y = 0.5
        >>> float(tsallis_cross_entropy(logits, torch.tensor([[[0]]]), q=0.0))  # 1 − p_y
        0.5
    """
    valid = labels != ignore_index
    log_p = torch.log_softmax(logits, dim=1).gather(1, _safe_labels(labels, valid).unsqueeze(1)).squeeze(1)
    value = -log_p if abs(1 - q) < 1e-6 else -torch.expm1((1 - q) * log_p) / (1 - q)
    return value * valid.to(value.dtype)


def logit_margin(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """``max_{k≠y} z_k − z_y`` per pixel ``(N, H, W)`` on the raw logits (positive where the pixel is wrong), 0 on ignored pixels.

    Examples:
        >>> import torch
        >>> logit_margin(torch.tensor([[[[3.0]], [[1.0]], [[2.0]]]]), torch.tensor([[[0]]]))
        tensor([[[-1.]]])
    """
    if logits.shape[1] < 2:
        raise ValueError(f"a logit margin needs at least 2 classes, got logits {tuple(logits.shape)}")
    valid = labels != ignore_index
    index = _safe_labels(labels, valid).unsqueeze(1)
    z_y = logits.gather(1, index).squeeze(1)
    others = logits.scatter(1, index, float("-inf")).max(dim=1).values
    return (others - z_y) * valid.to(logits.dtype)


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

    ``step`` and ``steps`` count the whole run (all radius stages together),
    unless the class sets ``per_stage = True``: it is then called with the step
    within the current radius stage and that stage's length, so a schedule tied
    to the step count restarts in every stage (TsallisPGD's ``q``).
    """

    stateful: ClassVar[bool] = False
    #: True: ``(step, steps)`` count within the current radius stage; False: over the whole run.
    per_stage: ClassVar[bool] = False

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
        self.class_weights = _checked_class_weights(class_weights)

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        if self.class_weights is None:
            weights = balanced_class_weights(labels, logits.shape[1], self.ignore_index)
        else:
            weights = _fitting_class_weights(self.class_weights, logits.shape[1])
        pixel_weights = weights.to(device=logits.device, dtype=logits.dtype)[_safe_labels(labels, valid)]
        masked = pixel_cross_entropy(logits, labels, self.ignore_index) * self._still_holds(logits, labels, valid)
        return masked * pixel_weights


def _checked_class_weights(class_weights: Optional[object]) -> Optional[torch.Tensor]:
    """``class_weights`` as a float32 tensor ``(K,)`` of finite non-negative numbers (``None`` stays ``None``)."""
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32)
    if weights.dim() != 1 or not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("class_weights must be a 1-D tensor (K,) of finite non-negative numbers")
    return weights


def _fitting_class_weights(weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    if weights.numel() != num_classes:
        raise ValueError(f"class_weights has {weights.numel()} entries for a model with {num_classes} classes")
    return weights


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


class TsallisLoss(PixelLoss):
    r"""Tsallis cross-entropy with a scheduled ``q`` (TsallisPGD, Matyasko et al., IJCNN 2026).

    Per pixel [tsallis_cross_entropy][segrobust.losses.tsallis_cross_entropy]
    ``(1 − p_y^{1−q}) / (1 − q)`` with ``q =``
    [tsallis_q][segrobust.losses.tsallis_q]``(step, steps, q_start, q_end, schedule)``:
    from ``q_start = −2`` (the gradient weights confident pixels, peak at
    ``p_y = 0.75``) to ``q_end = 1`` (cross-entropy). The schedule restarts in
    every radius stage (``per_stage``), as in TsallisPGD. Optional
    ``class_weights`` ``(K,)`` multiply each pixel by ``w_y``.

    Examples:
        >>> import torch
        >>> logits, labels = torch.tensor([[[[2.0]], [[1.0]], [[0.0]]]]), torch.tensor([[[0]]])
        >>> TsallisLoss()(logits, labels, labels != 255, 1, 10)  # step 1 of 10
        tensor([[[0.2352]]])
    """

    per_stage = True

    def __init__(
        self,
        *,
        targeted: bool = False,
        ignore_index: int = 255,
        q_start: float = -2.0,
        q_end: float = 1.0,
        schedule: str = "linear",
        class_weights: Optional[torch.Tensor] = None,
    ):
        super().__init__(targeted=targeted, ignore_index=ignore_index)
        for name, value in (("q_start", q_start), ("q_end", q_end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1e6 <= value <= 1:
                raise ValueError(f"{name} must be a finite number at most 1 (1 is cross-entropy), got {value!r}")
        if schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule must be 'linear' or 'cosine', got {schedule!r}")
        self.q_start, self.q_end, self.schedule = float(q_start), float(q_end), schedule
        self.class_weights = _checked_class_weights(class_weights)

    def q(self, step: int, steps: int) -> float:
        """``q`` at ``step`` of ``steps``."""
        return tsallis_q(step, steps, self.q_start, self.q_end, self.schedule)

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        value = tsallis_cross_entropy(logits, labels, self.q(step, steps), self.ignore_index) * valid.to(logits.dtype)
        if self.class_weights is None:
            return value
        weights = _fitting_class_weights(self.class_weights, logits.shape[1])
        return value * weights.to(device=logits.device, dtype=logits.dtype)[_safe_labels(labels, valid)]


class CosineLoss(PixelLoss):
    """RSE's cosine loss ``1 − cos(z, one_hot(y)) = 1 − z_y / ‖z‖₂`` on the raw logits (Halmosi et al., ECCV 2024).

    Not masked; zero on ignored pixels. It does not saturate with the softmax's
    confidence, so it still pulls where cross-entropy-like gradients vanish.

    Examples:
        >>> import torch
        >>> logits, labels = torch.tensor([[[[2.0]], [[1.0]], [[0.0]]]]), torch.tensor([[[0]]])
        >>> CosineLoss()(logits, labels, labels != 255, 1, 10)  # step 1 of 10
        tensor([[[0.1056]]])
    """

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        return (1 + spherical_score(logits, labels, self.ignore_index)) * valid.to(logits.dtype)


class MaskedMarginLoss(PixelLoss):
    """[logit_margin][segrobust.losses.logit_margin] ``max_{k≠y} z_k − z_y`` on the pixels still classified correctly.

    Examples:
        >>> import torch
        >>> logits, labels = torch.tensor([[[[2.0]], [[1.0]], [[0.0]]]]), torch.tensor([[[0]]])
        >>> MaskedMarginLoss()(logits, labels, labels != 255, 1, 10)  # step 1 of 10
        tensor([[[-1.]]])
    """

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        return logit_margin(logits, labels, self.ignore_index) * self._still_holds(logits, labels, valid)


class MaskedDLRLoss(PixelLoss):
    """The DLR loss (Croce & Hein 2020) on the pixels still classified correctly: the logit margin over ``z_π1 − z_π3``.

    ``(max_{k≠y} z_k − z_y) / (z_π1 − z_π3 + 1e-12)`` with ``z_π`` the logits
    sorted in decreasing order; the denominator is detached, so it rescales
    each pixel's gradient without adding a path of its own. Needs 3 classes.

    Examples:
        >>> import torch
        >>> logits, labels = torch.tensor([[[[2.0]], [[1.0]], [[0.0]]]]), torch.tensor([[[0]]])
        >>> MaskedDLRLoss()(logits, labels, labels != 255, 1, 10)  # step 1 of 10
        tensor([[[-0.5000]]])
    """

    def __call__(
        self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, step: int, steps: int
    ) -> torch.Tensor:
        if logits.shape[1] < 3:
            raise ValueError(f"masked_dlr needs at least 3 classes (z_π1 − z_π3), got {logits.shape[1]}")
        top = logits.detach().topk(3, dim=1).values
        scale = top[:, 0] - top[:, 2] + 1e-12
        margin = logit_margin(logits, labels, self.ignore_index) / scale
        return margin * self._still_holds(logits, labels, valid)


PIXEL_LOSSES: dict[str, type[PixelLoss]] = {
    "ce": CELoss,
    "masked_ce": MaskedCELoss,
    "balanced_masked_ce": BalancedMaskedCELoss,
    "js": JSLoss,
    "masked_spherical": MaskedSphericalLoss,
    "segpgd": SegPGDLoss,
    "cospgd": CosPGDLoss,
    "eroseg": EroSegLoss,
    "tsallis": TsallisLoss,
    "cosine": CosineLoss,
    "masked_margin": MaskedMarginLoss,
    "masked_dlr": MaskedDLRLoss,
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
