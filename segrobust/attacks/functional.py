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

# the pixel weightings live in the shared losses module; re-exported here for the attacks
from segrobust.losses import (
    cospgd_weights,
    dilate_mask,
    lowest_fraction_mask,
    masked_mean,
    pixel_confidence,
    pixel_cross_entropy,
    segpgd_weights,
    success_mask,
    valid_mask,
    weighted_pixel_loss,
)

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


def project_linf(adv: torch.Tensor, images: torch.Tensor, eps: Union[float, torch.Tensor]) -> torch.Tensor:
    """Projection onto ``{‖adv − images‖∞ ≤ eps} ∩ [0, 1]``.

    Examples:
        >>> import torch
        >>> project_linf(torch.tensor([0.9, 0.0]), torch.tensor([0.5, 0.05]), eps=0.1)
        tensor([0.6000, 0.0000])
    """
    delta = (
        torch.clamp(adv - images, -eps, eps)
        if not torch.is_tensor(eps)
        else torch.maximum(torch.minimum(adv - images, eps), -eps)
    )
    return torch.clamp(images + delta, 0.0, 1.0)


def sign_step(adv: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """One signed-gradient ascent step ``adv + alpha · sign(grad)`` (descend with a negated grad)."""
    return adv + alpha * grad.sign()


def random_linf_start(images: torch.Tensor, eps: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform start inside the ``eps`` ball, projected into ``[0, 1]``."""
    noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return project_linf(images + (2 * noise - 1) * eps, images, eps)
