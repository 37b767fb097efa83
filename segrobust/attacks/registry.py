"""The attacks the benchmark, the command line and the training recipes build by name.

[`ATTACKS`][segrobust.attacks.registry.ATTACKS] is a plain dict (as smp's
tables are) from a short key, what users type after ``--attacks``, to an
[`AttackEntry`][segrobust.attacks.registry.AttackEntry]: the attack class and
how the benchmark reports it. Every attack has one constructor signature,
``(model, eps, alpha, steps, *, random_start, ignore_index, …)``, so building
one is the same call for all (no per-attack adapter). Add an attack with one
line::

    ATTACKS["mine"] = AttackEntry(MyAttack, "Mine", "what it does")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from segrobust.attacks.ama import AMA
from segrobust.attacks.cospgd import CosPGD
from segrobust.attacks.ensemble import ReliableEnsemble
from segrobust.attacks.eroseg import EroSeg
from segrobust.attacks.naa import NAA
from segrobust.attacks.rain import RainAttack
from segrobust.attacks.segpgd import SegPGD
from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT

__all__ = ["ATTACKS", "AttackEntry"]


@dataclass(frozen=True)
class AttackEntry:
    """One attack of [`ATTACKS`][segrobust.attacks.registry.ATTACKS]: its class and how the benchmark reports it.

    ``build(model, eps, alpha, steps, **kwargs)`` calls ``attack_class`` with
    the entry's ``defaults`` updated by ``kwargs``. ``positive`` marks an
    attack that *helps* the model (AMA): it is reported in its own row and
    never enters the worst case. ``in_worst_case=False`` keeps an attack out of
    the per-image worst case (RainAttack: its rain is not inside the L∞ ball
    the other attacks share; by default ``not positive``). ``accepts_depth``
    attacks are called with ``depth=`` when the data has one. ``reliable``
    marks the reliable ensemble: it is built with the benchmark's
    ``reliable_preset`` and ``reliable_steps``, called with
    ``return_stats=True``, reports one row per member and is left out of
    ``"short"``. ``default=False`` keeps an attack out of ``"all"`` (it runs only when named).

    Examples:
        >>> entry = ATTACKS["naa"]
        >>> entry.display_name, ATTACKS["ama"].display_name
        ('NAA', 'AMA (positive)')
        >>> from torch import nn
        >>> entry.build(nn.Conv2d(3, 2, 1), 8 / 255, None, 4).alpha == 2.5 * (8 / 255) / 4
        True
    """

    attack_class: Callable[..., Any]
    name: str
    description: str = ""
    positive: bool = False
    in_worst_case: Optional[bool] = None
    accepts_depth: bool = False
    reliable: bool = False
    default: bool = True
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not callable(self.attack_class):
            raise TypeError(f"attack_class must be a class or callable, got {type(self.attack_class).__name__}")
        if self.in_worst_case is None:
            object.__setattr__(self, "in_worst_case", not self.positive)

    @property
    def display_name(self) -> str:
        return f"{self.name} (positive)" if self.positive else self.name

    def build(
        self, model: nn.Module, eps: float = 8 / 255, alpha: Optional[float] = None, steps: int = 10, **kwargs: Any
    ) -> Any:
        """The attack on ``model``: ``attack_class(model, eps, alpha, steps, **{**defaults, **kwargs})``."""
        return self.attack_class(model, eps, alpha, steps, **{**self.defaults, **kwargs})


ATTACKS: dict[str, AttackEntry] = {
    "reliable": AttackEntry(
        ReliableEnsemble,
        "Reliable ensemble",
        "the reliable evaluation: a preset of long APGD runs (--reliable-preset), worst case per image and "
        "greedy worst-case mIoU (after SEA, Croce et al. 2024)",
        reliable=True,
    ),
    "naa": AttackEntry(
        NAA, "NAA", "PGD ascending the masked pixel cross-entropy (PEARL's Negative Adversarial Attack)"
    ),
    "segpgd": AttackEntry(
        SegPGD, "SegPGD", "PGD re-weighting correct and wrong pixels over the steps (Gu et al. 2022)"
    ),
    "cospgd": AttackEntry(CosPGD, "CosPGD", "PGD weighting pixels by softmax/label cosine (Agnihotri & Keuper 2024)"),
    "eroseg": AttackEntry(EroSeg, "EroSeg", "PGD eroding confident regions from their weak points (Song et al. 2026)"),
    "ama": AttackEntry(
        AMA,
        "AMA",
        "PGD descending the loss: the image the model segments best (PEARL's Auxiliary Mirror Attack)",
        positive=True,
    ),
    "rain_attack": AttackEntry(
        RainAttack,
        "RainAttack",
        "adversarial 'medium' rain parameters plus an L∞ ε perturbation (the PEARL threat)",
        in_worst_case=False,
        accepts_depth=True,
        # the preset's streak lengths are tuned for 360-pixel-high images: scaled to the data's height
        defaults={"ranges": "medium", "reference_height": PRESET_REFERENCE_HEIGHT},
    ),
}
"""Attacks in report order, by key (a plain dict; add your own entry)."""
