"""Step rules: how an L∞ attack moves its iterate, the plug-in of [LinfAttack][segrobust.attacks.LinfAttack].

An L∞ attack is a pixel loss (from [segrobust.losses][]) and a step rule. The
attack owns everything else: the forward and backward pass, the checks, the
radius schedule, best-iterate tracking and the statistics. A rule only turns
the gradient of the objective into the next iterate:

```python
state = rule.start(x, bounds, radius, alpha, iterations)  # once per radius stage of a call
for i in range(iterations):
    ...  # the attack computes the objective (N,) and its input gradient at x
    x = rule.step(state, i, x, grad, objective)  # must stay in bounds
```

``grad`` is the gradient of the objective the attack *ascends* (the loss,
negated for targeted attacks and AMA), with NaN entries already set to 0.
``objective`` is its per-image value ``(N,)`` at ``x``. ``bounds`` is the
exact box of the stage's ε ball in ``[0, 1]``
([linf_bounds][segrobust.attacks.functional.linf_bounds]): clamping to it is
the projection. ``radius`` is the stage's L∞ radius and ``alpha`` the
attack's ``alpha`` scaled to that radius (``None`` when the user gave none and
[default_alpha][segrobust.attacks.steps.StepRule.default_alpha] returned
``None``). ``state.step_size`` ``(N,)`` is recorded in the statistics.

A rule object holds only its settings (validated in ``__init__``); everything
that changes during a call lives in the state that ``start`` returns, so one
attack may run re-entrantly. A new rule (an Adam-style update, say) is one
class here and one line in [STEP_RULES][segrobust.attacks.steps.STEP_RULES];
every L∞ attack then takes it as ``step_rule=``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

import torch

from segrobust.attacks import functional as AF
from segrobust.validation import check_bool, check_number

__all__ = ["STEP_RULES", "APGDStep", "PAdamStep", "SignStep", "StepRule", "make_step_rule"]

Bounds = tuple[torch.Tensor, torch.Tensor]


class StepRule:
    """Base of the step rules (see the module's description for the protocol)."""

    #: True: the gradient is that of the sum of per-image objectives (per-image step control);
    #: False: that of the batch mean over all valid pixels (what PGD implementations differentiate).
    per_image_objective: ClassVar[bool] = True

    def default_alpha(self, eps: float, steps: int) -> Optional[float]:
        """The attack's ``alpha`` when the user gives none (``None``: the rule picks its own per stage)."""
        return None

    def start(self, x: torch.Tensor, bounds: Bounds, radius: float, alpha: Optional[float], iterations: int) -> Any:
        """The state of one radius stage starting at ``x``; must have ``step_size`` ``(N,)``."""
        raise NotImplementedError

    def step(self, state: Any, i: int, x: torch.Tensor, grad: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
        """The iterate after iterate ``i`` (0-based within the stage), inside ``state``'s bounds."""
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({settings})"


@dataclass
class _FixedStepState:
    bounds: Bounds
    alpha: float
    step_size: torch.Tensor


class SignStep(StepRule):
    r"""PGD's rule (Madry et al., ICLR 2018): ``x ← Π(x + α·sign ∇L)`` with a fixed step ``α``.

    ``α`` defaults to ``2.5 · eps / steps`` (2/255 at ``eps=8/255, steps=10``),
    scaled with the radius of each stage. The gradient is that of the batch
    mean of the pixel loss, as PGD implementations (torchattacks, SegPGD,
    CosPGD) take it.
    """

    per_image_objective = False

    def default_alpha(self, eps: float, steps: int) -> Optional[float]:
        return 2.5 * eps / max(steps, 1)

    def start(
        self, x: torch.Tensor, bounds: Bounds, radius: float, alpha: Optional[float], iterations: int
    ) -> _FixedStepState:
        if alpha is None:
            raise ValueError("SignStep needs a step size alpha")
        return _FixedStepState(bounds, alpha, torch.full((x.shape[0],), alpha, device=x.device))

    def step(
        self, state: _FixedStepState, i: int, x: torch.Tensor, grad: torch.Tensor, objective: torch.Tensor
    ) -> torch.Tensor:
        return AF.sign_step(x, grad, state.alpha).clamp(*state.bounds)


@dataclass
class _APGDState:
    bounds: Bounds
    step_size: torch.Tensor  # η per image
    checkpoints: set[int]
    x_prev: torch.Tensor
    best_objective: torch.Tensor
    x_best: torch.Tensor
    grad_best: Optional[torch.Tensor] = None
    halved_last: Optional[torch.Tensor] = None
    best_at_checkpoint: Optional[torch.Tensor] = None
    since_checkpoint: list[torch.Tensor] = field(default_factory=list)  # objectives from the last checkpoint on


class APGDStep(StepRule):
    r"""APGD's rule (Croce & Hein, ICML 2020), per image.

    Step size ``η = 2·radius`` at the start of a stage (or ``alpha``); momentum step
    ``z = Π(x_k + η·sign ∇L)``,
    ``x_{k+1} = Π(x_k + a·(z − x_k) + (1 − a)·(x_k − x_{k−1}))`` with ``a = 1`` on
    the first step and ``momentum`` after; at the checkpoints of
    [apgd_checkpoints][segrobust.attacks.functional.apgd_checkpoints] an image
    halves ``η`` and restarts from its best-objective point (with zero momentum)
    by [apgd_should_halve][segrobust.attacks.functional.apgd_should_halve].

    Args:
        momentum: ``a`` after the first step, in ``[0, 1]``.
        rho: fraction of objective-raising steps below which ``η`` is halved, in ``(0, 1]``.
        checkpoint_p1, checkpoint_decrement, checkpoint_min_gap: the checkpoint
            recursion's ``p_1``, ``0.03`` and ``0.06``.
    """

    def __init__(
        self,
        *,
        momentum: float = 0.75,
        rho: float = 0.75,
        checkpoint_p1: float = 0.22,
        checkpoint_decrement: float = 0.03,
        checkpoint_min_gap: float = 0.06,
    ):
        self.momentum = check_number(momentum, "momentum", low=0, high=1)
        self.rho = check_number(rho, "rho", low=0, high=1, low_inclusive=False)
        self.checkpoint_args = (checkpoint_p1, checkpoint_decrement, checkpoint_min_gap)
        AF.apgd_checkpoints(1, *self.checkpoint_args)  # bad recursion parameters fail here

    def start(
        self, x: torch.Tensor, bounds: Bounds, radius: float, alpha: Optional[float], iterations: int
    ) -> _APGDState:
        n = x.shape[0]
        eta = torch.full((n,), 2.0 * radius if alpha is None else alpha, device=x.device)
        checkpoints = set(AF.apgd_checkpoints(iterations, *self.checkpoint_args)) - {0, iterations}
        best = torch.full((n,), -float("inf"), device=x.device)
        return _APGDState(bounds, eta, checkpoints, x_prev=x, best_objective=best, x_best=x)

    def step(
        self, state: _APGDState, i: int, x: torch.Tensor, grad: torch.Tensor, objective: torch.Tensor
    ) -> torch.Tensor:
        view = (-1,) + (1,) * (x.dim() - 1)
        improved = objective > state.best_objective
        state.best_objective = torch.where(improved, objective, state.best_objective)
        state.x_best = torch.where(improved.view(view), x, state.x_best)
        state.grad_best = grad if state.grad_best is None else torch.where(improved.view(view), grad, state.grad_best)
        if i == 0:
            state.best_at_checkpoint = state.best_objective.clone()
            state.halved_last = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        state.since_checkpoint.append(objective)
        x_prev = state.x_prev
        if i in state.checkpoints:
            halve = AF.apgd_should_halve(
                torch.stack(state.since_checkpoint),
                state.best_objective,
                state.best_at_checkpoint,
                state.halved_last,
                self.rho,
            )
            state.step_size = torch.where(halve, state.step_size / 2, state.step_size)
            x = torch.where(halve.view(view), state.x_best, x)
            x_prev = torch.where(halve.view(view), state.x_best, x_prev)
            grad = torch.where(halve.view(view), state.grad_best, grad)
            state.halved_last, state.best_at_checkpoint = halve, state.best_objective.clone()
            state.since_checkpoint = [objective]
        a = 1.0 if i == 0 else self.momentum
        z = (x + state.step_size.view(view) * grad.sign()).clamp(*state.bounds)
        state.x_prev = x
        return (x + a * (z - x) + (1 - a) * (x - x_prev)).clamp(*state.bounds)


@dataclass
class _PAdamState:
    bounds: Bounds
    lr: float  # the stage's initial learning rate
    lr_final: float
    iterations: int
    step_size: torch.Tensor  # (N,) the learning rate of the last step
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    max_exp_avg_sq: torch.Tensor


class PAdamStep(StepRule):
    r"""RSE's PAdam (Halmosi, Mohos, Jelasity, ECCV 2024): Adam with AMSGrad ascending the objective, projected.

    Per step ``t`` (1-based within a radius stage), with ``g`` the gradient
    divided by its per-image maximum absolute value (so the loss's scale and
    the batch size do not matter against Adam's ``eps``):
    ``m ← β₁m + (1 − β₁)g``, ``v ← β₂v + (1 − β₂)g²``, ``v̂ ← max(v̂, v)``,
    ``d = (m / (1 − β₁ᵗ)) / (√v̂ / √(1 − β₂ᵗ) + eps)`` (``torch.optim.Adam`` with
    ``amsgrad=True, maximize=True``), then ``x ← Π(x + lr_t · d)``, or
    ``Π(x + lr_t · sign d)`` with ``signed=True``. The moments survive the
    projection (RSE keeps them); every radius stage starts a fresh state.
    The first step is ``lr · sign g`` exactly; a coordinate whose gradient
    keeps flipping sign moves less.

    ``lr = lr_factor · radius`` (RSE's fixed 2/255 at 8/255 is the default
    ``lr_factor = 0.25``), or the attack's ``alpha`` scaled to the stage's
    radius; with ``lr_final_factor`` it decays to ``lr_final_factor · radius``
    over the stage on a cosine. No step size to tune, no best-point restarts:
    the attack's best-iterate tracking keeps the strongest point.

    Args:
        lr_factor: initial learning rate as a fraction of the radius, in ``(0, 2]``.
        lr_final_factor: ``None`` (constant) or the final learning rate as a
            fraction of the radius, in ``[0, lr_factor]``.
        betas: Adam's ``(β₁, β₂)``, each in ``[0, 1)``.
        eps: Adam's ``eps`` (added to ``√v̂``), positive.
        signed: step along the sign of Adam's direction.

    Examples:
        >>> from segrobust.attacks import LinfAttack
        >>> rule = PAdamStep(lr_final_factor=0.05)
        >>> attack = LinfAttack(model, 8 / 255, None, 100, loss="cosine", step_rule=rule)  # doctest: +SKIP
        >>> rule.lr_factor, rule.signed
        (0.25, False)
    """

    def __init__(
        self,
        *,
        lr_factor: float = 0.25,
        lr_final_factor: Optional[float] = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        signed: bool = False,
    ):
        self.lr_factor = check_number(lr_factor, "lr_factor", low=0, high=2, low_inclusive=False)
        self.lr_final_factor = (
            None
            if lr_final_factor is None
            else check_number(lr_final_factor, "lr_final_factor", low=0, high=self.lr_factor)
        )
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(
            check_number(b, f"betas[{i}]", low=0, high=1, high_inclusive=False) for i, b in enumerate(betas)
        )
        self.eps = check_number(eps, "eps", low=0, low_inclusive=False)
        self.signed = check_bool(signed, "signed")

    def start(
        self, x: torch.Tensor, bounds: Bounds, radius: float, alpha: Optional[float], iterations: int
    ) -> _PAdamState:
        lr = self.lr_factor * radius if alpha is None else alpha
        lr_final = lr if self.lr_final_factor is None else self.lr_final_factor * radius
        zeros = torch.zeros_like(x)
        step_size = torch.full((x.shape[0],), lr, device=x.device)
        return _PAdamState(bounds, lr, min(lr_final, lr), iterations, step_size, zeros, zeros.clone(), zeros.clone())

    def learning_rate(self, state: _PAdamState, i: int) -> float:
        """The learning rate of step ``i`` (0-based) of the stage: constant, or cosine-decayed to ``lr_final``."""
        if state.lr_final == state.lr:
            return state.lr
        progress = i / max(state.iterations - 1, 1)
        return state.lr_final + (state.lr - state.lr_final) * (1 + math.cos(math.pi * progress)) / 2

    def step(
        self, state: _PAdamState, i: int, x: torch.Tensor, grad: torch.Tensor, objective: torch.Tensor
    ) -> torch.Tensor:
        beta1, beta2 = self.betas
        t = i + 1
        view = (-1,) + (1,) * (x.dim() - 1)
        scale = grad.flatten(1).abs().amax(1).view(view)
        g = torch.where(scale > 0, grad / scale.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(grad))
        state.exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)
        state.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        torch.maximum(state.max_exp_avg_sq, state.exp_avg_sq, out=state.max_exp_avg_sq)
        denom = state.max_exp_avg_sq.sqrt() / math.sqrt(1 - beta2**t) + self.eps
        direction = state.exp_avg / (1 - beta1**t) / denom
        lr = self.learning_rate(state, i)
        state.step_size = torch.full_like(state.step_size, lr)
        move = direction.sign() if self.signed else direction
        return (x + lr * move).clamp(*state.bounds)


STEP_RULES: dict[str, type[StepRule]] = {"sign": SignStep, "apgd": APGDStep, "padam": PAdamStep}
"""Step rules by name (a plain dict; add your own): ``step_rule="apgd"`` on any L∞ attack."""


def make_step_rule(rule: Union[str, StepRule, type[StepRule]], **options: Any) -> StepRule:
    """A step rule from a name in [STEP_RULES][segrobust.attacks.steps.STEP_RULES], a class (built with
    ``options``) or an instance (returned as is).

    Examples:
        >>> make_step_rule("apgd", momentum=0.5).momentum
        0.5
    """
    if isinstance(rule, str):
        if rule not in STEP_RULES:
            raise ValueError(f"unknown step_rule {rule!r}; expected one of {sorted(STEP_RULES)} or a StepRule")
        rule = STEP_RULES[rule]
    if isinstance(rule, type) and issubclass(rule, StepRule):
        try:
            return rule(**options)
        except TypeError as err:
            raise TypeError(f"step rule options {sorted(options)} do not fit {rule.__name__}: {err}") from None
    if isinstance(rule, StepRule):
        if options:
            raise TypeError(f"step rule options {sorted(options)} only apply to a step rule name or class")
        return rule
    raise TypeError(f"step_rule must be a name in STEP_RULES, a StepRule class or instance, got {rule!r:.60}")
