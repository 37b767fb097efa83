"""AMA: Auxiliary Mirror Attack (PEARL paper)."""

from __future__ import annotations

from segrobust.attacks.naa import NAA

__all__ = ["AMA"]


class AMA(NAA):
    r"""Auxiliary Mirror Attack from the PEARL paper: the mirror image of [`NAA`][segrobust.attacks.NAA].

    The same projected steps *descending* the loss,
    ``x ← Π(x − α·sign ∇ mean L_pix(f(x), y))``, give a "positive" image that
    the model segments better than the clean one (closest published relative:
    unadversarial examples, Salman et al. 2021). PEARL uses AMA images as
    reconstruction targets of its derainer. One implementation with NAA; only
    the sign differs. The best iterate is the one with the *highest* pixel
    accuracy.

    Threat model: white-box, ``‖x_ama − x‖∞ ≤ eps``, ``x_ama ∈ [0, 1]``; it
    needs the true masks (with ``masks=None`` it reinforces the model's own
    prediction). Targeted modes are not meaningful for AMA and are refused.

    Arguments, shapes: as [`NAA`][segrobust.attacks.NAA].

    Examples:
        >>> atk = AMA(model, eps=4/255, alpha=1/255, steps=10)  # doctest: +SKIP
        >>> positive_images = atk(images, masks)  # doctest: +SKIP
    """

    _loss_sign = -1

    def _set_mode_targeted(self, mode, quiet):
        raise ValueError(
            "AMA has no targeted mode: a targeted NAA already descends the loss towards target masks "
            "(NAA(...).set_mode_targeted_by_label())"
        )
