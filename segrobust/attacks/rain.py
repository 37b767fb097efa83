"""RainAttack: adversarial rain, optionally with an L∞ pixel perturbation (the PEARL threat)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from segrobust.attacks import functional as AF
from segrobust.attacks.engine import AttackStats, IterateTracker, SegAttack
from segrobust.rain.functional import (
    RAIN_PARAM_KEYS,
    RainParams,
    broadcast_rain_params,
    check_depth_prior,
    check_edge_softness,
    clamp_rain_params,
    ground_plane_depth,
    render_rain,
    resolve_rain_ranges,
    sample_rain_params,
    scale_rain_ranges,
)
from segrobust.rain.presets import CONTINUOUS_RAIN_PARAMS, RAIN_PARAM_BOUNDS
from segrobust.validation import check_int, check_number

__all__ = ["RainAttack", "RainAttackStats"]

# The optimised variables: the continuous parameters, with the per-layer angle split into the
# image's angle and each layer's offset from it, as sample_rain_params draws them.
_ANGLE_BASE, _ANGLE_OFFSET = "angle_base", "angle_offset"


def _clamp_keep_grad(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``clamp`` whose gradient is 1 on the closed range (torch's derivative at a bound varies by version)."""
    clamped = values.clamp(low, high)
    if not values.requires_grad:
        return clamped
    return torch.where(clamped == values, values, clamped)


@dataclass
class RainAttackStats(AttackStats):
    """[AttackStats][segrobust.attacks.AttackStats] plus the rain of each returned image (a replayable draw)."""

    params: Optional[RainParams] = None


