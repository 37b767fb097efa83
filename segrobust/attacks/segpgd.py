"""SegPGD (Gu et al., ECCV 2022)."""

from __future__ import annotations

from segrobust.attacks.linf import LinfAttack

__all__ = ["SegPGD"]


class SegPGD(LinfAttack):
    r"""SegPGD: Gu, Zhao, Tresp, Torr, "SegPGD: An Effective and Efficient Adversarial
    Attack for Evaluating and Boosting Segmentation Robustness", ECCV 2022.

    L∞ PGD on the pixel loss re-weighted at step ``t`` of ``T`` by
    ``λ_t = (t − 1)/(2T)``: correctly classified pixels weigh ``1 − λ_t`` and
    already fooled pixels ``λ_t`` (targeted: pixels not yet on target weigh
    ``1 − λ_t``), so early steps spend the budget where the model still holds.
    The weighting is [SegPGDLoss][segrobust.losses.SegPGDLoss] (``loss="segpgd"``).

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.
    Arguments, shapes and output: as [`NAA`][segrobust.attacks.NAA].

    Examples:
        >>> atk = SegPGD(model, eps=8/255, alpha=2/255, steps=20)  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    default_loss = "segpgd"
