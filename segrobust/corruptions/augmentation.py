"""Thin module classes over the functional core: a fixed corruption, and a random one per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from segrobust.corruptions._ops import Generators, image_generators
from segrobust.corruptions.functional import corrupt
from segrobust.corruptions.registry import CORRUPTIONS, resolve_corruptions, resolve_severities
from segrobust.validation import check_choice, check_int, check_unit_interval

__all__ = ["Corruption", "RandomCorruption"]


class Corruption(nn.Module):
    """One corruption at one severity, as a module (see [`corrupt`][segrobust.corruptions.corrupt]).

    Args:
        name: a key of [`CORRUPTIONS`][segrobust.corruptions.CORRUPTIONS].
        severity: a level the corruption defines (1–5; 1–3 for ``"rain"``).

    Examples:
        >>> import torch
        >>> fog = Corruption("fog", 3)
        >>> fog(torch.rand(2, 3, 32, 48), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 32, 48])
    """

    def __init__(self, name: str, severity: int = 1) -> None:
        super().__init__()
        self.name = check_choice(name, tuple(CORRUPTIONS), "name")
        self.severity = check_int(severity, "severity", low=1)
        if severity not in CORRUPTIONS[name].severities:
            raise ValueError(
                f"severity of {name!r} must be one of {list(CORRUPTIONS[name].severities)}, got {severity}"
            )

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        return corrupt(images, self.name, self.severity, generator)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, severity={self.severity}"


class RandomCorruption(nn.Module):
    """With probability ``p`` per image, a corruption and a severity drawn uniformly from those given.

    For training with corruptions (or a quick mixed test set). Each image's
    choice and corruption come from its own generator when one per image is given.

    Args:
        corruptions: names, families, ``"all"`` (see [`resolve_corruptions`][segrobust.corruptions.resolve_corruptions]).
        severities: levels to draw from (levels a corruption lacks, e.g. 4–5 for rain, are skipped for it).
        p: probability of corrupting each image.

    Examples:
        >>> import torch
        >>> aug = RandomCorruption("noise,blur", severities=[1, 2], p=1.0)
        >>> aug(torch.rand(3, 3, 32, 48), torch.Generator().manual_seed(0)).shape
        torch.Size([3, 3, 32, 48])
    """

    def __init__(
        self,
        corruptions: Union[str, Sequence[str]] = "all",
        severities: Union[int, str, Sequence[int]] = (1, 2, 3, 4, 5),
        p: float = 1.0,
    ) -> None:
        super().__init__()
        levels = resolve_severities(severities)  # type: ignore[arg-type]
        self.choices = [
            (name, level)
            for name in resolve_corruptions(corruptions)  # type: ignore[arg-type]
            for level in levels
            if level in CORRUPTIONS[name].severities
        ]
        if not self.choices:
            raise ValueError(f"no corruption defines the severities {levels} among {corruptions!r}")
        self.p = check_unit_interval(p, "p", allow_zero=True)

    def forward(self, images: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        generators = image_generators(generator, images.shape[0])
        out = images.detach().clone()
        for i, g in enumerate(generators):
            if float(torch.rand((), generator=g)) >= self.p:
                continue
            name, level = self.choices[int(torch.randint(len(self.choices), (), generator=g))]
            out[i : i + 1] = corrupt(images[i : i + 1], name, level, [g] if g is not None else None)
        return out

    def extra_repr(self) -> str:
        return f"choices={len(self.choices)}, p={self.p}"
