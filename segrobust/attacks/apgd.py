"""APGD for segmentation (Croce & Hein 2020, per pixel; SEA's radius schedule, Croce et al. 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from segrobust.attacks import functional as AF
from segrobust.attacks.base import AttackStats, IterateTracker, SegAttack
from segrobust.losses import PixelLossFunction, make_pixel_loss
from segrobust.metrics.functional import per_image_pixel_accuracy
from segrobust.validation import check_number, check_pixel_losses

__all__ = ["APGD", "RADIUS_SCHEDULES", "APGDStats", "apgd_checkpoints", "apgd_should_halve", "radius_stages"]

RADIUS_SCHEDULES: dict[str, tuple[tuple[float, float], ...]] = {
    "sea": ((2.0, 0.3), (1.5, 0.3), (1.0, 0.4)),
}
"""Named radius schedules: ``(radius as a multiple of eps, fraction of the steps)`` per stage."""


def apgd_checkpoints(steps: int, p1: float = 0.22, decrement: float = 0.03, min_gap: float = 0.06) -> list[int]:
    """APGD's checkpoint iterations ``w_j = ⌈p_j · steps⌉`` within ``[0, steps]``.

    ``p_0 = 0``, ``p_1 = p1``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − decrement, min_gap)``;
    duplicates (short runs) are dropped.

    Examples:
        >>> apgd_checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not (0 < p1 <= 1 and decrement >= 0 and 0 < min_gap <= 1):
        raise ValueError(f"need 0 < p1 <= 1, decrement >= 0, 0 < min_gap <= 1; got {p1}, {decrement}, {min_gap}")
    fractions, previous, current = [0.0], 0.0, float(p1)
    while current <= 1 + 1e-12:
        fractions.append(current)
        previous, current = current, current + max(current - previous - decrement, min_gap)
    # rounding first keeps 0.22 · 100 at 22 instead of ⌈22.000000000000004⌉ = 23
    iterations = (math.ceil(round(p * steps, 9)) for p in fractions)
    return sorted({w for w in iterations if w <= steps})


def apgd_should_halve(
    losses: torch.Tensor,
    best_loss: torch.Tensor,
    best_loss_at_last_checkpoint: torch.Tensor,
    halved_at_last_checkpoint: torch.Tensor,
    rho: float = 0.75,
) -> torch.Tensor:
    """APGD's step-size rule at a checkpoint, per image ``(N,)`` bool.

    ``losses`` ``(m + 1, N)`` holds the objective from the last checkpoint to
    this one (both included, ``m`` steps). An image halves its step size (and
    restarts from its best-loss point) when fewer than ``rho · m`` of those
    steps raised its loss, or when it did not halve at the last checkpoint and
    its best loss has not improved since.

    Examples:
        >>> import torch
        >>> losses = torch.tensor([[1.0, 1.0], [2.0, 0.5], [3.0, 0.4], [2.5, 0.3], [4.0, 0.2]])
        >>> best = losses.max(0).values
        >>> apgd_should_halve(losses, best, torch.tensor([1.0, 1.0]), torch.tensor([True, True]))
        tensor([False,  True])
    """
    if losses.dim() != 2 or losses.shape[0] < 2:
        raise ValueError(f"losses must be (m + 1, N) with m >= 1 steps, got {tuple(losses.shape)}")
    steps = losses.shape[0] - 1
    rises = (losses[1:] > losses[:-1]).sum(0)
    oscillating = rises < rho * steps
    stalled = ~halved_at_last_checkpoint.bool() & (best_loss <= best_loss_at_last_checkpoint)
    return oscillating | stalled


def radius_stages(schedule: Union[str, Sequence[tuple[float, float]], None], steps: int) -> list[tuple[float, int]]:
    """``(radius factor, iterations)`` per stage; the last stage takes what the others leave.

    Examples:
        >>> radius_stages("sea", 100)
        [(2.0, 30), (1.5, 30), (1.0, 40)]
        >>> radius_stages(None, 7)
        [(1.0, 7)]
    """
    if schedule is None:
        return [(1.0, steps)]
    if isinstance(schedule, str):
        if schedule not in RADIUS_SCHEDULES:
            raise ValueError(
                f"unknown radius_schedule {schedule!r}; expected None, one of {sorted(RADIUS_SCHEDULES)} "
                "or a sequence of (radius factor, fraction) pairs"
            )
        schedule = RADIUS_SCHEDULES[schedule]
    try:
        pairs = [(float(r), float(f)) for r, f in schedule]
    except (TypeError, ValueError):
        raise ValueError(
            f"radius_schedule must be a sequence of (radius factor, fraction) pairs, got {schedule!r}"
        ) from None
    if not all(math.isfinite(r) and math.isfinite(f) for r, f in pairs):
        raise ValueError(f"radius_schedule must hold finite numbers, got {pairs}")
    if not pairs or pairs[-1][0] != 1.0 or any(r < 1 for r, _ in pairs) or any(f < 0 for _, f in pairs):
        raise ValueError(f"radius_schedule needs factors >= 1 ending at 1.0 and non-negative fractions, got {pairs}")
    if abs(sum(f for _, f in pairs) - 1) > 1e-6:
        raise ValueError(f"radius_schedule fractions must sum to 1, got {sum(f for _, f in pairs)}")
    lengths = [math.floor(f * steps + 1e-9) for _, f in pairs[:-1]]
    return [(r, n) for (r, _), n in zip(pairs, [*lengths, steps - sum(lengths)])]


