"""EroSeg: the erosion attack (Song et al., 2026), as read in ALGORITHMS.md."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from segrobust.attacks import functional as AF
from segrobust.attacks.base import LinfSegAttack

__all__ = ["EroSeg"]

Schedule = Union[str, Callable[[float], float]]


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
        alpha: Optional[float] = 2 / 255,
        steps: int = 10,
        random_start: bool = True,
        q0: float = 0.85,
        schedule: Schedule = "linear",
        kernel_size: int = 5,
        fooled_weight: float = 0.1,
        confidence: str = "true_prob",
        ignore_index: int = 255,
    ):
        super().__init__(model, eps, alpha, steps, random_start, ignore_index)
        if not 0 < q0 <= 1:
            raise ValueError(f"q0 must be in (0, 1], got {q0}")
        if not (callable(schedule) or schedule in ("linear", "cosine")):
            raise ValueError(f"schedule must be 'linear', 'cosine' or a callable progress -> q, got {schedule!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        if not 0 <= fooled_weight <= 1:
            raise ValueError(f"fooled_weight must be in [0, 1], got {fooled_weight}")
        if confidence not in ("true_prob", "max_prob"):
            raise ValueError(f"confidence must be 'true_prob' or 'max_prob', got {confidence!r}")
        self.q0 = float(q0)
        self.schedule = schedule
        self.kernel_size = kernel_size
        self.fooled_weight = float(fooled_weight)
        self.confidence = confidence

    def quantile_at(self, step: int) -> float:
        """``q_t`` for a 1-based step: ``q0`` at the first step, 1 at the last."""
        progress = 0.0 if self.steps <= 1 else (step - 1) / (self.steps - 1)
        if self.schedule == "linear":
            shaped = progress
        elif self.schedule == "cosine":
            shaped = (1 - math.cos(math.pi * progress)) / 2
        else:
            q = float(self.schedule(progress))
            if not 0 <= q <= 1:
                raise ValueError(f"schedule({progress}) returned {q}; expected a fraction in [0, 1]")
            return max(q, self.q0) if step == 1 else q
        return self.q0 + (1 - self.q0) * shaped

    def _init_state(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        return {"attacked": None}

    def _pixel_weights(
        self, logits: torch.Tensor, labels: torch.Tensor, step: int, state: dict[str, Any]
    ) -> torch.Tensor:
        valid = AF.valid_mask(labels, self.ignore_index)
        conf = AF.pixel_confidence(logits, labels, self.confidence, self.ignore_index)
        if self.targeted and self.confidence == "true_prob":
            conf = 1 - conf
        seeds = AF.lowest_fraction_mask(conf, valid, self.quantile_at(step))
        previous = state["attacked"]
        attacked = seeds if previous is None else (AF.dilate_mask(previous, self.kernel_size) & valid) | seeds
        state["attacked"] = attacked
        fooled = AF.success_mask(logits, labels, self.targeted)
        weights = torch.where(fooled, torch.full_like(conf, self.fooled_weight), torch.ones_like(conf))
        return weights * attacked.to(weights.dtype)
