"""Segmentation metrics as pure functions of predictions, targets and confusion matrices.

Convention: a confusion matrix ``cm`` is ``(K, K)`` int64 with rows the true
class and columns the predicted class, counted over valid pixels only.
"""

from __future__ import annotations

from typing import Optional

import torch

from segrobust.utils import predicted_classes
from segrobust.validation import check_tensor

__all__ = [
    "class_iou",
    "confusion_matrix",
    "confusion_pixel_accuracy",
    "mean_class_accuracy",
    "mean_iou",
    "per_image_confusion",
    "per_image_pixel_accuracy",
    "pixel_accuracy",
]


def _as_prediction(pred: object, num_classes: Optional[int] = None) -> torch.Tensor:
    """Accept integer class ids ``(N, H, W)`` or float logits ``(N, K, H, W)`` (``K == num_classes`` when given)."""
    pred = check_tensor(pred, "pred", "of class ids (N, H, W) or logits (N, K, H, W)")
    if pred.dim() == 4:
        if not pred.dtype.is_floating_point:
            raise TypeError(f"pred of shape (N, K, H, W) must be float logits, got dtype {pred.dtype}")
        if num_classes is not None and pred.shape[1] != num_classes:
            raise ValueError(
                f"pred holds logits for {pred.shape[1]} classes but num_classes is {num_classes}: "
                f"expected logits (N, {num_classes}, H, W)"
            )
        return predicted_classes(pred)
    if pred.dim() == 3:
        if pred.dtype.is_floating_point or pred.dtype.is_complex or pred.dtype == torch.bool:
            raise TypeError(
                f"pred of shape (N, H, W) must be integer class ids, got dtype {pred.dtype} "
                "(pass logits (N, K, H, W), or convert class ids with .long())"
            )
        return pred
    raise ValueError(f"pred must be class ids (N, H, W) or logits (N, K, H, W), got shape {tuple(pred.shape)}")


def _check_target(pred: torch.Tensor, target: object) -> None:
    target = check_tensor(target, "target", "of class ids (N, H, W)")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer mask (N, H, W), got dtype {target.dtype}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same (N, H, W) shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Confusion matrix ``(K, K)`` over valid pixels (rows: true class, columns: predicted).

    Args:
        pred: class ids ``(N, H, W)`` or logits ``(N, K, H, W)``.
        target: integer mask ``(N, H, W)``; ``ignore_index`` pixels are skipped.
        num_classes: number of classes ``K``.
        ignore_index: label of pixels that do not count.

    Examples:
        >>> import torch
        >>> pred = torch.tensor([[[0, 1], [1, 1]]])
        >>> target = torch.tensor([[[0, 1], [0, 255]]])
        >>> confusion_matrix(pred, target, num_classes=2)
        tensor([[1, 1],
                [0, 1]])
    """
    pred = _as_prediction(pred, num_classes)
    _check_target(pred, target)
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = sorted(set(t[(t < 0) | (t >= num_classes)].unique().tolist()))[:5]
        raise ValueError(
            f"target has class ids {bad} outside [0, {num_classes}) that are not ignore_index={ignore_index}"
        )
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"pred has class ids outside [0, {num_classes})")
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def class_iou(cm: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``TP / (TP + FP + FN)``; NaN for a class absent from both prediction and target."""
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over classes that occur in the target or the prediction.

    Examples:
        >>> import torch
        >>> mean_iou(torch.tensor([[2, 0], [0, 2]]))
        1.0
    """
    iou = class_iou(cm)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if bool(present.any()) else float("nan")


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Fraction of valid pixels predicted correctly (NaN when there is none)."""
    total = cm.sum()
    return float(cm.diagonal().sum().double() / total) if int(total) > 0 else float("nan")


def mean_class_accuracy(cm: torch.Tensor) -> float:
    """Mean over classes present in the target of per-class recall."""
    cm = cm.double()
    support = cm.sum(1)
    present = support > 0
    if not bool(present.any()):
        return float("nan")
    return float((cm.diagonal()[present] / support[present]).mean())


def per_image_confusion(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """One confusion matrix per image, ``(N, K, K)`` int64 (rows: true class, columns: predicted), valid pixels only.

    Summed over images it equals [confusion_matrix][segrobust.metrics.confusion_matrix],
    so per-image matrices can be regrouped (a per-image worst case, the greedy
    worst-case mIoU) and still give whole-set mIoU.

    Args:
        pred: class ids ``(N, H, W)`` or logits ``(N, K, H, W)``.
        target: integer mask ``(N, H, W)``; ``ignore_index`` pixels are skipped.
        num_classes: number of classes ``K``.
        ignore_index: label of pixels that do not count.

    Examples:
        >>> import torch
        >>> pred = torch.tensor([[[0, 1]], [[1, 1]]])
        >>> target = torch.tensor([[[0, 0]], [[1, 255]]])
        >>> per_image_confusion(pred, target, 2).tolist()
        [[[1, 1], [0, 0]], [[0, 0], [0, 1]]]
    """
    pred = _as_prediction(pred, num_classes)
    _check_target(pred, target)
    valid = target != ignore_index
    if bool(((target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes))[valid].any()):
        raise ValueError(
            f"pred and target must hold class ids in [0, {num_classes}) "
            f"(target may also hold ignore_index={ignore_index})"
        )
    return per_image_confusion_unchecked(pred, target, num_classes, ignore_index)


def per_image_confusion_unchecked(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[per_image_confusion][segrobust.metrics.per_image_confusion] of class ids already known to be in range.

    For loops that score every iterate (no device synchronisation for the check).
    """
    n = target.shape[0]
    valid = (target != ignore_index).reshape(n, -1)
    t, p = target.reshape(n, -1).long(), pred.reshape(n, -1).long()
    index = torch.where(valid, t * num_classes + p, torch.zeros_like(t))
    counts = torch.zeros(n, num_classes * num_classes, dtype=torch.long, device=target.device)
    counts.scatter_add_(1, index, valid.long())
    return counts.reshape(n, num_classes, num_classes)


def confusion_pixel_accuracy(confusions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel accuracy of each confusion matrix ``(..., K, K)``, as ``dtype`` ``(...)`` (computed in float64).

    A matrix that counts no pixel scores 1, as in
    [per_image_pixel_accuracy][segrobust.metrics.per_image_pixel_accuracy], and on
    [per_image_confusion][segrobust.metrics.per_image_confusion] the two agree
    exactly (same counts, same division).

    Examples:
        >>> import torch
        >>> confusion_pixel_accuracy(torch.tensor([[[3, 1], [0, 0]], [[0, 0], [0, 0]]]))
        tensor([0.7500, 1.0000])
    """
    count = confusions.sum((-2, -1))
    correct = confusions.diagonal(dim1=-2, dim2=-1).sum(-1)
    acc = correct.double() / count.clamp_min(1).double()
    return torch.where(count > 0, acc, torch.ones_like(acc)).to(dtype)


def per_image_pixel_accuracy(pred: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Pixel accuracy of each image over its valid pixels, shape ``(N,)``.

    An image with no valid pixel scores 1 (there is nothing to get wrong), so
    it never looks like the worst case of an ensemble.

    Examples:
        >>> import torch
        >>> per_image_pixel_accuracy(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
        tensor([0.5000])
    """
    pred = _as_prediction(pred)
    _check_target(pred, target)
    valid = target != ignore_index
    correct = ((pred == target) & valid).flatten(1).sum(1)
    count = valid.flatten(1).sum(1)
    acc = correct.double() / count.clamp_min(1).double()
    return torch.where(count > 0, acc, torch.ones_like(acc)).float()
