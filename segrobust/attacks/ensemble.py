"""The reliable ensemble (SEA, Croce et al. 2024): APGD once per loss, worst case per image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from segrobust.attacks.apgd import APGD
from segrobust.attacks.engine import SegAttack
from segrobust.attacks.linf import APGDStats, LossSpec, RadiusSchedule
from segrobust.metrics.functional import confusion_pixel_accuracy, mean_iou
from segrobust.validation import check_bool, check_steps

__all__ = ["EnsembleStats", "ReliableEnsemble", "greedy_worst_case_miou"]

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


def _member_names(losses: Sequence[Any]) -> list[str]:
    return [loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss)) for loss in losses]


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
    ``steps + 1`` forward and ``steps`` backward). ``member_stats``: each member's
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
    Training of Robust Semantic Segmentation Models", ECCV 2024).

    One [APGD][segrobust.attacks.APGD] run per loss (default: masked CE, balanced
    masked CE and Jensen–Shannon, each with the SEA radius schedule); each image
    gets the member result with the lowest pixel accuracy (targeted: highest on
    the target). With ``early_stop``, an image that a member already brought to
    0 % accuracy (targeted: 100 % on target) is not attacked by later members.
    ``return_stats=True`` adds an [EnsembleStats][segrobust.attacks.EnsembleStats]
    with every member's per-image accuracy, the per-image confusion matrices for
    the greedy worst-case mIoU, and the passes spent per image.

    Threat model: white-box, ``‖x_adv − x‖∞ ≤ eps``, ``x_adv ∈ [0, 1]``.

    Args:
        model: segmentation model returning logits ``(N, K, H, W)``.
        eps: L∞ budget in ``(0, 1]``.
        alpha: APGD's initial step for every member (``None``: APGD's rule, ``2 · radius``).
        steps: APGD iterations per member, at least 1.
        losses: pixel-loss names (or ``PixelLoss`` classes / callables), one member each.
        random_start, ignore_index, nonfinite, amp: passed to every member (see
            [LinfAttack][segrobust.attacks.LinfAttack]).
        radius_schedule: passed to every member (``"sea"``, ``None``, or pairs).
        early_stop: skip images already at 0 % accuracy in later members.
        member_options: further [APGD][segrobust.attacks.APGD] arguments for every member.

    Examples:
        >>> ens = ReliableEnsemble(model, eps=8/255, steps=100)  # doctest: +SKIP
        >>> adv_images, stats = ens(images, masks, return_stats=True)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        alpha: Optional[float] = None,
        steps: int = 100,
        *,
        losses: Sequence[LossSpec] = SEA_LOSSES,
        random_start: bool = True,
        ignore_index: int = 255,
        nonfinite: str = "raise",
        amp: Union[str, torch.dtype, None] = None,
        radius_schedule: RadiusSchedule = "sea",
        early_stop: bool = True,
        member_options: Optional[dict[str, Any]] = None,
    ):
        super().__init__(model, eps, alpha, steps, random_start, ignore_index, nonfinite, amp)
        check_steps(steps, "steps", low=1)  # a "reliable" number needs at least one iteration
        if isinstance(losses, str) or not isinstance(losses, (list, tuple)) or len(losses) == 0:
            raise ValueError(f"losses must be a non-empty sequence of pixel losses, got {losses!r}")
        self.losses = list(losses)
        self.radius_schedule = radius_schedule
        self.early_stop = check_bool(early_stop, "early_stop")
        if member_options is not None and not isinstance(member_options, dict):
            raise TypeError(f"member_options must be a dict of APGD arguments, got {type(member_options).__name__}")
        shared = {"random_start": random_start, "ignore_index": ignore_index, "nonfinite": nonfinite, "amp": amp}
        shared.update(radius_schedule=radius_schedule, **(member_options or {}))
        self.members = [APGD(model, eps, alpha, steps, loss=loss, **shared) for loss in self.losses]
        for member, name in zip(self.members, _member_names(self.losses)):
            member.attack = f"ReliableEnsemble member APGD({name})"  # messages name the ensemble

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
        for a, member in enumerate(self.members):
            todo = (~done if self.early_stop else torch.ones_like(done)).nonzero().flatten()
            index_list.append(todo)
            if todo.numel() == 0:
                stats_list.append(None)
                confusion[a] = confusion[choice, torch.arange(n, device=dev)]
                continue
            if a == 0:  # the masks are checked against the model's output in the first forward
                member._pending_checks, self._pending_checks = self._pending_checks, []
            try:
                adv, stats = member._attack_batch(images[todo], labels[todo], direction)
            finally:
                member._pending_checks = []
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
            member_names=_member_names(self.losses),
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
        )
        return best, ensemble_stats
