"""The reliable ensemble in the benchmark: its plan, what a unit keeps, the reduce over the whole set, the rows.

Before any work the benchmark reads the members of the ensemble it built
([EnsemblePlan][segrobust.benchmark.reliable.EnsemblePlan]: names, iterations,
where the radius reaches ε, whether a member wants SEA's class weights). A unit
of the ``reliable`` condition keeps, besides the confusion matrices of the
images the ensemble returns, per member ``a`` and image ``n``: the confusion
matrix of the member's image ``(A, n, K, K)``, the passes spent, whether the
member ran (early stop skips images already at 0 % accuracy), the gradient-masking
flags and the per-iteration accuracy curve. At reduce time the matrices of the
whole set are put in image order (the same on one process or many) and the greedy
worst-case mIoU runs over all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from segrobust import distributed
from segrobust.attacks.ensemble import EnsembleStats, ReliableEnsemble, greedy_worst_case_miou
from segrobust.benchmark.conditions import Condition
from segrobust.benchmark.results import MASKING_FLAGS, ConditionResult
from segrobust.metrics.functional import class_iou, confusion_pixel_accuracy, mean_class_accuracy, mean_iou

__all__ = [
    "FLAGS",
    "EnsemblePlan",
    "EnsembleTotals",
    "ensemble_plan",
    "ensemble_rows",
    "ensemble_unit",
    "reduce_ensemble",
]

#: Per-image gradient-masking flags of the APGD members, as named in ``results.json``.
FLAGS = MASKING_FLAGS


@dataclass(frozen=True)
class EnsemblePlan:
    """The members of the benchmark's reliable ensemble, read once before any work."""

    preset: Optional[str]
    members: list[str]
    member_steps: list[int]
    scored_from: list[int]  # per member: the first iteration at radius ε
    descriptions: list[str]
    wants_class_weights: bool

    @property
    def steps(self) -> int:
        """The longest member's iterations (the length of the convergence curves)."""
        return max(self.member_steps)

    @property
    def iterations_per_image(self) -> int:
        """Iterations per image, all members together, when no image stops early."""
        return sum(self.member_steps)

    def settings(self, reliable_steps: Optional[int]) -> dict[str, Any]:
        """What ``results.json`` and the resume manifest record of it."""
        return {
            "reliable_preset": self.preset,
            "reliable_steps": reliable_steps,
            "reliable_members": list(self.descriptions),
            "reliable_iterations_per_image": self.iterations_per_image,
        }


def ensemble_plan(ensemble: ReliableEnsemble) -> EnsemblePlan:
    """The [EnsemblePlan][segrobust.benchmark.reliable.EnsemblePlan] of a built ensemble."""
    return EnsemblePlan(
        preset=ensemble.preset if isinstance(ensemble.preset, str) else None,
        members=list(ensemble.member_names),
        member_steps=list(ensemble.member_steps),
        scored_from=[sum(length for _, length in member.stages[:-1]) for member in ensemble.members],
        descriptions=[spec.describe() for spec in ensemble.specs],
        wants_class_weights=ensemble.wants_class_weights,
    )


def ensemble_unit(stats: EnsembleStats) -> dict[str, Any]:
    """What the reduce needs from one batch of [ReliableEnsemble][segrobust.attacks.ReliableEnsemble] statistics.

    The accuracy curves of members shorter than the longest are NaN past their end.
    """
    members, n = stats.attacked.shape
    curve = torch.full((members, n, max(stats.member_steps) + 1), float("nan"), dtype=torch.float32)
    flags = {name: torch.zeros(members, n, dtype=torch.bool) for name in FLAGS}
    for a, (member, todo) in enumerate(zip(stats.member_stats, stats.member_images)):
        if member is None:
            continue
        todo = todo.cpu()
        rows = member.pixel_accuracy.shape[0]
        curve[a, todo, :rows] = member.pixel_accuracy.detach().float().cpu().T
        for name in FLAGS:
            value = getattr(member, name, None)
            if value is not None:
                flags[name][a, todo] = value.bool().cpu()
    return {
        "members": list(stats.member_names),
        "member_confusion": stats.confusion.cpu(),
        "attacked": stats.attacked.cpu(),
        "forward_passes": stats.forward_passes.cpu(),
        "backward_passes": stats.backward_passes.cpu(),
        "curve": curve,
        **flags,
    }


@dataclass
class EnsembleTotals:
    """The whole set, in image order: member matrices ``(A, N, K, K)``, passes / flags ``(A, N)``, mean curves ``(A, T)``."""

    members: list[str]
    confusion: torch.Tensor
    attacked: torch.Tensor
    forward_passes: torch.Tensor
    backward_passes: torch.Tensor
    flags: dict[str, torch.Tensor]
    curve: torch.Tensor
    greedy_miou: float
    greedy_choice: torch.Tensor


