"""Pure functions the trainer is built from: the default loss, batch handling, output splitting.

Conventions (the segrobust ones): images ``(N, 3, H, W)`` float in ``[0, 1]``,
masks ``(N, H, W)`` integer with ``ignore_index`` on void pixels, logits
``(N, K, H, W)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import torch

from segrobust.losses import masked_cross_entropy
from segrobust.utils import segmentation_logits

__all__ = ["as_batch", "masked_cross_entropy", "segmentation_loss", "split_batch_output"]


def segmentation_loss(outputs: Any, batch: Mapping[str, Any], ignore_index: int = 255) -> torch.Tensor:
    """The trainer's default loss: [`masked_cross_entropy`][segrobust.losses.masked_cross_entropy] of the model's logits against ``batch["mask"]``.

    ``outputs`` may be a tensor, a tuple or a dict as accepted by
    [`segrobust.utils.segmentation_logits`][segrobust.utils.segmentation_logits].

    Examples:
        >>> import torch
        >>> batch = {"mask": torch.zeros(1, 2, 2, dtype=torch.long)}
        >>> round(float(segmentation_loss(torch.zeros(1, 3, 2, 2), batch)), 4)
        1.0986
    """
    return masked_cross_entropy(segmentation_logits(outputs), batch["mask"], ignore_index)


def as_batch(raw: Any, device: Union[torch.device, str, None] = None) -> dict[str, Any]:
    """Turn a loader batch into a dict with at least ``"image"`` and ``"mask"``, tensors moved to ``device``.

    Accepts the segrobust dataset convention (a dict with ``"image"`` and
    ``"mask"`` plus any other keys, which are kept) and ``(image, mask, ...)``
    tuples or lists. Nothing is modified in place.

    Examples:
        >>> import torch
        >>> batch = as_batch((torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)))
        >>> sorted(batch), batch["image"].shape
        (['image', 'mask'], torch.Size([2, 3, 4, 4]))
    """
    if isinstance(raw, Mapping):
        missing = [key for key in ("image", "mask") if key not in raw]
        if missing:
            raise ValueError(
                f"batch dict must have keys 'image' and 'mask', missing {missing} (keys: {sorted(map(str, raw))})"
            )
        batch = dict(raw)
    elif isinstance(raw, (tuple, list)) and len(raw) >= 2:
        batch = {"image": raw[0], "mask": raw[1]}
    else:
        raise TypeError(
            f"a batch must be a dict with 'image' and 'mask' or an (image, mask) tuple, got {type(raw).__name__}"
        )
    image, mask = batch["image"], batch["mask"]
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or not image.dtype.is_floating_point:
        desc = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(f"batch image must be a float tensor (N, C, H, W), got {desc}")
    if not isinstance(mask, torch.Tensor) or mask.dtype.is_floating_point or mask.dtype == torch.bool:
        desc = str(mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"batch mask must be an integer tensor (N, H, W), got {desc}")
    expected = (image.shape[0], *image.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"batch mask shape {tuple(mask.shape)} does not match image {tuple(image.shape)}: expected {expected}"
        )
    if device is not None:
        batch = {
            key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()
        }
    return batch


def split_batch_output(output: Any, n: int) -> tuple[Any, Any]:
    """Split a model output along the batch dimension into its first ``n`` samples and the rest.

    Works through tensors, tuples/lists and dicts (smp ``aux_params`` tuples,
    torchvision ``{"out", "aux"}`` dicts); anything else is returned twice.

    Examples:
        >>> import torch
        >>> first, rest = split_batch_output({"out": torch.zeros(5, 2)}, 3)
        >>> first["out"].shape[0], rest["out"].shape[0]
        (3, 2)
    """
    if isinstance(output, torch.Tensor):
        return output[:n], output[n:]
    if isinstance(output, Mapping):
        pairs = {key: split_batch_output(value, n) for key, value in output.items()}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    if isinstance(output, (tuple, list)):
        pairs = [split_batch_output(value, n) for value in output]
        firsts, rests = [p[0] for p in pairs], [p[1] for p in pairs]
        if hasattr(output, "_fields"):  # a namedtuple takes its fields as arguments
            return type(output)(*firsts), type(output)(*rests)
        return type(output)(firsts), type(output)(rests)
    return output, output
