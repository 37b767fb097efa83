"""The reliable ensemble (SEA, Croce et al. 2024): L∞ attacks (members) run one after another, worst case per image.

A member is an [EnsembleMember][segrobust.attacks.ensemble.EnsembleMember]:
a pixel loss, an iteration count, a step rule, a radius schedule, APGD's
control objective and stage hand-over, and whether it starts from the worst
case so far. Named sets of members are the presets of
[RELIABLE_PRESETS][segrobust.attacks.ensemble.RELIABLE_PRESETS].
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from segrobust.attacks.apgd import APGD
from segrobust.attacks.engine import SegAttack
from segrobust.attacks.linf import CONTROLS, HANDOVERS, APGDStats, LinfAttack, LossSpec, RadiusSchedule
from segrobust.attacks.steps import APGDStep, StepRule
from segrobust.metrics.functional import confusion_pixel_accuracy, mean_iou
from segrobust.validation import check_bool, check_choice, check_steps

__all__ = [
    "RELIABLE_PRESETS",
    "EnsembleMember",
    "EnsembleStats",
    "ReliableEnsemble",
    "ReliablePreset",
    "greedy_worst_case_miou",
]

SEA_LOSSES = ("masked_ce", "balanced_masked_ce", "js")


def greedy_worst_case_miou(confusions: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Greedy worst-case mIoU over a data set attacked by ``A`` attacks.

    ``confusions`` ``(A, N, K, K)`` holds the confusion matrix of image ``n``
    under attack ``a``. Images are visited in order; each takes the attack whose
    result makes the running (intersection, union) mIoU, i.e. the mIoU of the
    summed confusion matrices so far, lowest (ties: the first attack), computed
    by [mean_iou][segrobust.metrics.mean_iou] as every reported mIoU is. Returns
    the final mIoU and the chosen attack per image ``(N,)``.

    Examples:
        >>> import torch
        >>> good = torch.tensor([[2, 0], [0, 2]]); bad = torch.tensor([[0, 2], [2, 0]])
        >>> miou, choice = greedy_worst_case_miou(torch.stack([torch.stack([good, bad]), torch.stack([bad, good])]))
        >>> miou, choice.tolist()
        (0.0, [1, 0])
    """
    if (
        not isinstance(confusions, torch.Tensor)
        or confusions.dim() != 4
        or confusions.shape[-1] != confusions.shape[-2]
    ):
        shape = tuple(confusions.shape) if isinstance(confusions, torch.Tensor) else type(confusions).__name__
        raise ValueError(f"confusions must be a tensor (A, N, K, K), got {shape}")
    attacks, n, k, _ = confusions.shape
    if attacks == 0:
        raise ValueError("confusions must hold at least one attack (A >= 1)")
    running = torch.zeros(k, k, dtype=torch.long, device=confusions.device)
    choice = torch.zeros(n, dtype=torch.long, device=confusions.device)
    for i in range(n):
        candidates = [mean_iou(running + confusions[a, i].long()) for a in range(attacks)]
        best = min(range(attacks), key=lambda a: math.inf if math.isnan(candidates[a]) else candidates[a])
        choice[i] = best
        running += confusions[best, i].long()
    return mean_iou(running), choice


def _loss_name(loss: Any) -> str:
    return loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss))


def _rule_name(rule: Any) -> str:
    if isinstance(rule, str):
        return rule
    return rule.__name__ if isinstance(rule, type) else type(rule).__name__


