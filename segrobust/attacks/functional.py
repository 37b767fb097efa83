"""Pure functions that every segmentation attack here is composed of.

Conventions: ``logits`` ``(N, K, H, W)``; ``labels`` ``(N, H, W)`` integer with
``ignore_index`` on void pixels; ``images`` ``(N, C, H, W)`` in ``[0, 1]``.
Per-pixel quantities are ``(N, H, W)`` and are exactly zero on ignored pixels.
A "mean" is over valid pixels only, and a batch with no valid pixel gives 0
(and a zero gradient), never NaN.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from segrobust.losses import masked_mean, pixel_cross_entropy, valid_mask, weighted_pixel_loss
from segrobust.utils import predicted_classes

__all__ = [
    "cospgd_weights",
    "dilate_mask",
    "lowest_fraction_mask",
    "masked_mean",
    "pixel_confidence",
    "pixel_cross_entropy",
    "project_linf",
    "random_linf_start",
    "segpgd_weights",
    "sign_step",
    "success_mask",
    "valid_mask",
    "weighted_pixel_loss",
]










def success_mask(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Pixels where the attack already succeeds: wrong (untargeted) or on target (targeted)."""
    pred = predicted_classes(logits)
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


def project_linf(adv: torch.Tensor, images: torch.Tensor, eps: Union[float, torch.Tensor]) -> torch.Tensor:
    """Projection onto ``{‖adv − images‖∞ ≤ eps} ∩ [0, 1]``.

    Examples:
        >>> import torch
        >>> project_linf(torch.tensor([0.9, 0.0]), torch.tensor([0.5, 0.05]), eps=0.1)
        tensor([0.6000, 0.0000])
    """
    delta = torch.clamp(adv - images, -eps, eps) if not torch.is_tensor(eps) else torch.maximum(
        torch.minimum(adv - images, eps), -eps
    )
    return torch.clamp(images + delta, 0.0, 1.0)


def sign_step(adv: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """One signed-gradient ascent step ``adv + alpha · sign(grad)`` (descend with a negated grad)."""
    return adv + alpha * grad.sign()


def random_linf_start(
    images: torch.Tensor, eps: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Uniform start inside the ``eps`` ball, projected into ``[0, 1]``."""
    noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return project_linf(images + (2 * noise - 1) * eps, images, eps)


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
