"""EroSeg: the erosion attack (Song et al., 2026), as read in ALGORITHMS.md."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from segrobust.attacks import functional as AF
from segrobust.attacks.base import LinfSegAttack
from segrobust.losses import EroSegLoss, ErosionSchedule, erosion_quantile

__all__ = ["EroSeg"]


class EroSeg(LinfSegAttack):
    r"""EroSeg: erosion attack on segmentation (Song et al., 2026).

    The paper's abstract: select sensitive pixels by pixel-level confidence,
    then progressively propagate the perturbation to higher-confidence pixels.
    **This project's reading** (``ALGORITHMS.md``; every choice is an argument):

    - confidence ``c`` per valid pixel: the true-class probability
      ``softmax(f(x))[y]`` (``confidence="true_prob"``) or the top probability
      (``"max_prob"``), recomputed at every step from the logits the gradient
      pass already has (targeted: ``1 − softmax[target]``);
    - the attacked set ``M_1`` = valid pixels in the lowest ``q0`` fraction of
      confidence in their image;
    - ``M_t = dilate(M_{t−1}, kernel_size) ∪ {valid c ≤ quantile(q_t)}`` with
      ``q_t`` rising from ``q0`` at the first step to 1 at the last
      (``schedule="linear"``, ``"cosine"``, or a callable mapping progress in
      ``[0, 1]`` to ``q``), dilation by kornia.morphology;
    - the step ascends the mean over ``M_t`` of the pixel cross-entropy, with
      pixels already fooled weighted ``fooled_weight`` so the budget goes where
      the model still holds.

    Defaults ``q0=0.85, kernel_size=5, fooled_weight=0.1`` (linear schedule,
    ``true_prob``) won a sweep on CamVid val (``benchmarks/eroseg_sweep.py``);
    the earlier ``q0=0.2, kernel_size=3, fooled_weight=0.5`` are weaker.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.

    Shape: images ``(N, C, H, W)`` in ``[0, 1]``, masks ``(N, H, W)``; returns
    the best iterate per image (lowest pixel accuracy).

    Examples:
        >>> atk = EroSeg(model, eps=8/255, alpha=2/255, steps=20, q0=0.2)  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: Optional[float] = None,
        steps: int = 10,
        random_start: bool = True,
        q0: float = 0.85,
        schedule: ErosionSchedule = "linear",
        kernel_size: int = 5,
        fooled_weight: float = 0.1,
        confidence: str = "true_prob",
        ignore_index: int = 255,
        *,
        nonfinite: str = "raise",
    ):
        super().__init__(model, eps, alpha, steps, random_start, ignore_index, nonfinite=nonfinite)
        # the weighting is segrobust.losses.EroSegLoss; building one validates the arguments
        EroSegLoss(
            q0=q0, schedule=schedule, kernel_size=kernel_size, fooled_weight=fooled_weight, confidence=confidence
        )
        self.q0 = float(q0)
        self.schedule = schedule
        self.kernel_size = kernel_size
        self.fooled_weight = float(fooled_weight)
        self.confidence = confidence

    def quantile_at(self, step: int) -> float:
        """``q_t`` for a 1-based step: ``q0`` at the first step, 1 at the last."""
        return erosion_quantile(step, self.steps, self.q0, self.schedule)

    def _init_state(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        loss = EroSegLoss(
            targeted=self.targeted,
            ignore_index=self.ignore_index,
            q0=self.q0,
            schedule=self.schedule,
            kernel_size=self.kernel_size,
            fooled_weight=self.fooled_weight,
            confidence=self.confidence,
        )
        return {"loss": loss, "attacked": None}

    def _pixel_weights(
        self, logits: torch.Tensor, labels: torch.Tensor, step: int, state: dict[str, Any]
    ) -> torch.Tensor:
        valid = AF.valid_mask(labels, self.ignore_index)
        weights = state["loss"].weights(logits, labels, valid, step, self.steps)
        state["attacked"] = state["loss"].attacked
        return weights