@dataclass(frozen=True)
class EnsembleMember:
    """One member of a [ReliableEnsemble][segrobust.attacks.ReliableEnsemble]: an L∞ attack and how it starts.

    The member is a [LinfAttack][segrobust.attacks.LinfAttack] (an
    [APGD][segrobust.attacks.APGD] for the APGD rule) with these settings and
    the ensemble's ``eps``, ``alpha``, ``ignore_index``, ``nonfinite`` and ``amp``.

    Attributes:
        loss: a name in [PIXEL_LOSSES][segrobust.losses.PIXEL_LOSSES], a ``PixelLoss`` class or a callable.
        steps: iterations (gradient passes), at least 1.
        step_rule: a name in [STEP_RULES][segrobust.attacks.steps.STEP_RULES], a class or an instance.
        radius_schedule: ``"sea"`` (default), ``None`` or ``[(radius factor, fraction), ...]``.
        control: ``"loss"`` or ``"ce"``: the objective of APGD's step-size control.
        handover: ``"last"`` or ``"best"``: what a radius stage hands to the next.
        loss_options: options of the loss (e.g. ``{"q_start": -1.0}`` for ``"tsallis"``).
        warm_start: start from the ensemble's current per-image worst case (the
            image with the lowest accuracy that the earlier members returned),
            projected into the first stage's ball, instead of a random point.
        class_weights: give the loss the ensemble's ``class_weights`` (the
            benchmark computes SEA's from the evaluated masks); without them the
            loss does what it does alone (``"balanced_masked_ce"``: per-batch balanced weights).
        name: the member's name in statistics and reports (default: the loss's).

    Examples:
        >>> EnsembleMember("js", 150, control="ce", handover="best", warm_start=True).describe()
        'js ×150 (apgd, radii sea, CE control, best hand-over, warm start)'
    """

    loss: LossSpec
    steps: int
    step_rule: Union[str, StepRule, type[StepRule]] = "apgd"
    radius_schedule: RadiusSchedule = "sea"
    control: str = "loss"
    handover: str = "last"
    loss_options: Mapping[str, Any] = field(default_factory=dict)
    warm_start: bool = False
    class_weights: bool = False
    name: Optional[str] = None

    def __post_init__(self) -> None:
        check_steps(self.steps, "steps", low=1)
        check_choice(self.control, CONTROLS, "control")
        check_choice(self.handover, HANDOVERS, "handover")
        check_bool(self.warm_start, "warm_start")
        check_bool(self.class_weights, "class_weights")
        if not isinstance(self.loss_options, Mapping):
            raise TypeError(f"loss_options must be a dict, got {type(self.loss_options).__name__}")

    @property
    def label(self) -> str:
        """The member's name: ``name``, else the loss's."""
        return self.name or _loss_name(self.loss)

    def describe(self) -> str:
        """One line: loss, iterations and the settings."""
        schedule = (
            self.radius_schedule if isinstance(self.radius_schedule, str) or self.radius_schedule is None else "custom"
        )
        parts = [_rule_name(self.step_rule), f"radii {schedule}"]
        parts += [f"{self.control.upper() if self.control == 'ce' else 'loss'} control", f"{self.handover} hand-over"]
        parts += ["warm start"] * self.warm_start + ["class weights"] * self.class_weights
        options = ", ".join(f"{key}={value!r}" for key, value in self.loss_options.items())
        return f"{self.label} ×{self.steps} ({', '.join(parts)}{'; ' + options if options else ''})"


@dataclass(frozen=True)
class ReliablePreset:
    """A named set of members: ``ReliableEnsemble(model, eps, preset=NAME)``.

    Examples:
        >>> RELIABLE_PRESETS["default"].iterations, RELIABLE_PRESETS["default"].describe()
        (300, 'masked_ce ×150 → js ×150')
    """

    members: tuple[EnsembleMember, ...]
    description: str

    @property
    def iterations(self) -> int:
        """Iterations (gradient passes) per image, all members together, when no image stops early."""
        return sum(member.steps for member in self.members)

    def describe(self) -> str:
        """``member → member → ...``, each with its iterations."""
        return " → ".join(f"{member.label} ×{member.steps}" for member in self.members)


_SEA_APGD: dict[str, Any] = {"step_rule": "apgd", "radius_schedule": "sea", "control": "ce", "handover": "best"}

