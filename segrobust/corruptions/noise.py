"""Noise corruptions of ImageNet-C: Gaussian, shot (Poisson) and impulse (salt-and-pepper) noise."""

from __future__ import annotations

import torch

from segrobust.corruptions._ops import Generators, draw, finish, prepare
from segrobust.corruptions.params import SEVERITY_PARAMS

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise"]


def gaussian_noise(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Additive Gaussian noise: ``clip(x + σ·ε)``, ``ε ~ N(0, 1)`` per pixel and channel.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]`` (any float dtype, any device).
        severity: 1–5 (σ = 0.08, 0.12, 0.18, 0.26, 0.38).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Returns:
        The corrupted images, same shape, dtype and device, in ``[0, 1]``.

    Examples:
        >>> import torch
        >>> x = torch.full((1, 3, 32, 32), 0.5)
        >>> y = gaussian_noise(x, 1, torch.Generator().manual_seed(0))
        >>> round(float((y - x).std()), 2)
        0.08
    """
    images, x, generators = prepare(images, severity, generator)
    sigma = SEVERITY_PARAMS["gaussian_noise"][severity - 1]
    noise = draw(generators, lambda g: torch.randn(x.shape[1:], generator=g, dtype=torch.float64), x.device, x.dtype)
    return finish(x + sigma * noise, images)


def shot_noise(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Photon (Poisson) noise: ``clip(Poisson(λ·x) / λ)``, fewer photons ``λ`` at higher severity.

    The Poisson draws are made on the CPU (in float64) from each image's generator.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (λ = 60, 25, 12, 5, 3).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Examples:
        >>> import torch
        >>> y = shot_noise(torch.full((1, 3, 8, 8), 0.5), 5, torch.Generator().manual_seed(0))
        >>> bool(((y * 3).round() == y * 3).all())  # multiples of 1/λ
        True
    """
    images, x, generators = prepare(images, severity, generator)
    photons = SEVERITY_PARAMS["shot_noise"][severity - 1]
    rates = (x.detach().double() * photons).cpu()
    counts = torch.stack([torch.poisson(rates[i], generator=g) for i, g in enumerate(generators)])
    return finish((counts / photons).to(x.device, x.dtype), images)


def impulse_noise(images: torch.Tensor, severity: int = 1, generator: Generators = None) -> torch.Tensor:
    """Salt-and-pepper noise: each value becomes 0 or 1 (equally likely) with probability ``amount``.

    As ``skimage.util.random_noise(mode="s&p")``, which the reference calls:
    channels are hit independently.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        severity: 1–5 (amount = 0.03, 0.06, 0.09, 0.17, 0.27).
        generator: a CPU ``torch.Generator`` for the batch, or one per image.

    Examples:
        >>> import torch
        >>> y = impulse_noise(torch.full((1, 3, 64, 64), 0.5), 5, torch.Generator().manual_seed(0))
        >>> round(float((y != 0.5).float().mean()), 2)
        0.27
    """
    images, x, generators = prepare(images, severity, generator)
    amount = SEVERITY_PARAMS["impulse_noise"][severity - 1]
    hits = draw(generators, lambda g: torch.rand((2, *x.shape[1:]), generator=g, dtype=torch.float64), x.device)
    flipped, salted = hits[:, 0] <= amount, hits[:, 1] <= 0.5
    out = torch.where(flipped & salted, torch.ones_like(x), x)
    out = torch.where(flipped & ~salted, torch.zeros_like(x), out)
    return finish(out, images)
