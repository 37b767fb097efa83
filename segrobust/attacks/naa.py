"""NAA: Negative Adversarial Attack (PEARL paper)."""

from __future__ import annotations

from segrobust.attacks.linf import LinfAttack

__all__ = ["NAA"]


class NAA(LinfAttack):
    r"""Negative Adversarial Attack from the PEARL paper (rain + adversarial robustness).

    L∞ PGD that ascends the mean per-pixel cross-entropy over valid pixels,
    ``x ← Π(x + α·sign ∇ mean L_pix(f(x), y))``: "negative" because it pushes
    the image's information against its labels. As defined in
    ``docs/algorithms.md``; [`AMA`][segrobust.attacks.AMA] is the same attack
    with the opposite sign. An [LinfAttack][segrobust.attacks.LinfAttack] whose
    default loss is ``"ce"`` and whose step rule is the signed step.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.

    Args:
        model: segmentation model returning logits ``(N, K, H, W)`` (or a tuple
            / ``{"out": ...}`` dict holding them).
        eps: L∞ budget in ``(0, 1]``.
        alpha: step size; ``None`` (the default) uses ``2.5 · eps / steps``
            (2/255 at ``eps=8/255, steps=10``).
        steps: number of gradient steps.
        **options: ``loss``, ``random_start``, ``ignore_index``, ``nonfinite``,
            ``amp``, ``radius_schedule``, ``loss_options``, ``step_rule``: see
            [LinfAttack][segrobust.attacks.LinfAttack].

    Shape:
        - images: ``(N, C, H, W)`` float in ``[0, 1]``
        - masks: ``(N, H, W)`` integer class ids or ``ignore_index``
        - output: ``(N, C, H, W)``, the best iterate per image (lowest pixel accuracy)

    Examples:
        >>> atk = NAA(model, eps=8/255, alpha=2/255, steps=10)  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    default_loss = "ce"
