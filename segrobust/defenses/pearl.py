"""PEARL: a derain preprocessor in front of a segmentation model, deployed as one model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["PEARL"]


class PEARL(nn.Module):
    """``segmenter(derainer(x))`` as one ordinary segmentation model.

    The PEARL defence puts a derain network ``D`` in front of a segmentation
    model ``f`` and deploys ``f ∘ D``. The wrapper returns exactly what the
    segmenter returns (a logits tensor, an smp ``aux_params`` tuple, or a
    ``{"out": ...}`` dict), so every attack, the benchmark and ART see one
    plain segmentation model, and attacks differentiate through both parts: no
    gradient masking. Training recipes (``segrobust.defenses.RECIPES["pearl"]``)
    freeze ``f`` and train ``D``.

    Args:
        segmenter: any segmentation model, e.g. an smp model.
        derainer: any image-to-image model mapping ``(N, 3, H, W)`` in
            ``[0, 1]`` to the same shape and range, e.g.
            [`PReNet`][segrobust.defenses.PReNet].

    Examples:
        >>> import torch
        >>> from segrobust.defenses.derain import ResidualUNet
        >>> model = PEARL(torch.nn.Conv2d(3, 4, 1), ResidualUNet(width=8))
        >>> model(torch.rand(1, 3, 16, 16)).shape
        torch.Size([1, 4, 16, 16])
    """

    def __init__(self, segmenter: nn.Module, derainer: nn.Module):
        super().__init__()
        for name, module in (("segmenter", segmenter), ("derainer", derainer)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        self.segmenter = segmenter
        self.derainer = derainer

    def forward(self, images: torch.Tensor) -> Any:
        return self.segmenter(self.derainer(images))

    def derain(self, images: torch.Tensor) -> torch.Tensor:
        """The derainer's output alone (the image the segmenter sees)."""
        return self.derainer(images)