RELIABLE_PRESETS: dict[str, ReliablePreset] = {
    "default": ReliablePreset(
        (
            EnsembleMember("masked_ce", 150, **_SEA_APGD),
            EnsembleMember("js", 150, warm_start=True, **_SEA_APGD),
        ),
        "segrobust's reliable evaluation: masked CE, then JS from its worst case; APGD with SEA's radii, "
        "CE control and best hand-over",
    ),
    "sea": ReliablePreset(
        (
            EnsembleMember("balanced_masked_ce", 300, class_weights=True, **_SEA_APGD),
            EnsembleMember("masked_ce", 300, **_SEA_APGD),
            EnsembleMember("js", 300, **_SEA_APGD),
        ),
        "SEA's published protocol (Croce et al., ECCV 2024): balanced masked CE with data-set class weights, "
        "masked CE and JS, each 300 APGD iterations from a random start",
    ),
    "quick": ReliablePreset(
        (
            EnsembleMember("masked_ce", 10, **_SEA_APGD),
            EnsembleMember("js", 10, warm_start=True, **_SEA_APGD),
        ),
        "a smoke test, not a robustness number: the default's members at 10 iterations each",
    ),
}
"""Named reliable evaluations (a plain dict; add your own): ``ReliableEnsemble(preset=NAME)``, ``--reliable-preset NAME``."""


@dataclass
class EnsembleStats:
    """What a [ReliableEnsemble][segrobust.attacks.ReliableEnsemble] call did, per member ``a`` and image ``n``.

    ``attacked`` ``(A, N)``: whether member ``a`` ran on image ``n`` (False
    after early stop). ``member_pixel_accuracy`` ``(A, N)``: the accuracy of
    the member's returned image (NaN where it did not run). ``pixel_accuracy``
    ``(N,)`` and ``choice`` ``(N,)``: the worst case and the member it came
    from. ``confusion`` ``(A, N, K, K)``: per-image confusion matrices of each
    member's image, taken from the logits that scored it inside the member (no
    extra forward); where a member did not run, the matrix of the image returned
    so far (input for
    [greedy_worst_case_miou][segrobust.attacks.greedy_worst_case_miou], after
    concatenating batches along dim 1). ``forward_passes`` /
    ``backward_passes`` ``(A, N)``: model passes spent (per member,
    ``steps`` backward and ``steps + 1`` forward, plus one forward per radius
    stage that hands over its best iterate). ``member_steps``: each member's
    iterations; ``member_seconds`` / ``member_cpu_seconds``: the wall-clock and
    process CPU seconds each member took on this batch (on a GPU the member's
    last kernels may still run when its clock stops: a cost estimate, not a profile). ``member_stats``: each member's
    [APGDStats][segrobust.attacks.APGDStats] on the images it attacked
    (``member_images`` their indices). ``nonfinite_gradient`` ``(N,)``: a member
    met NaN or infinite logits or gradients on the image (only with
    ``nonfinite="warn"``; by default the ensemble raises).
    """

    member_names: list[str]
    attacked: torch.Tensor
    member_pixel_accuracy: torch.Tensor
    pixel_accuracy: torch.Tensor
    choice: torch.Tensor
    confusion: torch.Tensor
    forward_passes: torch.Tensor
    backward_passes: torch.Tensor
    member_stats: list[Optional[APGDStats]] = field(default_factory=list)
    member_images: list[torch.Tensor] = field(default_factory=list)
    nonfinite_gradient: Optional[torch.Tensor] = None  # (N,) bool: a member met NaN/Inf (nonfinite="warn")
    member_steps: list[int] = field(default_factory=list)
    member_seconds: list[float] = field(default_factory=list)  # wall-clock seconds of each member on this batch
    member_cpu_seconds: list[float] = field(default_factory=list)  # process CPU seconds (all threads)

    @property
    def iterations_per_image(self) -> torch.Tensor:
        """Iterations (gradient passes: one forward and one backward each) spent on each image ``(N,)``,
        all members together; forward passes without gradient are counted in ``forward_passes`` only."""
        return self.backward_passes.sum(0)

    @property
    def passes_per_image(self) -> torch.Tensor:
        """Forward plus backward passes spent on each image ``(N,)``."""
        return (self.forward_passes + self.backward_passes).sum(0)

    @property
    def total_passes(self) -> int:
        """Forward plus backward passes spent on the whole batch."""
        return int(self.passes_per_image.sum())

    def greedy_miou(self) -> tuple[float, torch.Tensor]:
        """[greedy_worst_case_miou][segrobust.attacks.greedy_worst_case_miou] over this batch."""
        return greedy_worst_case_miou(self.confusion)


