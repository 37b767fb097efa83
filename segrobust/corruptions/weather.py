"""Weather corruptions of ImageNet-C: snow, frost and fog."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from segrobust.corruptions._ops import (
    Generators,
    clipped_zoom,
    draw,
    finish,
    motion_blur_kernel_shifts,
    normal,
    plasma_fractal,
    prepare,
    shifted_sum,
    uniform,
)
from segrobust.corruptions.params import SEVERITY_PARAMS

__all__ = ["FROST_TEXTURE_MEAN", "FROST_TEXTURE_STD", "fog", "frost", "frost_texture", "snow"]

#: Per-channel mean and standard deviation of the procedural frost texture: those measured on the
#: five frost photographs the reference draws from (RGB, in [0, 1]).
FROST_TEXTURE_MEAN: tuple[float, float, float] = (0.572, 0.656, 0.702)
FROST_TEXTURE_STD: tuple[float, float, float] = (0.10, 0.10, 0.10)


def snow(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Falling snow: a zoomed, thresholded Gaussian field streaked by motion blur, over a whitened image.

    The snow layer (drawn per image, zoomed from the centre, zeroed below a
    threshold, motion-blurred at an angle in ``[−135°, −45°]`` and quantised to
    8 bits) is added twice, the second copy rotated by 180°; the image is first
    blended with ``max(x, 1.5·gray + 0.5)``.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (see `SEVERITY_PARAMS["snow"]`).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Examples:
        >>> import torch
        >>> x = torch.full((1, 3, 32, 48), 0.3)
        >>> bool(snow(x, 3, torch.Generator().manual_seed(0)).mean() > 0.3)
        True
    """
    images, x, generators = prepare(images, severity, generator)
    mean, std, zoom, threshold, radius, sigma, blend = SEVERITY_PARAMS["snow"][severity - 1]
    h, w = x.shape[-2:]
    layer = draw(generators, normal(mean, std, (1, h, w)), x.device, x.dtype)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = draw(generators, uniform(-135.0, -45.0, ()), torch.device("cpu")).tolist()
    layer = shifted_sum(layer, [motion_blur_kernel_shifts(radius, sigma, a, layer.shape[-2:]) for a in angles])
    layer = (torch.round(layer * 255) / 255)[..., :h, :w]
    gray = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return finish(x + layer + torch.flip(layer, dims=(-2, -1)), images)


def _needles(seeds: torch.Tensor, angle: float, length: int) -> torch.Tensor:
    """Seeds drawn out into tapering needles of ``length`` pixels along ``angle`` (wrapping around the borders)."""
    out = torch.zeros_like(seeds)
    dy, dx = math.sin(math.radians(angle)), math.cos(math.radians(angle))
    for t in range(length):
        out = out + (1 - t / length) * torch.roll(seeds, (round(t * dy), round(t * dx)), dims=(-2, -1))
    return out


