"""The L∞ attack: a pixel loss and a step rule; NAA, AMA, SegPGD, CosPGD, EroSeg and APGD are its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence, Union

import torch
from torch import nn

from segrobust.attacks import functional as AF
from segrobust.attacks.engine import AttackStats, IterateTracker, SegAttack
from segrobust.attacks.steps import SignStep, StepRule, make_step_rule
from segrobust.losses import PixelLossFunction, make_pixel_loss
from segrobust.metrics.functional import per_image_pixel_accuracy
from segrobust.validation import check_choice, check_pixel_losses

__all__ = ["CONTROLS", "HANDOVERS", "APGDStats", "LinfAttack", "LinfAttackStats", "LossSpec", "RadiusSchedule"]

#: A pixel loss: a name in ``PIXEL_LOSSES``, a ``PixelLoss`` class, or a callable
#: ``(logits, labels, valid, step, steps) -> (N, H, W)``.
LossSpec = Union[str, type, PixelLossFunction]
#: ``None`` (always ``eps``), a name in ``RADIUS_SCHEDULES`` or ``[(radius factor, fraction of steps), ...]``.
RadiusSchedule = Union[str, Sequence[tuple[float, float]], None]


@dataclass
class LinfAttackStats(AttackStats):
    """[AttackStats][segrobust.attacks.AttackStats] plus the diagnostics of an L∞ attack.

    Rows ``t = 0 … steps`` follow the iterates across all radius stages.
    ``objective`` is the value the attack ascends (the loss's per-image mean
    over valid pixels, negated for targeted attacks and AMA); ``step_size`` is
    the step rule's step size per image; ``radius`` the L∞ radius of the stage;
    ``scored`` marks the rows inside the ``eps`` ball (the only candidates for
    the returned iterate). ``pixel_accuracy`` is the per-iteration accuracy
    curve (at the stage's radius). ``forward_passes`` / ``backward_passes``
    count the model passes per image. Gradient-masking flags per image:
    ``loss_never_rose`` (no step raised the objective), ``zero_gradient`` (an
    all-zero input gradient while the image still had pixels to win),
    ``nonfinite_gradient`` (NaN/Inf in the logits or gradient: by default the
    attack raises [NonFiniteGradientError][segrobust.attacks.NonFiniteGradientError];
    with ``nonfinite="warn"`` it warns, marks the image and treats NaN entries as 0).
    """

    # Defaults only because AttackStats ends with a defaulted field; the attack always fills them.
    objective: torch.Tensor = None  # (steps + 1, N)
    step_size: torch.Tensor = None  # (steps + 1, N)
    radius: torch.Tensor = None  # (steps + 1,)
    scored: torch.Tensor = None  # (steps + 1,) bool
    forward_passes: torch.Tensor = None  # (N,)
    backward_passes: torch.Tensor = None  # (N,)
    loss_never_rose: torch.Tensor = None  # (N,) bool
    zero_gradient: torch.Tensor = None  # (N,) bool


#: APGD's statistics are every L∞ attack's: the same class.
APGDStats = LinfAttackStats

#: ``control=``: the objective of the step rule's control (the loss ascended, or the cross-entropy).
CONTROLS = ("loss", "ce")
#: ``handover=``: what a radius stage hands to the next (its final iterate, or its best one).
HANDOVERS = ("last", "best")


class _StageBest:
    """The best iterate of one radius stage by pixel accuracy (lowest when ascending; ties: the later one)."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.key: Optional[torch.Tensor] = None

    def update(self, x: torch.Tensor, accuracy: torch.Tensor, direction: int) -> _StageBest:
        key = direction * accuracy
        better = torch.ones_like(key, dtype=torch.bool) if self.key is None else key <= self.key
        self.key = key if self.key is None else torch.where(better, key, self.key)
        self.x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x, self.x)
        return self


