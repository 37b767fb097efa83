"""Pixel losses shared by every layer: attacks, training, depth multi-task and ART.

Conventions: ``logits`` ``(N, K, H, W)``; ``labels`` ``(N, H, W)`` integer with
``ignore_index`` on void pixels. Per-pixel losses are ``(N, H, W)`` and exactly
zero on ignored pixels. A "mean" is over valid pixels only, and a batch with no
valid pixel gives 0 (and a zero gradient), never NaN.

This module sits at the bottom of the package: it imports only torch and
:mod:`segrobust.validation` (which imports only torch).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from segrobust.validation import check_class_ids

__all__ = [
    "masked_cross_entropy",
    "masked_mean",
    "pixel_cross_entropy",
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
        raise TypeError(f"target must be an integer mask (N, H, W), got {getattr(target, 'dtype', type(target).__name__)}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}: expected {expected} "
            "(upsample the logits to the mask size inside the model or the loss)"
        )
    check_class_ids(target, logits.shape[1], ignore_index, "target")
    pixel_loss = pixel_cross_entropy(logits.float(), target, ignore_index)
    return masked_mean(pixel_loss, valid_mask(target, ignore_index))
