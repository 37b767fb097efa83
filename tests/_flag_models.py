"""Tiny models the command-line tests name as ``--model _flag_models:NAME`` (tests/ is importable under pytest)."""

from __future__ import annotations

import torch
from torch import nn


class TwoHeads(nn.Module):
    """A model whose output is a dict: ``"seg"`` holds the class logits, ``"edges"`` a 2-channel side output."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.seg = nn.Conv2d(8, num_classes, 1)
        self.edges = nn.Conv2d(8, 2, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.body(images)
        return {"edges": self.edges(hidden), "seg": self.seg(hidden)}


def two_heads(num_classes: int = 11) -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads(num_classes)


def tiny(num_classes: int = 11) -> nn.Module:
    """Two convolutions: fast to run, to trace with torch.compile and to attack."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 1))
