"""The functional core: one function per corruption, and ``corrupt`` to call any of them by name.

Every function takes ``(images, severity, generator)``: images ``(N, 3, H, W)``
in ``[0, 1]`` of any float dtype on any device, a severity level, and a CPU
``torch.Generator`` for the batch or one per image; it returns new images of
the same shape, dtype and device in ``[0, 1]`` (inputs are never modified, the
output is detached: the corruptions are evaluation conditions, not
differentiable layers). With one generator per image, an image's corruption
does not depend on the batch it is in.
"""

from __future__ import annotations

import torch

from segrobust.corruptions._ops import Generators
from segrobust.corruptions.blur import defocus_blur, glass_blur, motion_blur, zoom_blur
from segrobust.corruptions.digital import brightness, contrast, elastic_transform, jpeg_compression, pixelate
from segrobust.corruptions.noise import gaussian_noise, impulse_noise, shot_noise
from segrobust.corruptions.rain import rain, rain_preset
from segrobust.corruptions.registry import CORRUPTIONS
from segrobust.corruptions.weather import fog, frost, frost_texture, snow
from segrobust.validation import check_choice

__all__ = [
    "brightness",
    "contrast",
    "corrupt",
    "defocus_blur",
    "elastic_transform",
    "fog",
    "frost",
    "frost_texture",
    "gaussian_noise",
    "glass_blur",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "rain",
    "rain_preset",
    "shot_noise",
    "snow",
    "zoom_blur",
]


def corrupt(images: torch.Tensor, name: str, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Apply corruption ``name`` (a key of [`CORRUPTIONS`][segrobust.corruptions.CORRUPTIONS]) at ``severity``.

    Examples:
        >>> import torch
        >>> images = torch.rand(2, 3, 32, 48)
        >>> generators = [torch.Generator().manual_seed(i) for i in range(2)]
        >>> foggy = corrupt(images, "fog", 3, generators)
        >>> foggy.shape, torch.equal(foggy[1:], corrupt(images[1:], "fog", 3, generators[1:]))
        (torch.Size([2, 3, 32, 48]), False)
        >>> torch.equal(foggy[1:], corrupt(images[1:], "fog", 3, [torch.Generator().manual_seed(1)]))
        True
    """
    check_choice(name, tuple(CORRUPTIONS), "name")
    return CORRUPTIONS[name].function(images, severity, generator)
