"""CosPGD (Agnihotri & Keuper, ICML 2024)."""

from __future__ import annotations

from typing import Any

import torch

from segrobust.attacks import functional as AF
from segrobust.attacks.base import LinfSegAttack

__all__ = ["CosPGD"]


class CosPGD(LinfSegAttack):
    r"""CosPGD: Agnihotri, Jung, Keuper, "CosPGD: an efficient white-box adversarial
    attack for pixel-wise prediction tasks", ICML 2024.

    L∞ PGD on the pixel loss weighted by the (detached) cosine similarity
    between ``softmax(f(x))`` and ``one_hot(y)`` at each pixel (targeted:
    ``1 − cos``), so pixels the model is still sure about weigh most. Softmax,
    not sigmoid: the authors report sigmoid as clearly weaker.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.
    Arguments, shapes and output: as [`NAA`][segrobust.attacks.NAA].

    Examples:
        >>> atk = CosPGD(model, eps=8/255, alpha=2/255, steps=20)  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    def _pixel_weights(
        self, logits: torch.Tensor, labels: torch.Tensor, step: int, state: dict[str, Any]
    ) -> torch.Tensor:
        return AF.cospgd_weights(logits, labels, targeted=self.targeted, ignore_index=self.ignore_index)
