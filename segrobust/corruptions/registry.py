"""The corruption registry: a plain dict from name to entry (function, family, severities), and name resolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import torch

from segrobust.corruptions import blur, digital, noise, weather
from segrobust.corruptions import rain as _rain

__all__ = [
    "CORRUPTIONS",
    "FAMILIES",
    "IMAGENET_C",
    "CorruptionEntry",
    "resolve_corruptions",
    "resolve_severities",
]


@dataclass(frozen=True)
class CorruptionEntry:
    """One corruption: ``function(images, severity, generator)`` and where it belongs.

    ``severities`` are the levels it defines (1–5 for ImageNet-C, 1–3 for rain).
    """

    name: str
    display_name: str
    family: str
    function: Callable[..., torch.Tensor]
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)


#: Families in report order.
FAMILIES: tuple[str, ...] = ("noise", "blur", "weather", "digital", "rain")

_TABLE = (
    ("gaussian_noise", "Gaussian noise", "noise", noise.gaussian_noise),
    ("shot_noise", "Shot noise", "noise", noise.shot_noise),
    ("impulse_noise", "Impulse noise", "noise", noise.impulse_noise),
    ("defocus_blur", "Defocus blur", "blur", blur.defocus_blur),
    ("glass_blur", "Glass blur", "blur", blur.glass_blur),
    ("motion_blur", "Motion blur", "blur", blur.motion_blur),
    ("zoom_blur", "Zoom blur", "blur", blur.zoom_blur),
    ("snow", "Snow", "weather", weather.snow),
    ("frost", "Frost", "weather", weather.frost),
    ("fog", "Fog", "weather", weather.fog),
    ("brightness", "Brightness", "digital", digital.brightness),
    ("contrast", "Contrast", "digital", digital.contrast),
    ("elastic_transform", "Elastic transform", "digital", digital.elastic_transform),
    ("pixelate", "Pixelate", "digital", digital.pixelate),
    ("jpeg_compression", "JPEG compression", "digital", digital.jpeg_compression),
)

#: Every corruption by name, in report order: the 15 of ImageNet-C, then segrobust's rain.
CORRUPTIONS: dict[str, CorruptionEntry] = {
    name: CorruptionEntry(name, display, family, function) for name, display, family, function in _TABLE
}
CORRUPTIONS["rain"] = CorruptionEntry(
    "rain", "Rain", "rain", _rain.rain, tuple(range(1, len(_rain.RAIN_SEVERITY_PRESETS) + 1))
)

#: The 15 ImageNet-C corruptions (Hendrycks & Dietterich, 2019), whose mean is the usual corruption score.
IMAGENET_C: tuple[str, ...] = tuple(name for name, *_ in _TABLE)


def resolve_corruptions(names: Union[str, list[str], tuple[str, ...], None]) -> list[str]:
    """Corruption names from ``"all"``, ``"none"`` (or ``None``), family names and corruption names.

    A comma-separated string or a list; case-insensitive, ``-`` read as ``_``;
    ``"all"`` is every corruption (the 15 of ImageNet-C and rain), a family
    name (``noise``, ``blur``, ``weather``, ``digital``, ``rain``) its members.
    Names come back in report order, without duplicates.

    Examples:
        >>> resolve_corruptions("fog, noise")
        ['gaussian_noise', 'shot_noise', 'impulse_noise', 'fog']
        >>> len(resolve_corruptions("all")), resolve_corruptions(None)
        (16, [])
        >>> resolve_corruptions("haze")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown corruption 'haze'; expected 'all', 'none', a family (noise, blur, weather, digital, rain) or ...
    """
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    wanted = set()
    for raw in names:
        name = str(raw).strip().lower().replace("-", "_")
        if name in ("", "none"):
            continue
        if name == "all":
            wanted.update(CORRUPTIONS)
        elif name in FAMILIES:
            wanted.update(key for key, entry in CORRUPTIONS.items() if entry.family == name)
        elif name in CORRUPTIONS:
            wanted.add(name)
        else:
            raise ValueError(
                f"unknown corruption {name!r}; expected 'all', 'none', a family ({', '.join(FAMILIES)}) "
                f"or some of: {', '.join(CORRUPTIONS)}"
            )
    return [key for key in CORRUPTIONS if key in wanted]


def resolve_severities(severities: Union[int, str, list[int], tuple[int, ...], None]) -> list[int]:
    """Severity levels in ``1 … 5`` from an int, a list or text like ``"1,3,5"`` / ``"1-5"``; sorted, no duplicates.

    Examples:
        >>> resolve_severities("5,1,3"), resolve_severities("1-5"), resolve_severities(2)
        ([1, 3, 5], [1, 2, 3, 4, 5], [2])
        >>> resolve_severities("0")
        Traceback (most recent call last):
        ...
        ValueError: severities must be ints in 1..5 (e.g. 1,2,3,4,5), got '0'
    """
    items: list[object]
    if severities is None:
        items = []
    elif isinstance(severities, str):
        items = []
        for part in (p.strip() for p in severities.split(",") if p.strip()):
            low, _, high = part.partition("-")
            try:
                items += list(range(int(low), int(high) + 1)) if high else [int(low)]
            except ValueError:
                raise ValueError(f"severities must be ints in 1..5 (e.g. 1,2,3,4,5), got {severities!r}") from None
    elif isinstance(severities, int) and not isinstance(severities, bool):
        items = [severities]
    else:
        items = list(severities)
    for value in items:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ValueError(f"severities must be ints in 1..5 (e.g. 1,2,3,4,5), got {severities!r}")
    if not items:
        raise ValueError("severities is empty; give at least one level in 1..5")
    return sorted(set(items))  # type: ignore[arg-type]