class ReliableEnsemble(SegAttack):
    r"""The reliable ensemble of SEA (Croce, Singh, Hein, "Towards Reliable Evaluation and Fast
    Training of Robust Semantic Segmentation Models", ECCV 2024), with presets and member specs.

    Members (L∞ attacks, each an [EnsembleMember][segrobust.attacks.ensemble.EnsembleMember])
    run one after another; each image gets the member result with the lowest pixel
    accuracy (targeted: highest on the target). A member with ``warm_start`` starts
    from that worst case so far instead of a random point. With ``early_stop``, an
    image that a member already brought to 0 % accuracy (targeted: 100 % on target)
    is not attacked by later members. ``return_stats=True`` adds an
    [EnsembleStats][segrobust.attacks.EnsembleStats] with every member's per-image
    accuracy, the per-image confusion matrices for the greedy worst-case mIoU, and
    the passes spent per member and image.

    The members come from one of (at most one may be given):

    - ``preset``: a name in [RELIABLE_PRESETS][segrobust.attacks.ensemble.RELIABLE_PRESETS]
      (``"default"``, ``"sea"``, ``"quick"``) or a
      [ReliablePreset][segrobust.attacks.ensemble.ReliablePreset];
    - ``members``: a sequence of ``EnsembleMember`` (or dicts of its fields);
    - ``losses`` (the form of earlier versions; SEA's set is ``SEA_LOSSES``: masked
      CE, balanced masked CE and JS): one APGD member per loss, 100 iterations each,
      with ``radius_schedule``, the loss as control and the last iterate handed over.

    None of them: the ``default`` preset.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.

    Args:
        model: segmentation model returning logits ``(N, K, H, W)``.
        eps: L∞ budget in ``(0, 1]``.
        alpha: every member's initial step (APGD's ``η``, PAdam's learning rate) at
            radius ``eps``; ``None``: each step rule's own.
        steps: iterations of every member; ``None``: each member's own (a preset's
            counts; 100 per loss for ``losses``).
        preset, members, losses: the members (see above).
        random_start, ignore_index, nonfinite, amp: passed to every member (see
            [LinfAttack][segrobust.attacks.LinfAttack]).
        radius_schedule: every member's schedule in the ``losses`` form (``"sea"``,
            ``None`` or pairs); presets and member specs carry their own.
        early_stop: skip images already at 0 % accuracy in later members.
        member_options: further [LinfAttack][segrobust.attacks.LinfAttack]
            arguments for every member, over its spec (e.g. ``{"nonfinite": "warn"}``).
        class_weights: ``(K,)`` weights for the members that ask for them
            (``EnsembleMember.class_weights``; the ``sea`` preset's balanced masked CE),
            e.g. [sea_class_weights][segrobust.losses.sea_class_weights] of the
            evaluation set's masks, as the benchmark computes them. Without them
            such a member weights each batch by its own class frequencies.

    Examples:
        >>> ens = ReliableEnsemble(model, eps=8/255, preset="default")  # doctest: +SKIP
        >>> adv_images, stats = ens(images, masks, return_stats=True)  # doctest: +SKIP
        >>> stats.iterations_per_image  # doctest: +SKIP
        tensor([300, 300, ...])
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: Optional[float] = None,
        steps: Optional[int] = None,
        *,
        preset: Union[str, ReliablePreset, None] = None,
        members: Optional[Sequence[Union[EnsembleMember, Mapping[str, Any]]]] = None,
        losses: Optional[Sequence[LossSpec]] = None,
        random_start: bool = True,
        ignore_index: int = 255,
        nonfinite: str = "raise",
        amp: Union[str, torch.dtype, None] = None,
        radius_schedule: RadiusSchedule = "sea",
        early_stop: bool = True,
        member_options: Optional[dict[str, Any]] = None,
        class_weights: Optional[torch.Tensor] = None,
    ):
        if steps is not None:
            check_steps(steps, "steps", low=1)  # a "reliable" number needs at least one iteration
        specs = _member_specs(preset, members, losses, radius_schedule)
        if steps is not None:
            specs = [replace(spec, steps=steps) for spec in specs]
        super().__init__(
            model, eps, alpha, sum(spec.steps for spec in specs), random_start, ignore_index, nonfinite, amp
        )
        self.preset = preset
        self.specs = specs
        self.losses = [spec.loss for spec in specs]
        self.radius_schedule = radius_schedule
        self.early_stop = check_bool(early_stop, "early_stop")
        if member_options is not None and not isinstance(member_options, dict):
            raise TypeError(
                f"member_options must be a dict of LinfAttack arguments, got {type(member_options).__name__}"
            )
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        shared = {"random_start": random_start, "ignore_index": ignore_index, "nonfinite": nonfinite, "amp": amp}
        self.member_names = _unique([spec.label for spec in specs])
        self.members = [
            self._member(spec, model, eps, alpha, shared, member_options or {}, name)
            for spec, name in zip(specs, self.member_names)
        ]

    def _member(
        self,
        spec: EnsembleMember,
        model: nn.Module,
        eps: float,
        alpha: Optional[float],
        shared: dict[str, Any],
        member_options: dict[str, Any],
        name: str,
    ) -> LinfAttack:
        """The attack of one member spec (an APGD for APGD's rule)."""
        loss_options = dict(spec.loss_options)
        if spec.class_weights and self.class_weights is not None:
            loss_options["class_weights"] = self.class_weights
        options = {
            **shared,
            "loss": spec.loss,
            "radius_schedule": spec.radius_schedule,
            "step_rule": spec.step_rule,
            "control": spec.control,
            "handover": spec.handover,
            "loss_options": loss_options or None,
            **member_options,
        }
        rule = options["step_rule"]
        apgd = rule == "apgd" or rule is APGDStep or isinstance(rule, APGDStep)
        member = (APGD if apgd else LinfAttack)(model, eps, alpha, spec.steps, **options)
        member.attack = (
            f"ReliableEnsemble member {'APGD' if apgd else _rule_name(rule)}({name})"  # messages name the ensemble
        )
        return member

    @property
    def member_steps(self) -> list[int]:
        """Iterations of each member."""
        return [spec.steps for spec in self.specs]

    @property
    def wants_class_weights(self) -> bool:
        """Whether a member asks for ``class_weights`` the ensemble does not have yet."""
        return self.class_weights is None and any(spec.class_weights for spec in self.specs)

    def _attack_batch(
        self, images: torch.Tensor, labels: torch.Tensor, direction: int
    ) -> tuple[torch.Tensor, EnsembleStats]:
        n, members = images.shape[0], len(self.members)
        dev = images.device
        best = images.clone()
        best_key = torch.full((n,), float("inf"), device=dev)  # direction · accuracy: lower is worse for the model
        attacked = torch.zeros(members, n, dtype=torch.bool, device=dev)
        member_acc = torch.full((members, n), float("nan"), device=dev)
        choice = torch.zeros(n, dtype=torch.long, device=dev)
        forward = torch.zeros(members, n, dtype=torch.long, device=dev)
        backward = torch.zeros_like(forward)
        confusion: Optional[torch.Tensor] = None
        stats_list, index_list = [], []
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        nonfinite = torch.zeros(n, dtype=torch.bool, device=dev)
        seconds, cpu_seconds = [0.0] * members, [0.0] * members
        for a, member in enumerate(self.members):
            todo = (~done if self.early_stop else torch.ones_like(done)).nonzero().flatten()
            index_list.append(todo)
            if todo.numel() == 0:
                stats_list.append(None)
                confusion[a] = confusion[choice, torch.arange(n, device=dev)]
                continue
            if a == 0:  # the masks are checked against the model's output in the first forward
                member._pending_checks, self._pending_checks = self._pending_checks, []
            start = best[todo] if self.specs[a].warm_start else None
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                adv, stats = member._attack_batch(images[todo], labels[todo], direction, start=start)
            finally:
                member._pending_checks = []
            seconds[a], cpu_seconds[a] = time.perf_counter() - wall, time.process_time() - cpu
            matrices = stats.confusion  # scored from the logits the attack already computed
            acc = confusion_pixel_accuracy(matrices)
            if confusion is None:
                confusion = torch.zeros(members, n, *matrices.shape[1:], dtype=torch.long, device=dev)
            # images this member skipped keep the matrix of the image returned so far
            confusion[a] = confusion[choice, torch.arange(n, device=dev)] if a > 0 else confusion[a]
            confusion[a, todo] = matrices
            attacked[a, todo], member_acc[a, todo] = True, acc
            forward[a, todo], backward[a, todo] = stats.forward_passes, stats.backward_passes
            key = direction * acc
            better = key < best_key[todo]
            chosen = todo[better]
            best[chosen], best_key[chosen], choice[chosen] = adv[better], key[better], a
            done[todo] |= acc == (0.0 if direction > 0 else 1.0)
            nonfinite[todo] |= stats.nonfinite_gradient
            stats_list.append(stats)
        ensemble_stats = EnsembleStats(
            member_names=list(self.member_names),
            attacked=attacked,
            member_pixel_accuracy=member_acc,
            pixel_accuracy=direction * best_key,
            choice=choice,
            confusion=confusion,
            forward_passes=forward,
            backward_passes=backward,
            member_stats=stats_list,
            member_images=index_list,
            nonfinite_gradient=nonfinite,
            member_steps=self.member_steps,
            member_seconds=seconds,
            member_cpu_seconds=cpu_seconds,
        )
        return best, ensemble_stats


def _member_specs(
    preset: Union[str, ReliablePreset, None],
    members: Optional[Sequence[Union[EnsembleMember, Mapping[str, Any]]]],
    losses: Optional[Sequence[LossSpec]],
    radius_schedule: RadiusSchedule,
) -> list[EnsembleMember]:
    """The member specs of at most one of ``preset``, ``members`` or ``losses`` (none: the ``default`` preset)."""
    given = [
        name for name, value in (("preset", preset), ("members", members), ("losses", losses)) if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give one of preset, members or losses, not {' and '.join(given)}")
    if given[:1] != ["losses"] and radius_schedule != "sea":
        raise ValueError(
            "radius_schedule applies to the losses form (give losses=...); each member of a preset or of members "
            "carries its own (EnsembleMember.radius_schedule, or member_options={'radius_schedule': ...} for all)"
        )
    if preset is not None:
        if isinstance(preset, str):
            if preset not in RELIABLE_PRESETS:
                raise ValueError(f"unknown reliable preset {preset!r}; expected one of {sorted(RELIABLE_PRESETS)}")
            preset = RELIABLE_PRESETS[preset]
        if not isinstance(preset, ReliablePreset):
            raise TypeError(
                f"preset must be a name in RELIABLE_PRESETS or a ReliablePreset, got {type(preset).__name__}"
            )
        return list(preset.members)
    if members is not None:
        if isinstance(members, (str, Mapping)) or not isinstance(members, Sequence) or len(members) == 0:
            raise ValueError(f"members must be a non-empty sequence of EnsembleMember, got {members!r:.80}")
        specs = [member if isinstance(member, EnsembleMember) else _spec_from_mapping(member) for member in members]
        if specs[0].warm_start:
            raise ValueError("the first member cannot be warm-started: there is no worst case before it")
        return specs
    if losses is None:
        return list(RELIABLE_PRESETS["default"].members)
    if isinstance(losses, str) or not isinstance(losses, (list, tuple)) or len(losses) == 0:
        raise ValueError(f"losses must be a non-empty sequence of pixel losses, got {losses!r}")
    return [EnsembleMember(loss, 100, radius_schedule=radius_schedule) for loss in losses]


def _spec_from_mapping(member: Any) -> EnsembleMember:
    if not isinstance(member, Mapping):
        raise TypeError(f"a member must be an EnsembleMember or a dict of its fields, got {type(member).__name__}")
    try:
        return EnsembleMember(**member)
    except TypeError as err:
        raise TypeError(f"member {dict(member)!r:.80} does not fit EnsembleMember: {err}") from None


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats numbered (``js``, ``js·2``), so every member has its own row."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}·{seen[name]}")
    return out
