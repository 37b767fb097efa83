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
    "cast_into_ball",
    "cospgd_weights",
    "dilate_mask",
    "linf_bounds",
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


def linf_bounds(images: torch.Tensor, eps: Union[float, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The box ``[low, high]`` of ``{‖v − images‖∞ ≤ eps} ∩ [0, 1]`` in ``images.dtype``, rounded inwards.

    Every ``v`` with ``low ≤ v ≤ high`` in ``images.dtype`` satisfies
    ``(v.double() - images.double()).abs() <= eps`` and ``0 <= v <= 1``
    *exactly*: the bounds are computed in float64, rounded to the dtype and
    moved one representable value towards ``images`` where rounding pushed
    them out of the ball. ``adv.clamp(low, high)`` is then an exact
    projection in any dtype, with no arithmetic on ``adv`` (so an iterate
    inside the ball is returned unchanged). ``images`` must lie in ``[0, 1]``.

    Examples:
        >>> import torch
        >>> x = torch.tensor([0.3, 0.99], dtype=torch.bfloat16)
        >>> low, high = linf_bounds(x, 8 / 255)
        >>> bool(((high.double() - x.double()) <= 8 / 255).all()), float(high[1])
        (True, 1.0)
    """
    center = images.detach().double()
    radius = eps.to(center) if torch.is_tensor(eps) else eps
    high = (center + radius).clamp(max=1.0).to(images.dtype)
    low = (center - radius).clamp(min=0.0).to(images.dtype)
    for _ in range(8):  # rounding to the nearest value leaves at most one step to take; loop to be sure
        over = (high.double() - center) > radius
        under = (center - low.double()) > radius
        if not bool((over | under).any()):
            return low, high
        high = torch.where(over, torch.nextafter(high, images.detach()), high)
        low = torch.where(under, torch.nextafter(low, images.detach()), low)
    raise AssertionError("linf_bounds did not converge")  # unreachable: each step moves towards images


def project_linf(adv: torch.Tensor, images: torch.Tensor, eps: Union[float, torch.Tensor]) -> torch.Tensor:
    """Projection onto ``{‖adv − images‖∞ ≤ eps} ∩ [0, 1]``, exact in ``adv``'s dtype (see `linf_bounds`).

    Inside an attack, compute the bounds once per call and clamp
    (``adv.clamp(*bounds)``); this function recomputes them.

    Examples:
        >>> import torch
        >>> project_linf(torch.tensor([0.9, 0.0]), torch.tensor([0.5, 0.05]), eps=0.1)
        tensor([0.6000, 0.0000])
    """
    low, high = linf_bounds(images.to(adv.dtype), eps)
    return adv.clamp(low, high)


def sign_step(adv: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """One signed-gradient ascent step ``adv + alpha · sign(grad)`` (descend with a negated grad)."""
    return adv + alpha * grad.sign()


def random_linf_start(
    images: torch.Tensor,
    eps: float,
    generator: Optional[torch.Generator] = None,
    bounds: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """Uniform start inside the ``eps`` ball, projected into ``[0, 1]`` (``bounds``: `linf_bounds` if known)."""
    noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    low, high = linf_bounds(images, eps) if bounds is None else bounds
    return (images + (2 * noise - 1) * eps).clamp(low, high)


def cast_into_ball(adv: torch.Tensor, images: torch.Tensor, eps: float) -> torch.Tensor:
    """``adv`` in ``images.dtype``, kept inside the exact ``eps`` ball around ``images`` after rounding.

    An attack on half-precision images computes in float32; rounding its
    result back may step out of the ball by half a unit of the last place.
    Clamping to the dtype's inward-rounded `linf_bounds` keeps the promise.

    Examples:
        >>> import torch
        >>> x = torch.full((3,), 0.3, dtype=torch.float16)
        >>> adv = x.float() + 8 / 255
        >>> bool(((cast_into_ball(adv, x, 8 / 255).double() - x.double()) <= 8 / 255).all())
        True
    """
    return adv.to(images.dtype).clamp(*linf_bounds(images, eps))