class RainAttack(SegAttack):
    r"""Adversarial rain: gradient ascent of the segmentation loss over the rain parameters.

    The rain is the differentiable RainCityscapes model of
    [`segrobust.rain.render_rain`][segrobust.rain.functional.render_rain]. Starting from a draw of
    [`sample_rain_params`][segrobust.rain.functional.sample_rain_params], each step renders the rain, runs
    the model once forward and once backward, and moves every attacked
    parameter by a signed-gradient step of ``param_step`` times the width of
    its range, then projects it back into its range. The noise field (where
    the drops are) stays fixed, so every iterate is a replayable draw. With
    ``eps > 0`` an L∞ perturbation ``δ`` is added to the rainy image and
    ascended jointly, with the same forward and backward pass (the PEARL
    threat model: rain plus adversarial noise).

    Threat model: white box. The output is ``clamp(render_rain(x, θ) + δ, 0, 1)``,
    with ``θ`` in the feasible set (below) and ``‖δ‖∞ ≤ eps`` (exactly, in the
    images' dtype for float32/float64 images, around the rainy image). The
    distance to the clean image is not bounded, since rain is not a small
    perturbation. What is bounded is the rain's physics: every parameter stays
    in ``ranges``.

    **Feasible set.** It is the support of ``sample_rain_params(..., ranges)``,
    so the attack searches exactly the rain that random draws from the same
    ranges can produce. Each continuous parameter lies in its ``(low, high)``
    range (a single number fixes it). ``ranges`` must lie inside
    `RAIN_PARAM_BOUNDS`, which is checked. The angle of
    streak layer ``l`` is ``a + o_l``: the image angle ``a`` lies in the angle
    range and the offsets ``o_l`` in ``±angle_spread``, clipped to the angle
    bounds. ``num_layers`` and the noise field do not change.

    **This project's reading** (``docs/algorithms.md`` leaves these open; each is an
    argument): signed-gradient steps on the parameters, scaled by each range's
    width, rather than Adam or raw gradients, because the units differ by
    orders of magnitude (density 0.002, angle 25°). By default the step is
    ``1.25 / steps`` of the range, which mirrors the pixel default
    ``2.5·ε/steps`` with the half-width 0.5 of the normalised box as ``ε``.
    The start is a random draw from the ranges, or the middle of every range
    with ``random_start=False``. The loss is the mean per-pixel cross-entropy
    over valid pixels. The rain and ``δ`` share one loss and one step.

    Args:
        model: segmentation model returning logits ``(N, K, H, W)`` (or a tuple
            / ``{"out": ...}`` dict holding them).
        eps: L∞ budget of the joint pixel perturbation, in ``[0, 1]``.
            ``0`` (the default) means pure rain.
        alpha: step of the pixel perturbation. ``None`` uses
            ``2.5 · eps / steps``.
        steps: number of gradient steps (one forward and one backward each).
        ranges: a preset name (``"light"``, ``"medium"``, ``"heavy"``,
            ``"fog_only"``) or a mapping of ranges completed from ``"medium"``
            (the same ranges as [`RandomRainStreaks`][segrobust.rain.augmentation.RandomRainStreaks]).
            This is the feasible set. Streak lengths are in pixels: see
            ``reference_height``, or scale a mapping to your image size.
        random_start, ignore_index, nonfinite, amp: as every attack (see
            [SegAttack][segrobust.attacks.SegAttack]).
        param_step: step as a fraction of each parameter's range width, in
            ``(0, 1]``. ``None`` uses ``min(1, 1.25 / steps)``.
        attack_keys: which continuous parameters to optimise. The default is all
            of `CONTINUOUS_RAIN_PARAMS`. The others keep
            their start value. ``()`` with ``eps=0`` is plain random rain,
            and with ``eps > 0`` it is an L∞ attack on randomly rainy images.
        random_start: start from a random draw from ``ranges`` and a uniform
            ``δ`` in the ball. Otherwise start from the middle of every range
            (with a random noise field) and ``δ = 0``.
        depth_prior: keyword arguments of
            [`ground_plane_depth`][segrobust.rain.functional.ground_plane_depth] for images rendered
            without a depth.
        edge_softness: pixels over which a streak end fades.
        reference_height: the image height a preset's streak lengths are tuned
            for (360 for the built-in presets): a preset named in ``ranges`` is
            scaled to the attacked images' height at call time, as
            [scale_rain_ranges][segrobust.rain.functional.scale_rain_ranges] does. ``None``
            (the default) uses the ranges as given; a mapping is always used as given.

    Call:
        ``attack(images, masks=None, *, depth=None, init_params=None,
        return_stats=False, return_params=False)``.
        ``depth`` ``(N or 1, 1, H, W)`` is a metric depth for the renderer; the
        ground-plane prior is used without it. ``init_params`` is a rain draw
        to start from, e.g. from ``sample_rain_params`` or
        ``RandomRainStreaks._params``. Its noise field is kept and its values
        are projected into the ranges. It replaces the random start of the
        rain, but not that of ``δ``. The call returns the adversarial images,
        then the [`RainAttackStats`][segrobust.attacks.RainAttackStats] (an [`AttackStats`][segrobust.attacks.AttackStats] that also holds
        the rain of each returned image) if ``return_stats``, then the rain
        parameters of each returned image if ``return_params``. Those are a
        dict of `RAIN_PARAM_KEYS`, noise included, so
        ``render_rain(images, params, depth)`` replays the rain. ``images`` and
        ``masks`` follow [`SegAttack`][segrobust.attacks.SegAttack].

    Shape:
        - images: ``(N, C, H, W)`` float in ``[0, 1]``
        - masks: ``(N, H, W)`` integer class ids or ``ignore_index``
        - output: ``(N, C, H, W)``, the best iterate per image (lowest pixel accuracy)

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 4, 1).eval()
        >>> images, masks = torch.rand(2, 3, 16, 16), torch.randint(0, 4, (2, 16, 16))
        >>> attack = RainAttack(model, 4 / 255, steps=2, ranges={"length": (4.0, 8.0)})
        >>> adv, params = attack(images, masks, return_params=True)
        >>> adv.shape, sorted(params) == sorted(RAIN_PARAM_KEYS)
        (torch.Size([2, 3, 16, 16]), True)
        >>> rain_only = render_rain(images, params)
        >>> bool((adv - rain_only).abs().max() <= 4 / 255 + 1e-6)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.0,
        alpha: Optional[float] = None,
        steps: int = 10,
        *,
        ranges: Union[str, Mapping[str, object]] = "medium",
        random_start: bool = True,
        ignore_index: int = 255,
        nonfinite: str = "raise",
        amp: Union[str, torch.dtype, None] = None,
        param_step: Optional[float] = None,
        attack_keys: Optional[Sequence[str]] = None,
        depth_prior: Optional[Mapping[str, Any]] = None,
        edge_softness: float = 0.5,
        reference_height: Optional[int] = None,
    ):
        super().__init__(model, eps, alpha, steps, random_start, ignore_index, nonfinite, amp)
        if self.alpha is None:
            self.alpha = 2.5 * self.eps / max(self.steps, 1)
        self.ranges: Dict[str, Any] = resolve_rain_ranges(ranges)
        self._preset = ranges if isinstance(ranges, str) else None
        self.reference_height = (
            None if reference_height is None else check_int(reference_height, "reference_height", low=1)
        )
        if param_step is None:
            param_step = min(1.0, 1.25 / max(self.steps, 1))
        self.param_step = check_number(param_step, "param_step", low=0, high=1, low_inclusive=False)
        self.attack_keys = self._checked_keys(attack_keys)
        depth_prior = check_depth_prior(depth_prior)
        ground_plane_depth(2, 2, **depth_prior)  # a bad prior fails here, not mid-attack
        self.depth_prior = depth_prior
        self.edge_softness = check_edge_softness(edge_softness)

    _eps_may_be_zero = True
    _returns_eps_ball = False  # rain is not a small perturbation: only its pixel part lies in an eps ball

    def ranges_for(self, height: int) -> Dict[str, Any]:
        """The feasible ranges for images ``height`` pixels high (a preset scaled from ``reference_height``)."""
        if self._preset is None or self.reference_height is None:
            return self.ranges
        return scale_rain_ranges(self._preset, height, self.reference_height)

    @staticmethod
    def _checked_keys(attack_keys: Optional[Sequence[str]]) -> Tuple[str, ...]:
        if attack_keys is None:
            return CONTINUOUS_RAIN_PARAMS
        if not isinstance(attack_keys, (list, tuple, set, frozenset)) or not all(
            isinstance(key, str) for key in attack_keys
        ):
            raise TypeError(f"attack_keys must be a sequence of parameter names, got {attack_keys!r}")
        unknown = sorted(set(attack_keys) - set(CONTINUOUS_RAIN_PARAMS))
        if unknown:
            raise ValueError(
                f"attack_keys has {unknown}, which are not continuous rain parameters; expected some of "
                f"{list(CONTINUOUS_RAIN_PARAMS)} (the noise field stays fixed: moving it would make "
                "drops appear anywhere, which is no longer rain)"
            )
        return tuple(key for key in CONTINUOUS_RAIN_PARAMS if key in attack_keys)

    @staticmethod
    def _feasible_boxes(ranges: Mapping[str, Any]) -> Dict[str, Tuple[float, float]]:
        boxes: Dict[str, Tuple[float, float]] = {key: ranges[key] for key in CONTINUOUS_RAIN_PARAMS if key != "angle"}
        spread = float(ranges["angle_spread"])
        boxes[_ANGLE_BASE] = ranges["angle"]
        boxes[_ANGLE_OFFSET] = (-spread, spread)
        return boxes

    # ------------------------------------------------------------------ calling
    def __call__(  # type: ignore[override]
        self,
        images: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        *,
        depth: Optional[torch.Tensor] = None,
        init_params: Optional[Mapping[str, torch.Tensor]] = None,
        return_stats: bool = False,
        return_params: bool = False,
    ) -> Union[torch.Tensor, Tuple[Any, ...]]:
        if depth is not None and not isinstance(depth, torch.Tensor):
            raise TypeError(f"depth must be a torch.Tensor (N, 1, H, W) or None, got {type(depth).__name__}")
        if init_params is not None and not isinstance(init_params, Mapping):
            raise TypeError(
                f"init_params must be a mapping of rain parameter tensors (a rain draw) or None, "
                f"got {type(init_params).__name__}"
            )
        self._refuse_stock_multiattack(sys._getframe(1))
        adv, stats = self._call(images, labels, {"depth": depth, "init_params": init_params})
        outputs: Tuple[Any, ...] = (adv,)
        if return_stats:
            outputs += (stats,)
        if return_params:
            assert isinstance(stats, RainAttackStats) and stats.params is not None
            outputs += ({key: value.to(images.device) for key, value in stats.params.items()},)
        return outputs[0] if len(outputs) == 1 else outputs

    # ------------------------------------------------------------------ parameters
    def _start_params(
        self,
        images: torch.Tensor,
        dtype: torch.dtype,
        init_params: Optional[Mapping[str, torch.Tensor]],
        ranges: Mapping[str, Any],
        boxes: Mapping[str, Tuple[float, float]],
    ) -> Tuple[RainParams, torch.Tensor]:
        """The optimised variables (angle split into image angle and layer offsets) and the noise field."""
        batch, channels, height, width = images.shape
        if init_params is None:
            draw = sample_rain_params(batch, (height, width), ranges, device=images.device, dtype=dtype)
            if not self.random_start:
                for key in CONTINUOUS_RAIN_PARAMS:
                    low, high = ranges[key]
                    draw[key] = torch.full_like(draw[key], (low + high) / 2)
        else:
            draw = _canonical_params(init_params, batch, channels, (height, width), images.device, dtype)
        angle = draw["angle"]
        low, high = ranges["angle"]
        spread = float(ranges["angle_spread"])
        # Any image angle within `spread` of every layer's angle reproduces the draw exactly; take the
        # middle of that interval (or, for a draw outside the ranges, its projection).
        lowest = torch.maximum(angle.max(dim=1, keepdim=True).values - spread, torch.full_like(angle[:, :1], low))
        highest = torch.minimum(angle.min(dim=1, keepdim=True).values + spread, torch.full_like(angle[:, :1], high))
        middle = ((angle.max(dim=1, keepdim=True).values + angle.min(dim=1, keepdim=True).values) / 2).clamp(low, high)
        base = torch.where(lowest <= highest, (lowest + highest) / 2, middle)
        variables: RainParams = {key: draw[key] for key in CONTINUOUS_RAIN_PARAMS if key != "angle"}
        variables[_ANGLE_BASE] = base
        variables[_ANGLE_OFFSET] = angle - base
        return clamp_rain_params(variables, boxes), draw["noise"]

    @staticmethod
    def _compose(variables: RainParams, noise: torch.Tensor) -> RainParams:
        params: RainParams = {key: variables[key] for key in CONTINUOUS_RAIN_PARAMS if key != "angle"}
        params["angle"] = _clamp_keep_grad(
            variables[_ANGLE_BASE] + variables[_ANGLE_OFFSET], *RAIN_PARAM_BOUNDS["angle"]
        )
        params["noise"] = noise
        return params

    def _attacked_variables(self) -> Tuple[str, ...]:
        names = [key for key in self.attack_keys if key != "angle"]
        if "angle" in self.attack_keys:
            names += [_ANGLE_BASE, _ANGLE_OFFSET]
        return tuple(names)

    # ------------------------------------------------------------------ attack
    def _render(self, images: torch.Tensor, params: RainParams, depth: Optional[torch.Tensor]) -> torch.Tensor:
        return render_rain(images, params, depth, depth_prior=self.depth_prior, edge_softness=self.edge_softness)

    def _attack_batch(  # type: ignore[override]
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        direction: int,
        depth: Optional[torch.Tensor] = None,
        init_params: Optional[Mapping[str, torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, RainAttackStats]:
        work_dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
        depth = depth.to(images.device) if depth is not None else None
        valid = AF.valid_mask(labels, self.ignore_index)
        ranges = self.ranges_for(images.shape[-2])
        boxes = self._feasible_boxes(ranges)
        variables, noise = self._start_params(images, work_dtype, init_params, ranges, boxes)
        attacked = self._attacked_variables()
        use_delta = self.eps > 0
        if use_delta and self.random_start:
            # torch.rand, not rand_like: the draw must not depend on the input's memory layout
            delta = (2 * torch.rand(images.shape, device=images.device, dtype=images.dtype) - 1) * self.eps
        else:
            delta = torch.zeros_like(images)

        def iterate(variables: RainParams, delta: torch.Tensor) -> Tuple[torch.Tensor, RainParams]:
            params = self._compose(variables, noise)
            rainy = self._render(images, params, depth)
            if not use_delta:
                return rainy, params
            adv = _clamp_keep_grad(rainy + delta, 0.0, 1.0)
            # the exact eps ball around the rainy image in the images' dtype; same gradient as adv
            inside = adv.detach().clamp(*AF.linf_bounds(rainy.detach(), self.eps))
            return (adv - adv.detach()) + inside, params

        with torch.no_grad():
            start, best_params = iterate(variables, delta)
        tracker = IterateTracker(start, labels, self.ignore_index, direction, self.steps)
        leaves = attacked + (("delta",) if use_delta else ())
        for step in range(1, self.steps + 1):
            variables = {key: value.detach().requires_grad_(key in attacked) for key, value in variables.items()}
            delta = delta.detach().requires_grad_(use_delta)
            adv, params = iterate(variables, delta)
            logits = self._logits(adv)
            pixel_loss = AF.pixel_cross_entropy(logits, labels, self.ignore_index)
            if leaves:
                inputs = [variables[key] for key in attacked] + ([delta] if use_delta else [])
                objective = AF.masked_mean(pixel_loss, valid)
                grads = self._input_gradients(objective, inputs, allow_unused=True)
            else:
                grads = ()
            self._check_finite(self._at(step), tracker, logits, grads)
            best_params = self._track(tracker, adv, logits, pixel_loss, step - 1, params, best_params)
            with torch.no_grad():
                stepped = {key: value.detach() for key, value in variables.items()}
                for key, grad in zip(leaves, grads):
                    if grad is None:  # the model ignores this parameter: no step
                        continue
                    grad = torch.nan_to_num(grad, nan=0.0)  # nonfinite="warn": a NaN entry takes no step
                    if key == "delta":
                        delta = (delta.detach() + direction * self.alpha * grad.sign()).clamp(-self.eps, self.eps)
                    else:
                        low, high = boxes[key]
                        stepped[key] = stepped[key] + direction * self.param_step * (high - low) * grad.sign()
                variables = clamp_rain_params(stepped, boxes)
        with torch.no_grad():
            adv, params = iterate(variables, delta.detach())
            logits = self._logits(adv)
            self._check_finite("of the final iterate", tracker, logits)
            pixel_loss = AF.pixel_cross_entropy(logits, labels, self.ignore_index)
            best_params = self._track(tracker, adv, logits, pixel_loss, self.steps, params, best_params)
        stats = tracker.stats()
        return tracker.best, RainAttackStats(
            stats.loss,
            stats.pixel_accuracy,
            stats.best_step,
            stats.nonfinite_gradient,
            stats.confusion,
            params=best_params,
        )

    @staticmethod
    def _track(
        tracker: IterateTracker,
        adv: torch.Tensor,
        logits: torch.Tensor,
        pixel_loss: torch.Tensor,
        index: int,
        params: RainParams,
        best_params: RainParams,
    ) -> RainParams:
        """Update the tracker and keep, per image, the rain of its best iterate."""
        tracker.update(adv.detach(), logits, pixel_loss, index)
        improved = tracker.best_step == index
        return {
            key: torch.where(improved.view(-1, *([1] * (value.dim() - 1))), value.detach(), best_params[key])
            for key, value in params.items()
        }


def _canonical_params(
    params: Mapping[str, torch.Tensor],
    batch: int,
    channels: int,
    size: Tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> RainParams:
    """``init_params`` as fresh tensors of the sampler's shapes: ``(N,)``, ``(N, L)``, noise ``(N, L, H, W)``."""
    missing = [key for key in RAIN_PARAM_KEYS if key not in params]
    if missing:
        raise ValueError(
            f"init_params is missing {missing}; expected a rain draw with the keys {list(RAIN_PARAM_KEYS)} "
            "(e.g. from segrobust.rain.sample_rain_params or RandomRainStreaks._params)"
        )
    for key in RAIN_PARAM_KEYS:
        value = params[key]
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
            raise TypeError(f"init_params[{key!r}] must be a floating point torch.Tensor, got {value!r:.60}")
        if not bool(torch.isfinite(value.detach()).all()):
            raise ValueError(f"init_params[{key!r}] contains NaN or infinite values")
    try:
        out = broadcast_rain_params({key: params[key].detach() for key in RAIN_PARAM_KEYS}, batch, channels, size)
    except ValueError as err:
        raise ValueError(f"init_params: {err}") from None
    if bool(((out["noise"] < 0) | (out["noise"] > 1)).any()):
        raise ValueError("init_params['noise'] must lie in [0, 1]")
    return {key: value.to(device=device, dtype=dtype).clone() for key, value in out.items()}
