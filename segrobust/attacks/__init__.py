"""Segmentation attacks as torchattacks-compatible classes.

All attacks share [`SegAttack`][segrobust.attacks.SegAttack] (validation, masks with ``ignore_index``,
per-pixel targeted modes, best-iterate tracking) and the pure functions of
[`segrobust.attacks.functional`][segrobust.attacks.functional].
"""

from segrobust.attacks import functional
from segrobust.attacks.ama import AMA
from segrobust.attacks.apgd import APGD, APGDStats
from segrobust.attacks.attack_api import TORCHATTACKS_AVAILABLE, StandaloneAttack
from segrobust.attacks.base import (
    AttackStats,
    IterateTracker,
    LinfSegAttack,
    NonFiniteGradientError,
    NonFiniteLogitsError,
    SafeAttributeMixin,
    SegAttack,
)
from segrobust.attacks.cospgd import CosPGD
from segrobust.attacks.ensemble import EnsembleStats, ReliableEnsemble, greedy_worst_case_miou
from segrobust.attacks.eroseg import EroSeg
from segrobust.attacks.multi import SegMultiAttack
from segrobust.attacks.naa import NAA
from segrobust.attacks.rain import RainAttack, RainAttackStats
from segrobust.attacks.segpgd import SegPGD

__all__ = [
    "AMA",
    "APGD",
    "NAA",
    "TORCHATTACKS_AVAILABLE",
    "APGDStats",
    "AttackStats",
    "CosPGD",
    "EnsembleStats",
    "EroSeg",
    "IterateTracker",
    "LinfSegAttack",
    "NonFiniteGradientError",
    "NonFiniteLogitsError",
    "RainAttack",
    "RainAttackStats",
    "ReliableEnsemble",
    "SafeAttributeMixin",
    "SegAttack",
    "SegMultiAttack",
    "SegPGD",
    "StandaloneAttack",
    "functional",
    "greedy_worst_case_miou",
]
