"""Pure functions that every segmentation attack here is composed of.

Conventions: ``logits`` ``(N, K, H, W)``; ``labels`` ``(N, H, W)`` integer with
``ignore_index`` on void pixels; ``images`` ``(N, C, H, W)`` in ``[0, 1]``.
Per-pixel quantities are ``(N, H, W)`` and are exactly zero on ignored pixels.
A "mean" is over valid pixels only, and a batch with no valid pixel gives 0
(and a zero gradient), never NaN.

The L∞ geometry (exact bounds, projection, random start), the signed step,
and APGD's step-size pieces (checkpoints, the halving rule, radius schedules)
live here; the step rules of [segrobust.attacks.steps][] and the loop of
[LinfAttack][segrobust.attacks.LinfAttack] are built from them.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

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
from segrobust.validation import check_steps

__all__ = [
    "RADIUS_SCHEDULES",
    "apgd_checkpoints",
    "apgd_should_halve",
    "cast_into_ball",
    "cospgd_weights",
    "dilate_mask",
    "linf_bounds",
    "lowest_fraction_mask",
    "masked_mean",
    "pixel_confidence",
    "pixel_cross_entropy",
    "project_linf",
    "radius_stages",
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


# ---------------------------------------------------------------------------- APGD
RADIUS_SCHEDULES: dict[str, tuple[tuple[float, float], ...]] = {
    "sea": ((2.0, 0.3), (1.5, 0.3), (1.0, 0.4)),
}
"""Named radius schedules: ``(radius as a multiple of eps, fraction of the steps)`` per stage."""


def apgd_checkpoints(steps: int, p1: float = 0.22, decrement: float = 0.03, min_gap: float = 0.06) -> list[int]:
    """APGD's checkpoint iterations ``w_j = ⌈p_j · steps⌉`` within ``[0, steps]``.

    ``p_0 = 0``, ``p_1 = p1``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − decrement, min_gap)``;
    duplicates (short runs) are dropped.

    Examples:
        >>> apgd_checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    check_steps(steps, "steps")
    if not (0 < p1 <= 1 and decrement >= 0 and 0 < min_gap <= 1):
        raise ValueError(f"need 0 < p1 <= 1, decrement >= 0, 0 < min_gap <= 1; got {p1}, {decrement}, {min_gap}")
    fractions, previous, current = [0.0], 0.0, float(p1)
    while current <= 1 + 1e-12:
        fractions.append(current)
        previous, current = current, current + max(current - previous - decrement, min_gap)
    # rounding first keeps 0.22 · 100 at 22 instead of ⌈22.000000000000004⌉ = 23
    iterations = (math.ceil(round(p * steps, 9)) for p in fractions)
    return sorted({w for w in iterations if w <= steps})


def apgd_should_halve(
    losses: torch.Tensor,
    best_loss: torch.Tensor,
    best_loss_at_last_checkpoint: torch.Tensor,
    halved_at_last_checkpoint: torch.Tensor,
    rho: float = 0.75,
) -> torch.Tensor:
    """APGD's step-size rule at a checkpoint, per image ``(N,)`` bool.

    ``losses`` ``(m + 1, N)`` holds the objective from the last checkpoint to
    this one (both included, ``m`` steps). An image halves its step size (and
    restarts from its best-loss point) when fewer than ``rho · m`` of those
    steps raised its loss, or when it did not halve at the last checkpoint and
    its best loss has not improved since.

    Examples:
        >>> import torch
        >>> losses = torch.tensor([[1.0, 1.0], [2.0, 0.5], [3.0, 0.4], [2.5, 0.3], [4.0, 0.2]])
        >>> best = losses.max(0).values
        >>> apgd_should_halve(losses, best, torch.tensor([1.0, 1.0]), torch.tensor([True, True]))
        tensor([False,  True])
    """
    if losses.dim() != 2 or losses.shape[0] < 2:
        raise ValueError(f"losses must be (m + 1, N) with m >= 1 steps, got {tuple(losses.shape)}")
    steps = losses.shape[0] - 1
    rises = (losses[1:] > losses[:-1]).sum(0)
    oscillating = rises < rho * steps
    stalled = ~halved_at_last_checkpoint.bool() & (best_loss <= best_loss_at_last_checkpoint)
    return oscillating | stalled


def radius_stages(schedule: Union[str, Sequence[tuple[float, float]], None], steps: int) -> list[tuple[float, int]]:
    """``(radius factor, iterations)`` per stage; the last stage takes what the others leave.

    Examples:
        >>> radius_stages("sea", 100)
        [(2.0, 30), (1.5, 30), (1.0, 40)]
        >>> radius_stages(None, 7)
        [(1.0, 7)]
    """
    if schedule is None:
        return [(1.0, steps)]
    if isinstance(schedule, str):
        if schedule not in RADIUS_SCHEDULES:
            raise ValueError(
                f"unknown radius_schedule {schedule!r}; expected None, one of {sorted(RADIUS_SCHEDULES)} "
                "or a sequence of (radius factor, fraction) pairs"
            )
        schedule = RADIUS_SCHEDULES[schedule]
    try:
        pairs = [(float(r), float(f)) for r, f in schedule]
    except (TypeError, ValueError):
        raise ValueError(
            f"radius_schedule must be a sequence of (radius factor, fraction) pairs, got {schedule!r}"
        ) from None
    if not all(math.isfinite(r) and math.isfinite(f) for r, f in pairs):
        raise ValueError(f"radius_schedule must hold finite numbers, got {pairs}")
    if not pairs or pairs[-1][0] != 1.0 or any(r < 1 for r, _ in pairs) or any(f < 0 for _, f in pairs):
        raise ValueError(f"radius_schedule needs factors >= 1 ending at 1.0 and non-negative fractions, got {pairs}")
    if abs(sum(f for _, f in pairs) - 1) > 1e-6:
        raise ValueError(f"radius_schedule fractions must sum to 1, got {sum(f for _, f in pairs)}")
    lengths = [math.floor(f * steps + 1e-9) for _, f in pairs[:-1]]
    return [(r, n) for (r, _), n in zip(pairs, [*lengths, steps - sum(lengths)])]
