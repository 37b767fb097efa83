"""Severity tables of the ImageNet-C corruptions, as data.

Copied from the reference definitions: Hendrycks & Dietterich, "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019
(``ImageNet-C/create_c/make_imagenet_c.py`` in github.com/hendrycks/robustness,
Apache-2.0), in the form generalised to images of any size by Michaelis et al.,
"Benchmarking Robustness in Object Detection: Autonomous Driving when Winter is
Coming", 2019 (the ``imagecorruptions`` package, github.com/bethgelab/imagecorruptions,
Apache-2.0). Entry ``s − 1`` of each tuple is severity ``s``. Pixel values in
the comments are on the reference's 0–255 scale; segrobust works in ``[0, 1]``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

__all__ = ["SEVERITY_PARAMS"]

#: Per corruption, the five severity levels' parameters (see each function's docstring for their meaning).
SEVERITY_PARAMS: Mapping[str, tuple[Any, ...]] = MappingProxyType(
    {
        # σ of additive Gaussian noise.
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        # photons per unit intensity λ: x ← Poisson(λ·x) / λ.
        "shot_noise": (60, 25, 12, 5, 3),
        # fraction of values replaced by salt or pepper.
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        # (disk radius, σ of the anti-aliasing blur of the disk).
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        # (σ of the Gaussian blur, largest shuffle offset, shuffle passes).
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        # (radius, σ) of the motion kernel.
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        # zoom factors averaged: numpy.arange(1, stop, step) as (stop, step).
        "zoom_blur": ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        # (mean, σ of the snow field, zoom, threshold, motion radius, motion σ, blend of the whitened image).
        "snow": (
            (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
            (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
            (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
        ),
        # (weight of the image, weight of the frost texture).
        "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        # (strength of the plasma fractal, its decay per octave).
        "fog": ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
        # added to the HSV value channel.
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        # factor on the deviation from the per-channel mean.
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        # α, the gain of the smoothed displacement field.
        "elastic_transform": (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12),
        # side of the down-sampled image, as a fraction of the original.
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        # JPEG quality.
        "jpeg_compression": (25, 18, 15, 10, 7),
    }
)
