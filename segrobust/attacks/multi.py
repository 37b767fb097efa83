"""Worst case over several segmentation attacks (a torchattacks.MultiAttack when torchattacks is installed)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from segrobust.attacks.attack_api import AttackBase, MultiAttackBase
from segrobust.attacks.engine import SafeAttributeMixin, SegAttack
from segrobust.metrics.functional import per_image_pixel_accuracy
from segrobust.utils import model_mode_preserved, predicted_classes, segmentation_logits
from segrobust.validation import check_bool

__all__ = ["SegMultiAttack"]


class SegMultiAttack(SafeAttributeMixin, MultiAttackBase):
    r"""Per-image worst case over several segmentation attacks.

    Stock ``torchattacks.MultiAttack`` decides success per sample from one
    class label, which has no meaning for ``(N, H, W)`` masks. This subclass
    runs every attack on the whole batch and keeps, per image, the adversarial
    image with the lowest pixel accuracy over valid pixels (the evaluation
    protocol's worst case). Setter calls (``set_normalization_used``,
    ``set_model_training_mode``, targeted modes) still reach every attack.
    With torchattacks installed it is a ``torchattacks.MultiAttack``; without
    it, it offers the same API from segrobust's own base. One attack is
    accepted (its worst case is its own result); all must share one model.

    Stock ``torchattacks.MultiAttack`` given segrobust attacks stops with a
    ``TypeError`` that points here.

    Examples:
        >>> atk = SegMultiAttack([NAA(model), SegPGD(model), EroSeg(model)])  # doctest: +SKIP
        >>> worst_images = atk(images, masks)  # doctest: +SKIP
    """

    handles_masks = True  # read by SegAttack: this MultiAttack compares masks, not single labels

    def __init__(self, attacks: Sequence[SegAttack], verbose: bool = False):
        verbose = check_bool(verbose, "verbose")
        if not isinstance(attacks, (list, tuple)) or not attacks:
            raise ValueError(f"SegMultiAttack needs a non-empty list of segrobust attacks, got {attacks!r}")
        for attack in attacks:
            if not isinstance(attack, SegAttack):
                raise TypeError(f"SegMultiAttack takes segrobust SegAttack objects, got {type(attack).__name__}")
        if len({id(attack.model) for attack in attacks}) != 1:
            raise ValueError("every attack given to SegMultiAttack must attack the same model object")
        # torchattacks.MultiAttack.__init__ insists on two attacks; the Attack base sets up the rest.
        AttackBase.__init__(self, "SegMultiAttack", attacks[0].model)
        self.attacks = list(attacks)
        self.verbose = verbose
        self.supported_mode = ["default"]
        self._accumulate_multi_atk_records = False
        self._multi_atk_records = [0.0]
        self.ignore_index = attacks[0].ignore_index

    def __call__(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        with model_mode_preserved(self.model):
            return super().__call__(images, labels)

    def get_logits(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None, *args, **kwargs):
        """The model's output as the attacks see it (normalised when asked, cast to the model's dtype)."""
        return self.attacks[0].get_logits(inputs)

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if labels is None:
            with torch.no_grad():
                labels = predicted_classes(segmentation_logits(self.get_logits(images.to(self.device))))
        best = images.detach().clone()
        best_acc = torch.full((images.shape[0],), float("inf"), device=images.device)
        for attack in self.attacks:
            adv = attack(images, labels)
            with torch.no_grad():
                logits = segmentation_logits(self.get_logits(adv.to(self.device)))
            acc = per_image_pixel_accuracy(logits, labels.to(logits.device), self.ignore_index).to(images.device)
            better = acc < best_acc
            best_acc = torch.where(better, acc, best_acc)
            best = torch.where(better.view(-1, 1, 1, 1), adv.to(images.device), best)
        self.last_pixel_accuracy = best_acc
        return best
