"""Digital corruptions of ImageNet-C: brightness, contrast, elastic transform, pixelation and JPEG compression."""

from __future__ import annotations

import io

import numpy as np
import torch

from segrobust.corruptions._ops import (
    Generators,
    box_resize_weights,
    draw,
    finish,
    gaussian_filter,
    prepare,
    uniform,
)
from segrobust.corruptions.params import SEVERITY_PARAMS

__all__ = ["brightness", "contrast", "elastic_transform", "jpeg_compression", "pixelate"]


def brightness(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Brighter: ``c`` added to the value channel in HSV (hue and saturation kept).

    Every RGB channel is proportional to the value ``v = max(r, g, b)`` at
    fixed hue and saturation, so the HSV round trip of the reference is
    ``x · min(v + c, 1) / v`` (grey ``min(c, 1)`` where ``v = 0``).

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (c = 0.1, 0.2, 0.3, 0.4, 0.5).
        generator: unused (deterministic).

    Examples:
        >>> import torch
        >>> brightness(torch.tensor([[[[0.2]], [[0.4]], [[0.0]]]]), 1).flatten().tolist()
        [0.25, 0.5, 0.0]
    """
    images, x, _ = prepare(images, severity, generator)
    shift = SEVERITY_PARAMS["brightness"][severity - 1]
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + shift).clamp(max=1)
    out = torch.where(value > 0, x * (brighter / value.clamp_min(torch.finfo(x.dtype).tiny)), brighter.expand_as(x))
    return finish(out, images)


def contrast(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Lower contrast: each channel pulled towards its mean, ``(x − μ)·c + μ``.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (c = 0.4, 0.3, 0.2, 0.1, 0.05).
        generator: unused (deterministic).

    Examples:
        >>> import torch
        >>> contrast(torch.tensor([[[[0.0, 1.0]]] * 3]), 1)[0, 0].tolist()
        [[0.30000001192092896, 0.699999988079071]]
    """
    images, x, _ = prepare(images, severity, generator)
    factor = SEVERITY_PARAMS["contrast"][severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return finish((x - mean) * factor + mean, images)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """scipy's ``reflect`` border for integer sample positions (half-sample symmetric)."""
    index = index % (2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


def elastic_transform(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Elastic warping: a smoothed random displacement field, bilinear resampling with a reflected border.

    The generalisation of ``imagecorruptions`` (which the reference's fixed
    224-pixel constants do not allow): displacements drawn uniformly in
    ``±0.005·H`` per pixel, smoothed by a Gaussian of σ = 1 % of each side
    (truncated at 3σ, reflected border) and scaled by α.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (α = 12.5, 16.25, 21.25, 25, 30).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Examples:
        >>> import torch
        >>> elastic_transform(torch.rand(1, 3, 32, 48), 5, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 32, 48])
    """
    images, x, generators = prepare(images, severity, generator)
    alpha = SEVERITY_PARAMS["elastic_transform"][severity - 1]
    n, c, h, w = x.shape
    reach = h * 0.005
    fields = draw(generators, uniform(-reach, reach, (2, h, w)), x.device, x.dtype)  # dx, then dy
    fields = gaussian_filter(fields, (0.01 * h, 0.01 * w), 3.0, "reflect") * alpha
    rows = torch.arange(h, device=x.device, dtype=x.dtype)[:, None] + fields[:, 1]
    cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, :] + fields[:, 0]
    top, left = torch.floor(rows), torch.floor(cols)
    fy, fx = (rows - top)[:, None], (cols - left)[:, None]
    top, left = top.long(), left.long()
    flat = x.flatten(2)

    def sample(r: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        index = (_reflect(r, h) * w + _reflect(q, w)).flatten(1)
        return flat.gather(2, index[:, None, :].expand(n, c, h * w)).view(n, c, h, w)

    upper = (1 - fx) * sample(top, left) + fx * sample(top, left + 1)
    lower = (1 - fx) * sample(top + 1, left) + fx * sample(top + 1, left + 1)
    return finish((1 - fy) * upper + fy * lower, images)


def pixelate(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Pixelation: PIL's box down-sampling to a fraction of the size, then nearest-neighbour up-sampling.

    Computed in floating point (PIL rounds to 8 bits: the results differ by at most half a grey level).

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (down-sampled side: 0.6, 0.5, 0.4, 0.3, 0.25 of the original).
        generator: unused (deterministic).

    Examples:
        >>> import torch
        >>> pixelate(torch.rand(1, 3, 32, 48), 5).shape
        torch.Size([1, 3, 32, 48])
    """
    images, x, _ = prepare(images, severity, generator)
    fraction = SEVERITY_PARAMS["pixelate"][severity - 1]
    h, w = x.shape[-2:]
    small_h, small_w = max(int(h * fraction), 1), max(int(w * fraction), 1)
    down_h = box_resize_weights(h, small_h).to(x)
    down_w = box_resize_weights(w, small_w).to(x)
    small = down_h @ x @ down_w.T
    rows, cols = _nearest_index(small_h, h).to(x.device), _nearest_index(small_w, w).to(x.device)
    return finish(small[..., rows, :][..., cols], images)


def _nearest_index(size_in: int, size_out: int) -> torch.Tensor:
    """Source index of each output pixel of PIL's ``Image.NEAREST`` resize.

    PIL walks the output accumulating the step ``size_in / size_out`` from half
    a step; the accumulated rounding decides ties, so it is replayed as is.
    """
    step, position, index = size_in / size_out, 0.5 * size_in / size_out, []
    for _ in range(size_out):
        index.append(min(int(position), size_in - 1))
        position += step
    return torch.tensor(index)


def jpeg_compression(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """JPEG compression artefacts: each image rounded to 8 bits, saved by PIL at a low quality and decoded.

    The same PIL call as the reference (default 4:2:0 chroma subsampling), on the CPU.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (quality 25, 18, 15, 10, 7).
        generator: unused (deterministic).

    Examples:
        >>> import torch
        >>> jpeg_compression(torch.rand(1, 3, 32, 48), 5).shape
        torch.Size([1, 3, 32, 48])
    """
    from PIL import Image

    images, x, _ = prepare(images, severity, generator)
    quality = SEVERITY_PARAMS["jpeg_compression"][severity - 1]
    pixels = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for array in pixels:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as image:
            decoded.append(np.asarray(image.convert("RGB")))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255
    return finish(out, images)
