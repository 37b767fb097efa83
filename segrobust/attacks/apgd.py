"""APGD for segmentation (Croce & Hein 2020, per pixel; SEA's radius schedule, Croce et al. 2024)."""

from __future__ import annotations

from segrobust.attacks.functional import (
    RADIUS_SCHEDULES,
    apgd_checkpoints,
    apgd_should_halve,
    radius_stages,
)
from segrobust.attacks.linf import APGDStats, LinfAttack
from segrobust.attacks.steps import APGDStep

# the pure pieces live in segrobust.attacks.functional; importable from here as well
__all__ = ["APGD", "RADIUS_SCHEDULES", "APGDStats", "apgd_checkpoints", "apgd_should_halve", "radius_stages"]


class APGD(LinfAttack):
    r"""APGD for semantic segmentation: Croce & Hein, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks", ICML 2020, adapted per
    pixel as in SEA (Croce, Singh, Hein, ECCV 2024).

    An [LinfAttack][segrobust.attacks.LinfAttack] with APGD's step rule,
    [APGDStep][segrobust.attacks.steps.APGDStep]: per image, step size
    ``η = 2 · radius`` at the start (or ``alpha``); momentum step
    ``z = Π(x_k + η·sign ∇L)``,
    ``x_{k+1} = Π(x_k + a·(z − x_k) + (1 − a)·(x_k − x_{k−1}))`` with ``a = 1`` on
    the first step and ``momentum`` after; at the checkpoints of
    [apgd_checkpoints][segrobust.attacks.functional.apgd_checkpoints] an image halves
    ``η`` and restarts from its best-loss point (with zero momentum) by
    [apgd_should_halve][segrobust.attacks.functional.apgd_should_halve]. ``L`` is the
    per-image mean over valid pixels of a pixel loss from
    [PIXEL_LOSSES][segrobust.losses.PIXEL_LOSSES] (or a callable). One forward and
    one backward per iteration: the loss and accuracy of an iterate come from the
    forward of its gradient pass. The iterate returned per image is the one with
    the lowest pixel accuracy (targeted: highest on the target masks).

    ``radius_schedule="sea"`` runs 30 % of the steps at ``2·eps``, 30 % at
    ``1.5·eps`` and 40 % at ``eps``, each stage starting from the previous stage's
    final iterate projected into the smaller ball; only iterates of the ``eps``
    stage are scored or returned.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.

    Args: those of every L∞ attack ([LinfAttack][segrobust.attacks.LinfAttack]):
    ``model, eps, alpha, steps`` and the keyword-only ``loss, random_start,
    ignore_index, nonfinite, amp, radius_schedule, loss_options, step_rule``,
    with APGD's defaults: ``steps=None`` is 100, ``loss=None`` is ``"ce"`` (or a
    name in ``PIXEL_LOSSES``: ``"masked_ce"``, ``"balanced_masked_ce"``,
    ``"js"``, ``"masked_spherical"``, ``"segpgd"``, ``"cospgd"``, ``"eroseg"``,
    a ``PixelLoss`` class or a callable), ``alpha=None`` is the initial step
    ``2 · radius`` (a given ``alpha`` is ``η`` at radius ``eps``, scaled with each
    stage's radius), and the step rule is ``APGDStep()``: pass
    ``step_rule=APGDStep(momentum=..., rho=..., checkpoint_p1=...)`` for other
    settings of the rule.

    Shape:
        - images: ``(N, C, H, W)`` float in ``[0, 1]``
        - masks: ``(N, H, W)`` integer class ids or ``ignore_index``
        - output: ``(N, C, H, W)``; ``return_stats=True`` adds an
          [APGDStats][segrobust.attacks.APGDStats] (the same class as
          [LinfAttackStats][segrobust.attacks.LinfAttackStats])

    Examples:
        >>> atk = APGD(model, eps=8/255, steps=100, loss="masked_ce", radius_schedule="sea")  # doctest: +SKIP
        >>> slower = APGD(model, step_rule=APGDStep(momentum=0.5))  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    default_loss = "ce"
    default_step_rule = APGDStep
    default_steps = 100
