"""Segmentation metrics: a whole-set confusion matrix and the scores derived from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from segrobust.metrics.functional import (
    class_iou,
    confusion_matrix,
    confusion_pixel_accuracy,
    mean_class_accuracy,
    mean_iou,
    per_image_confusion,
    per_image_pixel_accuracy,
    pixel_accuracy,
)
from segrobust.validation import check_finite, check_int

__all__ = [
    "ConfusionMatrix",
    "SegmentationScores",
    "class_iou",
    "confusion_matrix",
    "confusion_pixel_accuracy",
    "mean_class_accuracy",
    "mean_iou",
    "per_image_confusion",
    "per_image_pixel_accuracy",
    "pixel_accuracy",
]


@dataclass
class SegmentationScores:
    """Scores of one confusion matrix. ``iou`` holds NaN for classes never seen."""

    miou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    iou: list[float] = field(default_factory=list)
    num_pixels: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class ConfusionMatrix:
    """Accumulates one confusion matrix over a whole data set.

    mIoU is computed from the summed matrix, never as a mean of per-image
    scores. Matrices from several processes add up with [`all_reduce`][segrobust.metrics.ConfusionMatrix.all_reduce]
    (or ``+``), so a sharded evaluation gives the same numbers as one process.

    Args:
        num_classes: number of classes ``K``.
        ignore_index: label of pixels that do not count.
        device: where the matrix lives (defaults to CPU; use the data's device
            to avoid a host copy per batch).

    Examples:
        >>> import torch
        >>> cm = ConfusionMatrix(num_classes=2)
        >>> cm.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 1], [0, 255]]]))
        >>> scores = cm.compute()
        >>> round(scores.miou, 4), round(scores.pixel_accuracy, 4)
        (0.5, 0.6667)
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str | None = None):
        self.num_classes = check_int(num_classes, "num_classes", low=1)
        self.ignore_index = check_int(ignore_index, "ignore_index")
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.updates = 0  # batches added since the last reset, to name a bad one in errors

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` integer class ids ``(N, H, W)`` or finite logits ``(N, K, H, W)``
        with ``K == num_classes``; ``target`` integer ``(N, H, W)``.

        A bad batch raises a ``TypeError``/``ValueError`` naming it (``batch 3`` is
        the fourth ``update`` since the last reset) and adds nothing.
        """
        where = f"(batch {self.updates} of this ConfusionMatrix, counting from 0)"
        try:
            if isinstance(pred, torch.Tensor) and pred.dim() == 4 and pred.dtype.is_floating_point:
                check_finite(pred, "pred logits", where)
            cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        except (TypeError, ValueError) as err:
            message = str(err) if where in str(err) else f"{err} {where}"
            raise type(err)(message) from None
        self.matrix += cm.to(self.matrix.device)
        self.updates += 1

    def reset(self) -> None:
        self.matrix.zero_()
        self.updates = 0

    def all_reduce(self, group=None) -> ConfusionMatrix:
        """Sum the matrix over all processes of ``torch.distributed`` (no-op when not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM, group=group)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix) or other.num_classes != self.num_classes:
            raise ValueError("can only add ConfusionMatrix objects with the same num_classes")
        out = ConfusionMatrix(self.num_classes, self.ignore_index, self.matrix.device)
        out.matrix = self.matrix + other.matrix.to(self.matrix.device)
        return out

    def compute(self) -> SegmentationScores:
        return SegmentationScores(
            miou=mean_iou(self.matrix),
            pixel_accuracy=pixel_accuracy(self.matrix),
            mean_class_accuracy=mean_class_accuracy(self.matrix),
            iou=[float(v) for v in class_iou(self.matrix)],
            num_pixels=int(self.matrix.sum()),
        )

    def state_dict(self) -> dict:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "matrix": self.matrix.cpu()}

    def load_state_dict(self, state: dict) -> None:
        if state["num_classes"] != self.num_classes:
            raise ValueError(f"state has num_classes={state['num_classes']}, expected {self.num_classes}")
        self.matrix = state["matrix"].to(self.matrix.device).clone()
