"""Segmentation attacks as torchattacks-compatible classes.

An L∞ attack is a pixel loss and a step rule:
[`LinfAttack`][segrobust.attacks.LinfAttack] is the one implementation, and
NAA, AMA, SegPGD, CosPGD, EroSeg and APGD are its defaults (a default loss,
APGD's step rule). Every attack shares one constructor signature,
``(model, eps, alpha, steps, *, loss, random_start, ignore_index, nonfinite, amp, …)``.

- The attacks, their statistics and errors are here.
- The pieces they are built from: [segrobust.attacks.functional][] (pure
  functions: projection, steps, APGD's schedule), [segrobust.attacks.steps][]
  (the step rules), [segrobust.losses][] (the pixel losses,
  [`PIXEL_LOSSES`][segrobust.losses.PIXEL_LOSSES] re-exported here).
- The table the benchmark and the CLI read: [segrobust.attacks.registry][].
- Plumbing for writing attacks: [segrobust.attacks.engine][]
  (``IterateTracker``, ``SafeAttributeMixin``) and
  [segrobust.attacks.attack_api][] (``StandaloneAttack``, the torchattacks API
  without torchattacks).
"""

from segrobust.attacks import functional, steps
from segrobust.attacks.ama import AMA
from segrobust.attacks.apgd import APGD
from segrobust.attacks.attack_api import TORCHATTACKS_AVAILABLE
from segrobust.attacks.cospgd import CosPGD
from segrobust.attacks.engine import AttackStats, NonFiniteGradientError, NonFiniteLogitsError, SegAttack
from segrobust.attacks.ensemble import (
    RELIABLE_PRESETS,
    EnsembleMember,
    EnsembleStats,
    ReliableEnsemble,
    ReliablePreset,
    greedy_worst_case_miou,
)
from segrobust.attacks.eroseg import EroSeg
from segrobust.attacks.linf import APGDStats, LinfAttack, LinfAttackStats
from segrobust.attacks.multi import SegMultiAttack
from segrobust.attacks.naa import NAA
from segrobust.attacks.rain import RainAttack, RainAttackStats
from segrobust.attacks.segpgd import SegPGD
from segrobust.attacks.steps import STEP_RULES, APGDStep, PAdamStep, SignStep, StepRule
from segrobust.losses import PIXEL_LOSSES, PixelLoss, make_pixel_loss

__all__ = [
    "AMA",
    "APGD",
    "NAA",
    "PIXEL_LOSSES",
    "RELIABLE_PRESETS",
    "STEP_RULES",
    "TORCHATTACKS_AVAILABLE",
    "APGDStats",
    "APGDStep",
    "AttackStats",
    "CosPGD",
    "EnsembleMember",
    "EnsembleStats",
    "EroSeg",
    "LinfAttack",
    "LinfAttackStats",
    "NonFiniteGradientError",
    "NonFiniteLogitsError",
    "PAdamStep",
    "PixelLoss",
    "RainAttack",
    "RainAttackStats",
    "ReliableEnsemble",
    "ReliablePreset",
    "SegAttack",
    "SegMultiAttack",
    "SegPGD",
    "SignStep",
    "StepRule",
    "functional",
    "greedy_worst_case_miou",
    "make_pixel_loss",
    "steps",
]