class _Run:
    """Per-call state of one attack run: the records and the iterate tracker."""

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

    def stats(self) -> LinfAttackStats:
        base = self.tracker.stats()
        return LinfAttackStats(
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


class LinfAttack(SegAttack):
    r"""An L∞ attack on a pixel loss with a step rule: the one implementation behind NAA, AMA,
    SegPGD, CosPGD, EroSeg and APGD, which differ only in their default loss and step rule.

    Per iteration: one forward pass gives the logits; the pixel loss ``L``
    (per pixel, zero on ignored pixels) is reduced over valid pixels, its
    input gradient comes from one backward pass, and the
    [step rule][segrobust.attacks.steps] moves the iterate inside the ball.
    The best iterate per image (lowest pixel accuracy; highest for AMA and
    targeted attacks), the statistics and the NaN checks come from the logits
    of that pass; the final iterate is scored by one forward without gradient.
    Targeted modes descend the loss on the target masks.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``, exact
    in the images' dtype.

    Args:
        model: segmentation model returning logits ``(N, K, H, W)`` (or a tuple
            / ``{"out": ...}`` dict holding them).
        eps: L∞ budget in ``(0, 1]``.
        alpha: step size; ``None`` is the step rule's default (PGD: ``2.5 · eps / steps``,
            2/255 at ``eps=8/255, steps=10``; APGD: ``2 · eps`` at the start, then adapted).
            With a radius schedule it scales with each stage's radius.
        steps: iterations (gradient passes) in all; ``None`` is the attack's
            ``default_steps`` (10; APGD: 100).
        loss: name in [PIXEL_LOSSES][segrobust.losses.PIXEL_LOSSES], a
            [PixelLoss][segrobust.losses.PixelLoss] class, or a callable
            ``(logits, labels, valid, step, steps) -> (N, H, W)``; ``None`` is the
            attack's ``default_loss``.
        random_start: start from a uniform point in the (first stage's) ball.
        ignore_index: mask label whose pixels add nothing to the loss.
        nonfinite: ``"raise"`` (default) or ``"warn"`` on NaN/Inf logits or gradients.
        amp: run the model's forward under ``torch.autocast`` of this dtype (see
            [SegAttack][segrobust.attacks.SegAttack]).
        radius_schedule: ``None`` (always ``eps``), ``"sea"`` (30 % of the steps
            at ``2·eps``, 30 % at ``1.5·eps``, 40 % at ``eps``), or
            ``[(radius factor, fraction of steps), ...]`` ending with factor 1; each
            stage starts from the previous stage's final iterate projected into its
            ball, and only iterates of the ``eps`` stage are returned.
        loss_options: keyword options of a named loss or ``PixelLoss`` class (e.g.
            ``{"class_weights": w}`` for ``"balanced_masked_ce"``).
        step_rule: a name in [STEP_RULES][segrobust.attacks.steps.STEP_RULES], a
            [StepRule][segrobust.attacks.steps.StepRule] class or instance (e.g.
            ``APGDStep(momentum=0.5)``); ``None`` is the attack's ``default_step_rule``
            (signed steps of size ``alpha``; APGD's rule for APGD).
        control: the per-image objective the step rule's control watches (APGD's
            step-size halving and restart points): ``"loss"`` (default), the
            objective ascended, or ``"ce"``, the cross-entropy over valid pixels
            (SEA's and TsallisPGD's choice, steady where a masked or scheduled loss
            is not), read from the logits already computed. The gradient is always
            the loss's.
        handover: what each radius stage hands to the next: ``"last"`` (default),
            its final iterate, or ``"best"``, its lowest-accuracy iterate (SEA;
            highest for targeted attacks and AMA; ties go to the later iterate),
            which costs one forward pass per stage to score the stage's final iterate.

    Shape:
        - images: ``(N, C, H, W)`` float in ``[0, 1]``
        - masks: ``(N, H, W)`` integer class ids or ``ignore_index``
        - output: ``(N, C, H, W)``; ``return_stats=True`` adds a
          [LinfAttackStats][segrobust.attacks.LinfAttackStats]

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 4, 1).eval()
        >>> images, masks = torch.rand(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
        >>> attack = LinfAttack(model, 8 / 255, None, 5, loss="js", step_rule="apgd")
        >>> adv = attack(images, masks)
        >>> bool((adv.double() - images.double()).abs().max() <= 8 / 255)
        True
    """

    #: The loss used when ``loss=None``.
    default_loss: ClassVar[LossSpec] = "ce"
    #: The step rule used when ``step_rule=None`` (a class, built with its default settings, or an instance).
    default_step_rule: ClassVar[Union[StepRule, type[StepRule]]] = SignStep
    #: The iterations when ``steps=None``.
    default_steps: ClassVar[int] = 10

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: Optional[float] = None,
        steps: Optional[int] = None,
        *,
        loss: Optional[LossSpec] = None,
        random_start: bool = True,
        ignore_index: int = 255,
        nonfinite: str = "raise",
        amp: Union[str, torch.dtype, None] = None,
        radius_schedule: RadiusSchedule = None,
        loss_options: Optional[dict[str, Any]] = None,
        step_rule: Union[str, StepRule, type[StepRule], None] = None,
        control: str = "loss",
        handover: str = "last",
    ):
        steps = self.default_steps if steps is None else steps
        super().__init__(model, eps, alpha, steps, random_start, ignore_index, nonfinite, amp)
        self.step_rule = make_step_rule(self.default_step_rule if step_rule is None else step_rule)
        if self.alpha is None:
            self.alpha = self.step_rule.default_alpha(self.eps, self.steps)
        if loss_options is not None and not isinstance(loss_options, dict):
            raise TypeError(f"loss_options must be a dict, got {type(loss_options).__name__}")
        self.loss = self.default_loss if loss is None else loss
        self.loss_options = dict(loss_options or {})
        make_pixel_loss(self.loss, **self.loss_options)  # validates the name and options now
        self.radius_schedule = radius_schedule
        self.stages = AF.radius_stages(radius_schedule, self.steps)
        self.control = check_choice(control, CONTROLS, "control")
        self.handover = check_choice(handover, HANDOVERS, "handover")

    # ------------------------------------------------------------------ the attack
    def _attack_batch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        direction: int,
        start: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, LinfAttackStats]:
        """``start``: the first iterate (projected into the first stage's ball) instead of a random or clean one."""
        valid = AF.valid_mask(labels, self.ignore_index)
        loss_fn = make_pixel_loss(
            self.loss, targeted=self.targeted, ignore_index=self.ignore_index, **self.loss_options
        )
        live = [(r, n) for r, n in self.stages[:-1] if n > 0] + [self.stages[-1]]
        bounds = AF.linf_bounds(images, live[0][0] * self.eps)
        if start is not None:
            x = start.to(images.dtype).clamp(*bounds)
        elif self.random_start:
            x = AF.random_linf_start(images, live[0][0] * self.eps, bounds=bounds)
        else:
            x = images.clone()
        tracker = IterateTracker(x, labels, self.ignore_index, direction, self.steps)
        run = _Run(images, labels, valid, self.steps, tracker, loss_fn, direction)
        offset = 0
        for number, (radius, iterations) in enumerate(live):
            if number > 0:
                bounds = AF.linf_bounds(images, radius * self.eps)
            x = self._run_stage(run, x.clamp(*bounds), bounds, radius, iterations, offset, number == len(live) - 1)
            offset += iterations
        return run.tracker.best, run.stats()

    def _run_stage(
        self,
        run: _Run,
        x: torch.Tensor,
        bounds: tuple[torch.Tensor, torch.Tensor],
        radius: float,
        iterations: int,
        offset: int,
        last: bool,
    ) -> torch.Tensor:
        """``iterations`` steps of the step rule at one radius from ``x``; returns what the stage hands over
        (its final iterate, or with ``handover="best"`` its best one) or, in the last stage, the final iterate."""
        alpha = None if self.alpha is None else self.alpha * radius
        state = self.step_rule.start(x, bounds, radius * self.eps, alpha, iterations)
        best = _StageBest(x) if self.handover == "best" and not last else None
        per_stage = getattr(run.loss_fn, "per_stage", False)
        for i in range(iterations + 1):
            if i == iterations and not last:
                if best is None:
                    return x  # the next stage starts (and spends its first pass) from here
                return best.update(x, self._score(run, x), run.direction).x
            row = offset + i
            at = (i + 1, iterations) if per_stage else (row + 1, run.steps)
            logits, objective, grad = self._gradient_pass(run, x, row, need_grad=i < iterations, at=at)
            grad = self._record(run, x, logits, objective, grad, row, radius, state.step_size)
            if i > 0:
                run.rises += objective > run.objective[row - 1]
            if best is not None:
                best.update(x, run.tracker.pixel_accuracy[row], run.direction)
            if i == iterations:
                return x
            control = objective if self.control == "loss" else run.direction * run.tracker.loss[row]
            x = self.step_rule.step(state, i, x, grad, control)
        return x

    def _score(self, run: _Run, x: torch.Tensor) -> torch.Tensor:
        """Per-image pixel accuracy of ``x`` from one forward pass without gradient (checked for NaN)."""
        with torch.no_grad():
            logits = self._logits(x)
        run.forward_passes += 1
        self._check_finite("of a radius stage's final iterate", run.tracker, logits)
        return per_image_pixel_accuracy(logits, run.labels, self.ignore_index)

    # ------------------------------------------------------------------ one pass
    def _gradient_pass(
        self, run: _Run, x: torch.Tensor, row: int, need_grad: bool, at: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Logits, per-image objective ``(N,)`` and (if asked) the input gradient at ``x``, from one forward.

        ``at``: the 1-based step and the step count the loss sees (the whole run's, or the stage's).
        """
        per_image = self.step_rule.per_image_objective
        with torch.enable_grad() if need_grad else torch.no_grad():
            x = x.detach().requires_grad_(need_grad)
            logits = self._logits(x)
            step, steps = max(1, min(at[0], at[1])), max(at[1], 1)  # the final pass scores at the last step
            pixel = run.loss_fn(logits, run.labels, run.valid, step, steps)
            check_pixel_losses(pixel, run.labels, "loss")
            scored = pixel if per_image else pixel.detach()
            objective = run.direction * AF.masked_mean(scored.float(), run.valid, per_image=True)
            grad = None
            if need_grad:
                ascended = objective.sum() if per_image else run.direction * AF.masked_mean(pixel, run.valid)
                grad = self._input_gradients(ascended, (x,))[0]
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
        step_size: torch.Tensor,
    ) -> Optional[torch.Tensor]:
        """Writes row ``row`` of the statistics; checks the logits and gradient (``nonfinite`` policy)."""
        run.objective[row], run.step_size[row], run.radius[row] = objective, step_size, radius * self.eps
        scored = radius == 1.0  # a Python bool: no host sync
        run.scored[row] = scored
        pixel_ce = AF.pixel_cross_entropy(logits, run.labels, self.ignore_index)
        if scored:
            run.tracker.update(x, logits, pixel_ce, row)
        else:
            run.tracker.loss[row] = AF.masked_mean(pixel_ce.float(), run.valid, per_image=True)
            run.tracker.pixel_accuracy[row] = per_image_pixel_accuracy(logits, run.labels, self.ignore_index)
        where = "of the final iterate" if grad is None else self._at(row + 1)
        self._check_finite(where, run.tracker, logits, [grad])  # raises, or warns and marks (nonfinite="warn")
        if grad is None:
            return None
        flat = grad.flatten(1)
        acc = run.tracker.pixel_accuracy[row]
        holds = (acc > 0) if run.direction > 0 else (acc < 1)
        run.zero_gradient |= (flat == 0).all(1) & holds & run.valid.flatten(1).any(1)
        return torch.nan_to_num(grad, nan=0.0)
