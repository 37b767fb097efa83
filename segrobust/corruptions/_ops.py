"""Building blocks of the corruptions: per-image random draws, filters and resampling.

Every random number is drawn on the CPU from one ``torch.Generator`` per image
(in float64), then moved to the images' device: an image's corruption depends
only on its own generator, never on the batch it is in or on the device.
Filters and resampling follow the reference implementations' conventions
(scipy's and OpenCV's borders, scipy's zoom grid, PIL's box filter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from segrobust.validation import check_images, check_int

__all__ = [
    "Generators",
    "box_resize_weights",
    "check_corruption_input",
    "clipped_zoom",
    "draw",
    "filter1d",
    "filter2d",
    "finish",
    "gaussian_filter",
    "gaussian_kernel1d",
    "image_generators",
    "motion_blur_kernel_shifts",
    "plasma_fractal",
    "prepare",
    "shifted_sum",
    "working_dtype",
]

#: One generator for the whole batch (drawn image after image), one per image, or ``None`` (torch's default).
Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def working_dtype(images: torch.Tensor) -> torch.dtype:
    """float64 for float64 images, float32 otherwise (float16 / bfloat16 are computed in float32)."""
    return torch.float64 if images.dtype == torch.float64 else torch.float32


def check_corruption_input(images: object, severity: object, levels: int = 5) -> torch.Tensor:
    """The shared checks: images ``(N, 3, H, W)`` in ``[0, 1]`` and an int severity in ``1 … levels``."""
    images = check_images(images, hint="corruptions take images in [0, 1], before any normalisation")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got shape {tuple(images.shape)}")
    severity = check_int(severity, "severity", low=1)
    if severity > levels:
        raise ValueError(f"severity must be an int in 1..{levels}, got {severity}")
    return images


def prepare(
    images: object, severity: object, generator: Generators, levels: int = 5
) -> tuple[torch.Tensor, torch.Tensor, list[Optional[torch.Generator]]]:
    """Checked ``images``, a detached copy in the working dtype, and one generator per image."""
    images = check_corruption_input(images, severity, levels)
    return images, images.detach().to(working_dtype(images)), image_generators(generator, images.shape[0])


def finish(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``out`` clipped to ``[0, 1]`` in the dtype of the input ``images``."""
    return out.clamp(0, 1).to(images.dtype)


def image_generators(generator: Generators, n: int) -> list[Optional[torch.Generator]]:
    """One CPU generator (or ``None``) per image.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> len(image_generators(g, 3)), image_generators(None, 2)
        (3, [None, None])
    """
    if generator is None or isinstance(generator, torch.Generator):
        generators = [generator] * n
    elif isinstance(generator, Sequence) and not isinstance(generator, str):
        generators = list(generator)
        if len(generators) != n:
            raise ValueError(f"generator must be one torch.Generator or one per image ({n}), got {len(generators)}")
    else:
        raise TypeError(
            f"generator must be a torch.Generator, a sequence of them or None, got {type(generator).__name__}"
        )
    for g in generators:
        if g is not None and (not isinstance(g, torch.Generator) or g.device.type != "cpu"):
            raise TypeError("generator must hold CPU torch.Generator objects (draws are made on the CPU, then moved)")
    return generators