def reduce_ensemble(units: list[dict[str, Any]], num_images: int, num_classes: int, steps: int) -> EnsembleTotals:
    """This rank's units placed in image order, summed over ranks, then the greedy worst case over the whole set."""
    members = list(units[0]["members"]) if units else []
    if distributed.get_world_size() > 1:  # a rank without batches learns the names from the others
        members = next((names for names in distributed.all_gather_object(members) if names), [])
    size = len(members)
    confusion = torch.zeros(size, num_images, num_classes, num_classes, dtype=torch.int64)
    per_image = {
        name: torch.zeros(size, num_images, dtype=torch.int64)
        for name in ("attacked", "forward_passes", "backward_passes", *FLAGS)
    }
    curve_sum = torch.zeros(size, steps + 1, dtype=torch.float64)
    curve_count = torch.zeros(size, steps + 1, dtype=torch.float64)
    for unit in units:
        indices = unit["indices"]
        confusion[:, indices] = unit["member_confusion"]
        for name, total in per_image.items():
            total[:, indices] = unit[name].long()
        counted = unit["attacked"].unsqueeze(-1) & ~torch.isnan(unit["curve"])
        curve_sum += torch.where(counted, unit["curve"].double(), 0.0).sum(1)
        curve_count += counted.sum(1)
    confusion = distributed.reduce_over_ranks(confusion)
    per_image = {name: distributed.reduce_over_ranks(total) for name, total in per_image.items()}
    curve_sum = distributed.reduce_over_ranks(curve_sum)
    curve_count = distributed.reduce_over_ranks(curve_count)
    attacked = per_image["attacked"].bool()
    curve = torch.where(curve_count > 0, curve_sum / curve_count.clamp_min(1), float("nan"))
    miou, choice = greedy_worst_case_miou(confusion)
    return EnsembleTotals(
        members=members,
        confusion=confusion,
        attacked=attacked,
        forward_passes=per_image["forward_passes"],
        backward_passes=per_image["backward_passes"],
        flags={name: per_image[name].bool() for name in FLAGS},
        curve=curve,
        greedy_miou=miou,
        greedy_choice=choice,
    )


def _indices(mask: torch.Tensor) -> list[int]:
    return [int(i) for i in mask.nonzero().flatten()]


def ensemble_rows(
    row: ConditionResult, totals: EnsembleTotals, make_row: Callable[..., ConditionResult], plan: EnsemblePlan
) -> list[ConditionResult]:
    """Complete the ensemble's own row (greedy mIoU) and return one row per member loss.

    The ensemble's row keeps pixel accuracy and per-image accuracy of the images
    it returns (per image the member with the lowest accuracy: the exact worst
    case of pixel accuracy); its mIoU, class IoU, class accuracy and confusion
    matrix come from the greedy worst-case selection over the whole set.
    """
    n = totals.confusion.shape[1]
    greedy_cm = totals.confusion[totals.greedy_choice, torch.arange(n)].sum(0)
    passes = totals.forward_passes + totals.backward_passes
    returned_miou = row.miou
    row.miou, row.mean_class_accuracy = mean_iou(greedy_cm), mean_class_accuracy(greedy_cm)
    row.iou = [float(v) for v in class_iou(greedy_cm)]
    row.confusion_matrix = greedy_cm.tolist()
    row.ensemble = {
        "members": list(totals.members),
        "miou_of_returned_images": returned_miou,
        "greedy_choice": [totals.members[int(a)] for a in totals.greedy_choice],
        "forward_passes_per_image": totals.forward_passes.sum(0).tolist(),
        "backward_passes_per_image": totals.backward_passes.sum(0).tolist(),
        "mean_passes_per_image": float(passes.sum(0).double().mean()),
        "convergence": {
            name: [_finite(v) for v in totals.curve[a, : plan.member_steps[a] + 1].tolist()]
            for a, name in enumerate(totals.members)
        },
        # one shaded span in the convergence figure: only when every member reaches ε at the same iteration
        "radius_eps_from_iteration": plan.scored_from[0] if len(set(plan.scored_from)) == 1 else None,
        "preset": plan.preset,
        "member_steps": list(plan.member_steps),
        "iterations_per_image": totals.backward_passes.sum(0).tolist(),
        "mean_iterations_per_image": float(totals.backward_passes.sum(0).double().mean()),
    }
    members = []
    for a, name in enumerate(totals.members):
        condition = Condition(f"reliable:{name}", f"Reliable · {name}", "member", row.eps)
        cm = totals.confusion[a]
        member = make_row(condition, cm.sum(0), confusion_pixel_accuracy(cm, torch.float64), None, 0)
        member.ensemble = {
            "images_attacked": int(totals.attacked[a].sum()),
            "steps": plan.member_steps[a],
            "description": plan.descriptions[a],
            "forward_passes_per_image": totals.forward_passes[a].tolist(),
            "backward_passes_per_image": totals.backward_passes[a].tolist(),
            "mean_passes_per_image": float(passes[a].double().mean()),
            **{flag: _indices(totals.flags[flag][a]) for flag in FLAGS},
        }
        members.append(member)
    return members


def _finite(value: float) -> Any:
    return None if value != value else value