@dataclass
class APGDStats(AttackStats):
    """[AttackStats][segrobust.attacks.AttackStats] plus APGD's own diagnostics.

    Rows ``t = 0 … steps`` follow the iterates across all radius stages.
    ``objective`` is the value APGD ascends (the chosen loss's per-image mean
    over valid pixels, negated for targeted attacks); ``step_size`` is ``η``
    per image; ``radius`` the L∞ radius of the stage; ``scored`` marks the rows
    inside the ``eps`` ball (the only candidates for the returned iterate).
    ``pixel_accuracy`` is the per-iteration accuracy curve (at the stage's
    radius). Gradient-masking flags per image: ``loss_never_rose`` (no step
    raised the objective), ``zero_gradient`` (an all-zero input gradient while
    the image still had pixels to win), ``nonfinite_gradient`` (NaN/inf in the
    gradient: by default the attack raises
    [NonFiniteGradientError][segrobust.attacks.NonFiniteGradientError]; with
    ``nonfinite="warn"`` it warns, marks the image and treats NaN entries as 0).
    """

    # Defaults only because AttackStats ends with a defaulted field; APGD always fills them.
    objective: torch.Tensor = None  # (steps + 1, N)
    step_size: torch.Tensor = None  # (steps + 1, N)
    radius: torch.Tensor = None  # (steps + 1,)
    scored: torch.Tensor = None  # (steps + 1,) bool
    forward_passes: torch.Tensor = None  # (N,)
    backward_passes: torch.Tensor = None  # (N,)
    loss_never_rose: torch.Tensor = None  # (N,) bool
    zero_gradient: torch.Tensor = None  # (N,) bool