def frost_texture(
    generators: Sequence[Optional[torch.Generator]], size: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A procedural ice-crystal texture ``(N, 3, H, W)`` in ``[0, 1]``, one per generator.

    Crystals are sparse seeds drawn out into tapering needles at several
    random orientations and lengths (a feathery, dendritic look) over a milky
    plasma-fractal veil; the result is tinted and scaled to
    ``FROST_TEXTURE_MEAN`` and
    ``FROST_TEXTURE_STD``. It
    stands in for the reference's frost photographs, which segrobust does not ship.

    Examples:
        >>> import torch
        >>> t = frost_texture([torch.Generator().manual_seed(0)], (32, 48), torch.device("cpu"), torch.float32)
        >>> tuple(t.shape), bool(t.min() >= 0 and t.max() <= 1)
        ((1, 3, 32, 48), True)
    """
    h, w = size
    scale = max(h, w) / 480

    def texture(g: Optional[torch.Generator]) -> torch.Tensor:
        crystals = torch.zeros(h, w, dtype=torch.float64)
        for length in (48, 32, 20, 12, 6):
            steps = max(2, round(length * scale))
            seeds = (torch.rand(h, w, generator=g, dtype=torch.float64) < 0.8 / (steps * 12)).double()
            for angle in (360 * torch.rand(3, generator=g, dtype=torch.float64)).tolist():
                crystals = crystals + _needles(seeds, angle, steps)
        crystals = 1 - torch.exp(-crystals)
        veil = plasma_fractal([g], 1 << (max(h, w, 2) - 1).bit_length(), 1.6, torch.device("cpu"))[0, :h, :w]
        return 0.7 * crystals + 0.3 * veil

    raw = draw(generators, texture, device, torch.float64)
    raw = (raw - raw.mean(dim=(1, 2), keepdim=True)) / raw.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    mean = torch.tensor(FROST_TEXTURE_MEAN, dtype=torch.float64, device=device)[None, :, None, None]
    std = torch.tensor(FROST_TEXTURE_STD, dtype=torch.float64, device=device)[None, :, None, None]
    return (mean + std * raw[:, None]).clamp(0, 1).to(dtype)


def _reference_crops(
    textures: Sequence[torch.Tensor],
    generators: Sequence[Optional[torch.Generator]],
    size: tuple[int, int],
    x: torch.Tensor,
) -> torch.Tensor:
    """The reference's use of frost photographs: one picked per image, enlarged to cover the image ×1.1, cropped at random."""
    h, w = size
    crops = []
    for g in generators:
        texture = textures[int(torch.randint(len(textures), (), generator=g))]
        th, tw = texture.shape[-2:]
        factor = 1.1 * max(1.0, h / th, w / tw)
        resized = F.interpolate(
            texture[None].to(x),
            size=(math.ceil(th * factor), math.ceil(tw * factor)),
            mode="bicubic",
            align_corners=False,
        ).clamp(0, 1)[0]
        top = int(torch.randint(resized.shape[-2] - h, (), generator=g))
        left = int(torch.randint(resized.shape[-1] - w, (), generator=g))
        crops.append(resized[:, top : top + h, left : left + w])
    return torch.stack(crops)


def frost(
    images: torch.Tensor,
    severity: int = 1,
    generator: Generators = None,
    textures: Optional[Sequence[torch.Tensor]] = None,
) -> torch.Tensor:
    """Frost on the lens: ``clip(a·x + b·texture)``, with a heavier texture weight at higher severity.

    The reference blends crops of six frost photographs bundled with it, whose
    provenance (and so licence) is not documented; segrobust does not ship
    them. By default the texture is procedural
    ([`frost_texture`][segrobust.corruptions.weather.frost_texture]), matched
    to the photographs' mean colour and contrast: the weights follow the
    reference exactly, the texture only in its statistics. Pass ``textures``
    (images ``(3, h, w)`` in ``[0, 1]``, e.g. the reference's photographs) to
    follow the reference's cropping instead: one texture per image, enlarged
    bicubically to cover the image (×1.1), cropped at random.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 ((a, b) = (1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.
        textures: optional frost photographs to crop from.

    Examples:
        >>> import torch
        >>> x = torch.rand(1, 3, 32, 48)
        >>> frost(x, 1, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 32, 48])
    """
    images, x, generators = prepare(images, severity, generator)
    image_weight, texture_weight = SEVERITY_PARAMS["frost"][severity - 1]
    size = (x.shape[-2], x.shape[-1])
    if textures is None:
        texture = frost_texture(generators, size, x.device, x.dtype)
    else:
        if not textures or any(not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != 3 for t in textures):
            raise ValueError("textures must be a non-empty sequence of (3, h, w) tensors in [0, 1]")
        texture = _reference_crops(textures, generators, size, x)
    return finish(image_weight * x + texture_weight * texture, images)


def fog(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Fog: a plasma fractal (diamond–square) added to the image, rescaled by ``max / (max + strength)``.

    The fractal is drawn on the CPU per image on the smallest power-of-two
    square covering the image and cropped to its top-left corner.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 ((strength, decay) = (1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Examples:
        >>> import torch
        >>> x = torch.rand(1, 3, 32, 48)
        >>> bool(fog(x, 5, torch.Generator().manual_seed(0)).std() < x.std())
        True
    """
    images, x, generators = prepare(images, severity, generator)
    strength, decay = SEVERITY_PARAMS["fog"][severity - 1]
    h, w = x.shape[-2:]
    side = max(h, w, 3)
    mapsize = 1 if side == 0 else 2 ** (side - 1).bit_length()
    fractal = plasma_fractal(generators, mapsize, decay, torch.device("cpu"))[:, None, :h, :w].to(x.device, x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return finish((x + strength * fractal) * peak / (peak + strength), images)
