"""CosPGD (Agnihotri & Keuper, ICML 2024)."""

from __future__ import annotations

from segrobust.attacks.linf import LinfAttack

__all__ = ["CosPGD"]


class CosPGD(LinfAttack):
    r"""CosPGD: Agnihotri, Jung, Keuper, "CosPGD: an efficient white-box adversarial
    attack for pixel-wise prediction tasks", ICML 2024.

    L∞ PGD on the pixel loss weighted by the (detached) cosine similarity
    between ``softmax(f(x))`` and ``one_hot(y)`` at each pixel (targeted:
    ``1 − cos``), so pixels the model is still sure about weigh most. Softmax,
    not sigmoid: the authors report sigmoid as clearly weaker. The weighting is
    [CosPGDLoss][segrobust.losses.CosPGDLoss] (``loss="cospgd"``).

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.
    Arguments, shapes and output: as [`NAA`][segrobust.attacks.NAA].

    Examples:
        >>> atk = CosPGD(model, eps=8/255, alpha=2/255, steps=20)  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    default_loss = "cospgd"
