"""Pure functions of the benchmark: per-image confusion matrices, worst-case selection, seeds, ε text.

Nothing here touches files, models or ``torch.distributed``; the evaluation
loop in `segrobust.benchmark.core` is composed of these.
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction
from typing import Any, Union

import numpy as np
import torch

__all__ = [
    "SMOKE_TEST_PRESET",
    "amplify_perturbation",
    "batch_indices",
    "eps_tag",
    "format_eps",
    "parse_eps",
    "reliable_setting",
    "unit_seed",
    "worst_case_selection",
]


def worst_case_selection(accuracies: torch.Tensor) -> torch.Tensor:
    """Index of the attack with the lowest pixel accuracy, per image; ties go to the first attack.

    Args:
        accuracies: ``(A, N)`` per-image pixel accuracy of ``A`` attacks.

    Examples:
        >>> import torch
        >>> worst_case_selection(torch.tensor([[0.5, 0.2, 0.3], [0.4, 0.2, 0.9]])).tolist()
        [1, 0, 0]
    """
    if accuracies.dim() != 2 or accuracies.shape[0] == 0:
        raise ValueError(f"accuracies must be (A, N) with A >= 1, got {tuple(accuracies.shape)}")
    # argmin's tie-breaking is not documented; make "first attack wins" explicit.
    lowest = accuracies.min(dim=0, keepdim=True).values
    is_lowest = accuracies == lowest
    order = torch.arange(accuracies.shape[0], device=accuracies.device).view(-1, 1).expand_as(accuracies)
    return torch.where(is_lowest, order, torch.full_like(order, accuracies.shape[0])).min(dim=0).values


def unit_seed(seed: int, *parts: Union[int, str]) -> int:
    """A 63-bit seed from a run seed and a path of names/ints (stable across processes and runs).

    Examples:
        >>> unit_seed(0, "naa", 2, 7) == unit_seed(0, "naa", 2, 7) != unit_seed(0, "naa", 2, 8)
        True
    """
    words = [int(seed) & 0xFFFFFFFF]
    for part in parts:
        words.append(zlib.crc32(part.encode()) if isinstance(part, str) else int(part) & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def parse_eps(text: Union[str, float, int]) -> float:
    """An L∞ budget from ``"8/255"``, ``"0.03"`` or a number; it must lie in ``(0, 1]``.

    Examples:
        >>> parse_eps("8/255") == 8 / 255
        True
        >>> parse_eps("8")
        Traceback (most recent call last):
        ...
        ValueError: eps must be in (0, 1] (images are in [0, 1]), got 8.0; for 8 grey levels write 8/255
    """
    raw = text
    if isinstance(text, str):
        text = text.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps {raw!r} is not a number; write e.g. 8/255 or 0.0314") from None
    elif isinstance(text, bool) or not isinstance(text, (int, float)):
        raise ValueError(f"eps must be a number, got {type(text).__name__}")
    else:
        value = float(text)
    if math.isnan(value) or not 0 < value <= 1:
        hint = f"; for {value:g} grey levels write {value:g}/255" if 1 < value <= 255 else ""
        raise ValueError(f"eps must be in (0, 1] (images are in [0, 1]), got {value}{hint}")
    return value


def format_eps(eps: float) -> str:
    """``"8/255"`` when ``eps`` is a whole number of grey levels, else 4 significant digits.

    Examples:
        >>> format_eps(8 / 255), format_eps(0.5 / 255), format_eps(0.01)
        ('8/255', '0.5/255', '0.01')
    """
    levels = eps * 255
    if abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    halves = Fraction(levels).limit_denominator(4)
    if abs(float(halves) - levels) < 1e-6:
        return f"{float(halves):g}/255"
    return f"{eps:.4g}"


def eps_tag(eps: float) -> str:
    """A file-name-safe tag for ``eps`` (grey levels, '.' as 'p').

    Examples:
        >>> eps_tag(8 / 255), eps_tag(0.5 / 255)
        ('eps8', 'eps0p5')
    """
    return "eps" + f"{eps * 255:.6g}".replace(".", "p").replace("-", "m")


def batch_indices(num_items: int, batch_size: int) -> list[list[int]]:
    """Consecutive batches of sample indices; batch ``b`` is the same whatever the number of processes.

    Examples:
        >>> batch_indices(5, 2)
        [[0, 1], [2, 3], [4]]
    """
    return [list(range(start, min(start + batch_size, num_items))) for start in range(0, num_items, batch_size)]


def amplify_perturbation(adversarial: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation mapped to ``[0, 1]`` for display: ``0.5 + (adv − clean) / (2·eps)``, mid-grey = unchanged.

    Examples:
        >>> import torch
        >>> amplify_perturbation(torch.tensor([0.6]), torch.tensor([0.5]), 0.1).tolist()
        [1.0]
    """
    return (0.5 + (adversarial.float() - clean.float()) / (2 * eps)).clamp(0, 1)


#: The reliable preset that is a smoke test: its numbers are said to be no robustness measurement.
SMOKE_TEST_PRESET = "quick"


def reliable_setting(config: dict[str, Any]) -> str:
    """The reliable evaluation of a run's ``config``, in words: preset, members and iterations per image.

    Examples:
        >>> reliable_setting({"reliable_preset": "default", "reliable_iterations_per_image": 300,
        ...                   "reliable_members": ["masked_ce ×150 (apgd, …)", "js ×150 (apgd, …)"]})
        "preset 'default': masked_ce ×150 → js ×150, 300 iterations per image"
        >>> reliable_setting({"reliable_steps": 100})  # a results.json of an earlier version
        'APGD ensemble, 100 iterations per loss'
    """
    members = config.get("reliable_members")
    if not members:
        return f"APGD ensemble, {config.get('reliable_steps')} iterations per loss"
    preset = config.get("reliable_preset")
    chain = " → ".join(member.split(" (", 1)[0] for member in members)
    where = f"preset '{preset}': " if preset else "members "
    return f"{where}{chain}, {config.get('reliable_iterations_per_image')} iterations per image"