def draw(
    generators: Sequence[Optional[torch.Generator]],
    sample: Callable[[Optional[torch.Generator]], torch.Tensor],
    device: torch.device,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``sample(generator)`` for each image, stacked on a new first dimension and moved to ``device``."""
    values = torch.stack([sample(g) for g in generators])
    return values.to(device=device, dtype=dtype or values.dtype)


def uniform(low: float, high: float, shape: Sequence[int]) -> Callable[[Optional[torch.Generator]], torch.Tensor]:
    """A sampler of ``numpy.random.uniform(low, high, shape)``: ``low + (high − low)·U[0, 1)`` in float64."""
    return lambda g: low + (high - low) * torch.rand(tuple(shape), generator=g, dtype=torch.float64)


def normal(mean: float, std: float, shape: Sequence[int]) -> Callable[[Optional[torch.Generator]], torch.Tensor]:
    """A sampler of ``numpy.random.normal(mean, std, shape)`` in float64."""
    return lambda g: mean + std * torch.randn(tuple(shape), generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------- filters
def _border_index(n: int, radius: int, mode: str, device: torch.device) -> torch.Tensor:
    """Indices of ``n`` samples padded by ``radius`` on each side.

    ``"nearest"``: a a | a b c d | d d (scipy ``nearest``, OpenCV ``BORDER_REPLICATE``);
    ``"reflect"``: b a | a b c d | d c (scipy ``reflect``, half-sample symmetric);
    ``"reflect101"``: c b | a b c d | c b (OpenCV's default ``BORDER_REFLECT_101``, torch ``reflect``).
    """
    index = torch.arange(-radius, n + radius, device=device)
    if mode == "nearest" or n == 1:
        return index.clamp(0, n - 1)
    if mode == "reflect":
        index = index % (2 * n)
        return torch.where(index >= n, 2 * n - 1 - index, index)
    if mode == "reflect101":
        index = index.abs() % (2 * n - 2)
        return torch.where(index >= n, 2 * n - 2 - index, index)
    raise ValueError(f"unknown border mode {mode!r}")


def gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    """scipy's Gaussian weights: radius ``int(truncate·σ + 0.5)``, ``exp(−x²/(2σ²))`` normalised (float64).

    Examples:
        >>> gaussian_kernel1d(1.0, 1.0).numel(), round(float(gaussian_kernel1d(1.0, 1.0).sum()), 12)
        (3, 1.0)
    """
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 / float(sigma) ** 2 * x**2)
    return weights / weights.sum()


def filter1d(x: torch.Tensor, weights: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """Correlate ``x`` with odd-length ``weights`` along ``dim``, the border extended by ``mode``."""
    radius = (weights.numel() - 1) // 2
    n = x.shape[dim]
    padded = x.index_select(dim, _border_index(n, radius, mode, x.device))
    weights = weights.to(x.dtype).tolist()
    out = weights[0] * padded.narrow(dim, 0, n)
    for k in range(1, len(weights)):
        out = out + weights[k] * padded.narrow(dim, k, n)
    return out


def gaussian_filter(x: torch.Tensor, sigma: tuple[float, float], truncate: float, mode: str) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over the last two dimensions (σ per dimension)."""
    x = filter1d(x, gaussian_kernel1d(sigma[0], truncate), x.dim() - 2, mode)
    return filter1d(x, gaussian_kernel1d(sigma[1], truncate), x.dim() - 1, mode)


def filter2d(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect101") -> torch.Tensor:
    """``cv2.filter2D`` of each channel of ``(N, C, H, W)`` with an odd square ``kernel`` (correlation, centred)."""
    radius = (kernel.shape[-1] - 1) // 2
    n, c, h, w = x.shape
    padded = x.index_select(2, _border_index(h, radius, mode, x.device))
    padded = padded.index_select(3, _border_index(w, radius, mode, x.device))
    out = F.conv2d(padded.reshape(n * c, 1, *padded.shape[-2:]), kernel.to(x)[None, None])
    return out.reshape(n, c, h, w)


# ----------------------------------------------------------------------------- motion blur
def motion_blur_kernel_shifts(
    radius: int, sigma: float, angle: float, size: tuple[int, int]
) -> list[tuple[float, int, int]]:
    """``(weight, dy, dx)`` of each tap of the reference's motion blur (a one-sided Gaussian along ``angle``).

    The reference stops at the first tap that leaves the image (without
    renormalising the weights); so does this.

    Examples:
        >>> [(round(w, 3), dy, dx) for w, dy, dx in motion_blur_kernel_shifts(1, 1.0, 0.0, (32, 32))]
        [(0.574, 0, 0), (0.348, 0, -1), (0.078, 0, -2)]
    """
    width = 2 * radius + 1
    taps = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    taps = taps / taps.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    shifts = []
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= size[0] or abs(dx) >= size[1]:
            break
        shifts.append((float(taps[i]), dy, dx))
    return shifts


def shifted_sum(x: torch.Tensor, shifts: Sequence[Sequence[tuple[float, int, int]]]) -> torch.Tensor:
    """``Σ_i w_i · x[clamp(y − dy_i), clamp(x − dx_i)]`` per image (the edge pixel repeats past the border).

    ``shifts[n]`` lists image ``n``'s taps ``(w, dy, dx)``; images may have different numbers of taps.
    """
    n, c, h, w = x.shape
    taps = max(len(s) for s in shifts)
    weights = torch.zeros(n, taps, dtype=torch.float64)
    offsets = torch.zeros(n, taps, 2, dtype=torch.long)
    for i, image_shifts in enumerate(shifts):
        for t, (weight, dy, dx) in enumerate(image_shifts):
            weights[i, t] = weight
            offsets[i, t] = torch.tensor([dy, dx])
    weights, offsets = weights.to(x.device, x.dtype), offsets.to(x.device)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    out = torch.zeros_like(x)
    for t in range(taps):
        row_index = (rows[None] - offsets[:, t, :1]).clamp(0, h - 1)  # (N, H)
        col_index = (cols[None] - offsets[:, t, 1:]).clamp(0, w - 1)  # (N, W)
        moved = x.gather(2, row_index[:, None, :, None].expand(n, c, h, w))
        moved = moved.gather(3, col_index[:, None, None, :].expand(n, c, h, w))
        out = out + weights[:, t, None, None, None] * moved
    return out


# ----------------------------------------------------------------------------- resampling
def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference's ``clipped_zoom``: the central ``⌈H/z⌉ × ⌈W/z⌉`` crop zoomed by ``z``.

    Bilinear on scipy's grid (``scipy.ndimage.zoom(order=1)``: corners
    aligned, output size ``round(crop·z)``); the result is at least ``H × W``
    and is not trimmed (callers keep the top-left ``H × W`` as the reference does).
    """
    h, w = x.shape[-2:]
    ch, cw = int(np.ceil(h / float(zoom))), int(np.ceil(w / float(zoom)))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    size = (round(ch * zoom), round(cw * zoom))  # Python's round, as scipy's zoom
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=True)


def box_resize_weights(size_in: int, size_out: int) -> torch.Tensor:
    """``(size_out, size_in)`` weights of PIL's ``Image.BOX`` resampling (support 0.5 scaled, pixels counted whole).

    Examples:
        >>> box_resize_weights(4, 2).tolist()
        [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    """
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    for j in range(size_out):
        center = (j + 0.5) * scale
        low, high = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), size_in)
        for i in range(low, high):
            offset = (i - center + 0.5) / filterscale
            weights[j, i] = 1.0 if -0.5 < offset <= 0.5 else 0.0
        weights[j] /= weights[j].sum()
    return weights


# ----------------------------------------------------------------------------- plasma fractal
def plasma_fractal(
    generators: Sequence[Optional[torch.Generator]], mapsize: int, wibbledecay: float, device: torch.device
) -> torch.Tensor:
    """The reference's diamond-square height map, one ``mapsize × mapsize`` map per generator, in ``[0, 1]`` (float64).

    Each refinement adds ``wibble · U(−wibble, wibble)`` (``wibble`` starts at
    100 and is divided by ``wibbledecay`` per octave), exactly as the reference does.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    maps = torch.zeros(len(generators), mapsize, mapsize, dtype=torch.float64, device=device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * draw(generators, uniform(-wibble, wibble, total.shape[1:]), device)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        squares = corners + torch.roll(corners, -1, dims=1)
        squares = squares + torch.roll(squares, -1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        left = (centres + torch.roll(centres, 1, dims=1)) + (corners + torch.roll(corners, -1, dims=2))
        maps[:, ::step, half::step] = wibbled_mean(left)
        top = (centres + torch.roll(centres, 1, dims=2)) + (corners + torch.roll(corners, -1, dims=1))
        maps[:, half::step, ::step] = wibbled_mean(top)
        step //= 2
        wibble /= wibbledecay
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / maps.amax(dim=(1, 2), keepdim=True)
