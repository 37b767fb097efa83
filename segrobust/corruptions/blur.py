"""Blur corruptions of ImageNet-C: defocus, glass, motion and zoom blur."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from segrobust.corruptions._ops import (
    Generators,
    clipped_zoom,
    draw,
    filter1d,
    filter2d,
    finish,
    gaussian_filter,
    motion_blur_kernel_shifts,
    prepare,
    shifted_sum,
    uniform,
)
from segrobust.corruptions.params import SEVERITY_PARAMS

__all__ = ["defocus_blur", "disk_kernel", "glass_blur", "motion_blur", "zoom_blur"]


def disk_kernel(radius: int, alias_blur: float) -> torch.Tensor:
    """The reference's defocus kernel: a disk of ``radius`` on a grid of at least 17×17, anti-aliased by a Gaussian.

    The Gaussian is ``cv2.GaussianBlur``'s (3×3 up to radius 8, else 5×5, σ =
    ``alias_blur``, reflected border); the kernel sums to one (float64).

    Examples:
        >>> k = disk_kernel(3, 0.1)
        >>> tuple(k.shape), round(float(k.sum()), 6)
        ((17, 17), 1.0)
    """
    half, taps = (8, 3) if radius <= 8 else (radius, 5)
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    centre = (taps - 1) / 2
    gauss = torch.exp(-((torch.arange(taps, dtype=torch.float64) - centre) ** 2) / (2 * alias_blur**2))
    gauss = gauss / gauss.sum()
    blurred = filter1d(filter1d(disk[None, None], gauss, 2, "reflect101"), gauss, 3, "reflect101")
    return blurred[0, 0]


def defocus_blur(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """An out-of-focus lens: each channel filtered with an anti-aliased disk (OpenCV's reflected border).

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (disk radius 3, 4, 6, 8, 10 pixels; anti-aliasing σ 0.1, then 0.5).
        generator: unused (the corruption is deterministic); accepted for a uniform signature.

    Examples:
        >>> import torch
        >>> x = torch.rand(1, 3, 32, 32)
        >>> bool(defocus_blur(x, 3).std() < x.std())
        True
    """
    images, x, _ = prepare(images, severity, generator)
    radius, alias_blur = SEVERITY_PARAMS["defocus_blur"][severity - 1]
    return finish(filter2d(x, disk_kernel(radius, alias_blur)), images)


def _shuffle_index(
    height: int, width: int, delta: int, passes: int, generator: Optional[torch.Generator]
) -> torch.Tensor:
    """Source pixel of every position after the reference's local pixel swaps (flat indices, row-major).

    The reference visits pixels from the bottom-right corner backwards and
    "swaps" each with a neighbour at offset ``(dy, dx) ∈ [−δ, δ)²``. Its swap
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` goes through NumPy views, so it
    copies the neighbour into the pixel and leaves the neighbour as it was;
    that is what ImageNet-C's images show, and what is replayed here, in
    order (each step depends on the previous ones), on an index list.
    """
    rows, cols = np.arange(height - delta, delta, -1), np.arange(width - delta, delta, -1)
    source = list(range(height * width))
    if rows.size == 0 or cols.size == 0:
        return torch.arange(height * width)
    start = (rows[:, None] * width + cols[None, :]).ravel()
    visits = start.tolist()
    for _ in range(passes):
        offsets = torch.randint(-delta, delta, (rows.size, cols.size, 2), generator=generator).numpy()
        targets = (start + offsets[..., 1].ravel() * width + offsets[..., 0].ravel()).tolist()  # (dx, dy) per pixel
        for a, b in zip(visits, targets):
            source[a] = source[b]
    return torch.tensor(source)


def glass_blur(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Frosted glass: Gaussian blur, local pixel shuffling, Gaussian blur again.

    As the reference, the first blur is quantised to 8 bits (truncated) before
    the swaps; the blurs are ``skimage.filters.gaussian`` (nearest border,
    truncated at 4σ). The swaps are inherently sequential and run on the CPU
    (about 0.1 s per pass for a 360×480 image).

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 ((σ, largest offset, passes) = (0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Examples:
        >>> import torch
        >>> glass_blur(torch.rand(2, 3, 32, 48), 1, torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 32, 48])
    """
    images, x, generators = prepare(images, severity, generator)
    sigma, delta, passes = SEVERITY_PARAMS["glass_blur"][severity - 1]
    n, c, h, w = x.shape
    x = torch.floor(gaussian_filter(x, (sigma, sigma), 4.0, "nearest").clamp(0, 1) * 255) / 255
    source = draw(generators, lambda g: _shuffle_index(h, w, delta, passes, g), x.device)
    x = x.flatten(2).gather(2, source[:, None, :].expand(n, c, h * w)).view(n, c, h, w)
    return finish(gaussian_filter(x, (sigma, sigma), 4.0, "nearest"), images)


def motion_blur(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Camera motion: a one-sided Gaussian-weighted streak at a random angle in ``[−45°, 45°]`` per image.

    The reference's NumPy rendering of ImageMagick's ``-motion-blur radius×σ+angle``:
    tap ``i`` of ``2·radius + 1`` moves the image ``i`` pixels along the angle
    (edge pixels repeat) with weight ``∝ exp(−i²/2σ²)``.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 ((radius, σ) = (10, 3), (15, 5), (15, 8), (15, 12), (20, 15)).
        generator: a CPU ``torch.Generator`` for the batch, or one per image (draws the angle).

    Examples:
        >>> import torch
        >>> motion_blur(torch.rand(1, 3, 32, 48), 2, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 32, 48])
    """
    images, x, generators = prepare(images, severity, generator)
    radius, sigma = SEVERITY_PARAMS["motion_blur"][severity - 1]
    angles = draw(generators, uniform(-45.0, 45.0, ()), torch.device("cpu")).tolist()
    shifts = [motion_blur_kernel_shifts(radius, sigma, angle, x.shape[-2:]) for angle in angles]
    return finish(shifted_sum(x, shifts), images)


def zoom_blur(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Zooming during the exposure: the mean of the image and its central zooms by factors ``1, 1 + step, … < stop``.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (zooms up to 1.10, 1.15, 1.20, 1.24, 1.30).
        generator: unused (deterministic).

    Examples:
        >>> import torch
        >>> x = torch.rand(1, 3, 32, 48)
        >>> bool((zoom_blur(x, 5) - x).abs().mean() > 0.05)
        True
    """
    images, x, _ = prepare(images, severity, generator)
    stop, step = SEVERITY_PARAMS["zoom_blur"][severity - 1]
    factors = np.arange(1, stop, step)
    h, w = x.shape[-2:]
    total = torch.zeros_like(x)
    for factor in factors:
        total = total + clipped_zoom(x, float(factor))[..., :h, :w]
    return finish((x + total) / (len(factors) + 1), images)
