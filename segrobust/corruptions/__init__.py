"""Common corruptions: the 15 of ImageNet-C at severities 1–5, and segrobust's rain as a 16th family.

Batched, device-agnostic PyTorch re-implementations of the reference
definitions (Hendrycks & Dietterich, ICLR 2019, in the any-size form of the
``imagecorruptions`` package), with their severity tables as data
([`SEVERITY_PARAMS`][segrobust.corruptions.SEVERITY_PARAMS]). One function per
corruption (`segrobust.corruptions.functional`), a registry
([`CORRUPTIONS`][segrobust.corruptions.CORRUPTIONS]: name → function, family,
severities) and thin modules over them. Randomness comes from CPU
``torch.Generator`` objects, one per image if you want an image's corruption
to be independent of its batch (the benchmark seeds one per image from its
seed and the image's index).

Examples:
    >>> import torch
    >>> from segrobust.corruptions import corrupt
    >>> images = torch.rand(2, 3, 32, 48)
    >>> snowy = corrupt(images, "snow", 3, torch.Generator().manual_seed(0))
    >>> snowy.shape, bool(snowy.min() >= 0 and snowy.max() <= 1)
    (torch.Size([2, 3, 32, 48]), True)
"""

from segrobust.corruptions.augmentation import Corruption, RandomCorruption
from segrobust.corruptions.functional import (
    brightness,
    contrast,
    corrupt,
    defocus_blur,
    elastic_transform,
    fog,
    frost,
    frost_texture,
    gaussian_noise,
    glass_blur,
    impulse_noise,
    jpeg_compression,
    motion_blur,
    pixelate,
    rain,
    rain_preset,
    shot_noise,
    snow,
    zoom_blur,
)
from segrobust.corruptions.params import SEVERITY_PARAMS
from segrobust.corruptions.rain import RAIN_SEVERITY_PRESETS
from segrobust.corruptions.registry import (
    CORRUPTIONS,
    FAMILIES,
    IMAGENET_C,
    CorruptionEntry,
    resolve_corruptions,
    resolve_severities,
)

__all__ = [
    "CORRUPTIONS",
    "FAMILIES",
    "IMAGENET_C",
    "RAIN_SEVERITY_PRESETS",
    "SEVERITY_PARAMS",
    "Corruption",
    "CorruptionEntry",
    "RandomCorruption",
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
    "resolve_corruptions",
    "resolve_severities",
    "shot_noise",
    "snow",
    "zoom_blur",
]
