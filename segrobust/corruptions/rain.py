"""segrobust's rain presets as a corruption family (the 16th, beside the 15 of ImageNet-C)."""

from __future__ import annotations

from typing import Optional

import torch

from segrobust.corruptions._ops import Generators, image_generators
from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT, RAIN_PRESETS
from segrobust.validation import check_choice

__all__ = ["RAIN_SEVERITY_PRESETS", "rain", "rain_preset"]

#: The rain family's severity levels: severity ``s`` renders preset ``RAIN_SEVERITY_PRESETS[s − 1]``.
#: There are three streak presets, so the family has three levels (``fog_only`` is fog, not rain).
RAIN_SEVERITY_PRESETS: tuple[str, ...] = ("light", "medium", "heavy")


def rain_preset(
    images: torch.Tensor,
    preset: str,
    generator: Generators = None,
    depth: Optional[torch.Tensor] = None,
    reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT,
) -> torch.Tensor:
    """Rain of a named preset (``light``, ``medium``, ``heavy``, ``fog_only``), parameters drawn per image.

    Each image's parameters come from its own generator (``sample_rain_params``
    for one image), so an image rains the same in any batch; streak lengths are
    scaled from ``reference_height`` to the images' height (see
    [`scale_rain_ranges`][segrobust.rain.scale_rain_ranges]).

    Examples:
        >>> import torch
        >>> rain_preset(torch.rand(2, 3, 32, 48), "heavy", torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 32, 48])
    """
    from segrobust.rain import render_rain, sample_rain_params, scale_rain_ranges

    check_choice(preset, tuple(RAIN_PRESETS), "preset")
    size = (images.shape[-2], images.shape[-1])
    ranges = scale_rain_ranges(preset, size[0], reference_height)
    draws = [sample_rain_params(1, size, ranges, generator=g) for g in image_generators(generator, images.shape[0])]
    params = {key: torch.cat([d[key] for d in draws]).to(images.device) for key in draws[0]}
    return render_rain(images, params, depth)


def rain(
    images: torch.Tensor,
    severity: int = 1,
    generator: Generators = None,
    depth: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """segrobust's depth-aware rain at severity 1 (``light``), 2 (``medium``) or 3 (``heavy``).

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–3 (see [`RAIN_SEVERITY_PRESETS`][segrobust.corruptions.rain.RAIN_SEVERITY_PRESETS]).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.
        depth: optional ``(N, 1, H, W)`` depth in metres (else the ground-plane prior).

    Examples:
        >>> import torch
        >>> rain(torch.rand(1, 3, 32, 48), 3, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 32, 48])
    """
    from segrobust.corruptions._ops import check_corruption_input

    images = check_corruption_input(images, severity, len(RAIN_SEVERITY_PRESETS))
    with torch.no_grad():
        return rain_preset(images.detach(), RAIN_SEVERITY_PRESETS[severity - 1], generator, depth)