class _Run:
    """Per-call state of one APGD run: the records and the iterate tracker."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        valid: torch.Tensor,
        steps: int,
        tracker: IterateTracker,
        loss_fn: PixelLossFunction,
        direction: int,
    ):
        n, rows, dev = images.shape[0], steps + 1, images.device
        self.images, self.labels, self.valid, self.steps = images, labels, valid, steps
        self.tracker, self.loss_fn, self.direction = tracker, loss_fn, direction
        self.objective = torch.zeros(rows, n, device=dev)
        self.step_size = torch.zeros(rows, n, device=dev)
        self.radius = torch.zeros(rows, device=dev)
        self.scored = torch.zeros(rows, dtype=torch.bool, device=dev)
        self.rises = torch.zeros(n, dtype=torch.long, device=dev)
        self.forward_passes = torch.zeros(n, dtype=torch.long, device=dev)
        self.backward_passes = torch.zeros(n, dtype=torch.long, device=dev)
        self.zero_gradient = torch.zeros(n, dtype=torch.bool, device=dev)

    def stats(self) -> APGDStats:
        base = self.tracker.stats()
        return APGDStats(
            base.loss,
            base.pixel_accuracy,
            base.best_step,
            base.nonfinite_gradient,
            base.confusion,
            objective=self.objective,
            step_size=self.step_size,
            radius=self.radius,
            scored=self.scored,
            forward_passes=self.forward_passes,
            backward_passes=self.backward_passes,
            loss_never_rose=self.rises == 0,
            zero_gradient=self.zero_gradient,
        )


class APGD(SegAttack):
    r"""APGD for semantic segmentation: Croce & Hein, "Reliable evaluation of adversarial
    robustness with an ensemble of diverse parameter-free attacks", ICML 2020, adapted per
    pixel as in SEA (Croce, Singh, Hein, ECCV 2024).

    Per image: step size ``η = initial_step · radius`` at the start; momentum step
    ``z = Π(x_k + η·sign ∇L)``,
    ``x_{k+1} = Π(x_k + a·(z − x_k) + (1 − a)·(x_k − x_{k−1}))`` with ``a = 1`` on
    the first step and ``momentum`` after; at the checkpoints of
    [apgd_checkpoints][segrobust.attacks.apgd.apgd_checkpoints] an image halves
    ``η`` and restarts from its best-loss point (with zero momentum) by
    [apgd_should_halve][segrobust.attacks.apgd.apgd_should_halve]. ``L`` is the
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

    Args:
        model: segmentation model returning logits ``(N, K, H, W)``.
        eps: L∞ budget in ``(0, 1]``.
        steps: iterations (gradient passes) in all.
        loss: name in ``PIXEL_LOSSES`` (``"ce"``, ``"masked_ce"``,
            ``"balanced_masked_ce"``, ``"js"``, ``"masked_spherical"``,
            ``"segpgd"``, ``"cospgd"``, ``"eroseg"``), a ``PixelLoss`` class, or a
            callable ``(logits, labels, valid, step, steps) -> (N, H, W)``.
        radius_schedule: ``None`` (always ``eps``), ``"sea"``, or
            ``[(radius factor, fraction of steps), ...]`` ending with factor 1.
        random_start: start from a uniform point in the first stage's ball.
        ignore_index: mask label whose pixels add nothing to the loss.
        momentum: ``a`` after the first step.
        initial_step: ``η`` at the start of each stage, in units of its radius.
        rho: fraction of loss-raising steps below which ``η`` is halved.
        checkpoint_p1, checkpoint_decrement, checkpoint_min_gap: the checkpoint
            recursion ``p_1``, ``0.03`` and ``0.06``.
        loss_options: keyword options for a named loss (e.g.
            ``{"class_weights": w}`` for ``"balanced_masked_ce"``).

    Shape:
        - images: ``(N, C, H, W)`` float in ``[0, 1]``
        - masks: ``(N, H, W)`` integer class ids or ``ignore_index``
        - output: ``(N, C, H, W)``; ``return_stats=True`` adds an
          [APGDStats][segrobust.attacks.APGDStats]

    Examples:
        >>> atk = APGD(model, eps=8/255, steps=100, loss="masked_ce", radius_schedule="sea")  # doctest: +SKIP
        >>> adv_images = atk(images, masks)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        steps: int = 100,
        loss: Any = "ce",
        radius_schedule: Union[str, Sequence[tuple[float, float]], None] = None,
        random_start: bool = True,
        ignore_index: int = 255,
        momentum: float = 0.75,
        initial_step: float = 2.0,
        rho: float = 0.75,
        checkpoint_p1: float = 0.22,
        checkpoint_decrement: float = 0.03,
        checkpoint_min_gap: float = 0.06,
        loss_options: Optional[dict[str, Any]] = None,
        nonfinite: str = "raise",
    ):
        super().__init__("APGD", model, eps, None, steps, random_start, ignore_index, nonfinite=nonfinite)
        self.alpha = None  # APGD adapts its step size per image
        momentum = check_number(momentum, "momentum", low=0, high=1)
        initial_step = check_number(initial_step, "initial_step", low=0, low_inclusive=False)
        rho = check_number(rho, "rho", low=0, high=1, low_inclusive=False)
        if loss_options is not None and not isinstance(loss_options, dict):
            raise TypeError(f"loss_options must be a dict, got {type(loss_options).__name__}")
        self.loss, self.loss_options = loss, dict(loss_options or {})
        make_pixel_loss(loss, **self.loss_options)  # validates the name and options now
        self.radius_schedule = radius_schedule
        self.stages = radius_stages(radius_schedule, steps)
        self.momentum, self.initial_step, self.rho = float(momentum), float(initial_step), float(rho)
        self.checkpoint_args = (checkpoint_p1, checkpoint_decrement, checkpoint_min_gap)
        apgd_checkpoints(steps, *self.checkpoint_args)

    # ------------------------------------------------------------------ one pass
    def _gradient_pass(self, run: _Run, x: torch.Tensor, row: int, need_grad: bool):
        """Logits, objective ``(N,)`` and (if asked) the input gradient at ``x``, from one forward."""
        with torch.enable_grad() if need_grad else torch.no_grad():
            x = x.detach().requires_grad_(need_grad)
            logits = self._logits(x)
            pixel = run.loss_fn(logits, run.labels, run.valid, min(row + 1, run.steps), max(run.steps, 1))
            check_pixel_losses(pixel, run.labels, "loss")
            objective = run.direction * AF.masked_mean(pixel.float(), run.valid, per_image=True)
            grad = self._input_gradients(objective.sum(), (x,))[0] if need_grad else None
        run.forward_passes += 1
        if grad is not None:
            run.backward_passes += 1
        return logits.detach(), objective.detach(), grad

    def _record(
        self,
        run: _Run,
        x: torch.Tensor,
        logits: torch.Tensor,
        objective: torch.Tensor,
        grad: Optional[torch.Tensor],
        row: int,
        radius: float,
        eta: torch.Tensor,
    ) -> Optional[torch.Tensor]:
        """Writes row ``row`` of the statistics; checks the gradient (``nonfinite`` policy of the base)."""
        run.objective[row], run.step_size[row], run.radius[row] = objective, eta, radius * self.eps
        run.scored[row] = radius == 1.0
        pixel_ce = AF.pixel_cross_entropy(logits, run.labels, self.ignore_index)
        if run.scored[row]:
            run.tracker.update(x, logits, pixel_ce, row)
        else:
            run.tracker.loss[row] = AF.masked_mean(pixel_ce.float(), run.valid, per_image=True)
            run.tracker.pixel_accuracy[row] = per_image_pixel_accuracy(logits, run.labels, self.ignore_index)
        # raises, or warns and marks (nonfinite="warn")
        self._check_finite(self._at(row), run.tracker, logits, [grad])
        if grad is None:
            return None
        flat = grad.flatten(1)
        acc = run.tracker.pixel_accuracy[row]
        holds = (acc > 0) if run.direction > 0 else (acc < 1)
        run.zero_gradient |= (flat == 0).all(1) & holds & run.valid.flatten(1).any(1)
        return torch.nan_to_num(grad, nan=0.0)

    # ------------------------------------------------------------------ one stage
    def _run_stage(
        self, run: _Run, start: torch.Tensor, radius: float, iterations: int, offset: int, last: bool
    ) -> torch.Tensor:
        """APGD at one radius for ``iterations`` steps from ``start``; returns the final iterate."""
        eps = radius * self.eps
        n = start.shape[0]
        view = (-1,) + (1,) * (start.dim() - 1)
        bounds = AF.linf_bounds(run.images, eps)
        x, x_prev = start, start
        eta = torch.full((n,), self.initial_step * eps, device=start.device)
        checkpoints = set(apgd_checkpoints(iterations, *self.checkpoint_args)) - {0, iterations}
        best_obj = torch.full((n,), -float("inf"), device=start.device)
        x_best, grad_best = start, None
        halved_last = torch.ones(n, dtype=torch.bool, device=start.device)
        best_at_check, last_check = None, 0
        for i in range(iterations + 1):
            if i == iterations and not last:
                return x  # the next stage starts (and spends its first pass) from here
            row = offset + i
            logits, obj, grad = self._gradient_pass(run, x, row, need_grad=i < iterations)
            grad = self._record(run, x, logits, obj, grad, row, radius, eta)
            if i > 0:
                run.rises += obj > run.objective[row - 1]
            if i == iterations:
                return x
            improved = obj > best_obj
            best_obj = torch.where(improved, obj, best_obj)
            x_best = torch.where(improved.view(view), x, x_best)
            grad_best = grad if grad_best is None else torch.where(improved.view(view), grad, grad_best)
            if i == 0:
                best_at_check = best_obj.clone()
            if i in checkpoints:
                halve = apgd_should_halve(
                    run.objective[offset + last_check : row + 1], best_obj, best_at_check, halved_last, self.rho
                )
                eta = torch.where(halve, eta / 2, eta)
                x = torch.where(halve.view(view), x_best, x)
                x_prev = torch.where(halve.view(view), x_best, x_prev)
                grad = torch.where(halve.view(view), grad_best, grad)
                halved_last, best_at_check, last_check = halve, best_obj.clone(), i
            a = 1.0 if i == 0 else self.momentum
            z = (x + eta.view(view) * grad.sign()).clamp(*bounds)
            x, x_prev = (x + a * (z - x) + (1 - a) * (x - x_prev)).clamp(*bounds), x
        return x

    # ------------------------------------------------------------------ the attack
    def _attack_batch(
        self, images: torch.Tensor, labels: torch.Tensor, direction: int
    ) -> tuple[torch.Tensor, APGDStats]:
        valid = AF.valid_mask(labels, self.ignore_index)
        loss_fn = make_pixel_loss(
            self.loss, targeted=direction < 0, ignore_index=self.ignore_index, **self.loss_options
        )
        first_radius = self.stages[0][0] * self.eps
        x = AF.random_linf_start(images, first_radius) if self.random_start else images.clone()
        run = _Run(
            images,
            labels,
            valid,
            self.steps,
            IterateTracker(x, labels, self.ignore_index, direction, self.steps),
            loss_fn,
            direction,
        )
        offset = 0
        live = [(r, n) for r, n in self.stages[:-1] if n > 0] + [self.stages[-1]]
        for number, (radius, iterations) in enumerate(live):
            x = AF.project_linf(x, images, radius * self.eps)
            x = self._run_stage(run, x, radius, iterations, offset, last=number == len(live) - 1)
            offset += iterations
        return run.tracker.best, run.stats()
