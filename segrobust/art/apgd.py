"""ART counterpart of segrobust's APGD for segmentation."""

from __future__ import annotations

from segrobust import attacks as torch_attacks
from segrobust.art.attacks import ArtSegAttack

__all__ = ["APGD"]


class APGD(ArtSegAttack):
    """ART counterpart of [APGD][segrobust.attacks.APGD] (Croce & Hein 2020, per pixel; SEA's radius schedule).

    ``APGD(estimator, eps=8/255, steps=100, loss="ce", radius_schedule=None, random_start=True,
    ignore_index=None, momentum=0.75, initial_step=2.0, rho=0.75, checkpoint_p1=0.22,
    checkpoint_decrement=0.03, checkpoint_min_gap=0.06, loss_options=None, *, batch_size=32,
    targeted=False, verbose=False)``; ``eps`` is in the units of the estimator's ``clip_values``,
    other conventions as in [ArtSegAttack][segrobust.art.ArtSegAttack]. Under the same
    ``torch.manual_seed`` it returns exactly the torch attack's images. After ``generate``,
    ``stats`` holds the loss and accuracy curves (for one batch, the full
    [APGDStats][segrobust.attacks.APGDStats]).

    Examples:
        >>> adv = APGD(estimator, eps=8 / 255, steps=100, loss="masked_ce", radius_schedule="sea").generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.APGD
    pixel_params = ("eps",)  # APGD has no fixed step size
