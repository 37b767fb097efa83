"""Input checks shared by attacks, metrics, defences and the benchmark.

Every check raises a ``TypeError`` or ``ValueError`` whose message names the
argument and what was expected, so users never meet a deep torch traceback.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ["check_class_ids", "check_images", "check_masks", "check_unit_interval"]


def check_images(images: object, name: str = "images", tol: float = 1e-5) -> torch.Tensor:
    """Check a float batch ``(N, C, H, W)`` with finite values in ``[0, 1]``.

    Examples:
        >>> import torch
        >>> check_images(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
        >>> check_images(torch.rand(3, 4, 4))
        Traceback (most recent call last):
        ...
        ValueError: images must be a 4-D batch (N, C, H, W), got shape (3, 4, 4)
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be a 4-D batch (N, C, H, W), got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor with values in [0, 1], got dtype {images.dtype}")
    if images.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -tol or hi > 1 + tol:
        raise ValueError(
            f"{name} must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
            "(normalised inputs? use attack.set_normalization_used(mean, std))"
        )
    return images


def check_masks(
    masks: object,
    images: Optional[torch.Tensor] = None,
    name: str = "masks",
    images_name: str = "images",
) -> torch.Tensor:
    """Check an integer mask batch ``(N, H, W)`` matching ``images`` in size and device.

    Examples:
        >>> import torch
        >>> check_masks(torch.zeros(2, 4, 4, dtype=torch.long), torch.rand(2, 3, 4, 4)).dtype
        torch.int64
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, H, W) of class ids, got {type(masks).__name__}")
    if masks.dtype.is_floating_point or masks.dtype.is_complex or masks.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class ids (e.g. torch.long), got dtype {masks.dtype}")
    if masks.dim() != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {tuple(masks.shape)}")
    if images is not None:
        expected = (images.shape[0], images.shape[2], images.shape[3])
        if tuple(masks.shape) != expected:
            raise ValueError(
                f"{name} shape {tuple(masks.shape)} does not match {images_name} "
                f"{tuple(images.shape)}: expected {expected}"
            )
        if masks.device != images.device:
            raise ValueError(f"{name} is on {masks.device} but {images_name} is on {images.device}; put both on one device")
    return masks


def check_class_ids(masks: torch.Tensor, num_classes: int, ignore_index: int, name: str = "masks") -> None:
    """Every id must be in ``[0, num_classes)`` or equal ``ignore_index``.

    Examples:
        >>> import torch
        >>> check_class_ids(torch.tensor([[[0, 255]]]), num_classes=2, ignore_index=255)
        >>> check_class_ids(torch.tensor([[[0, 7]]]), num_classes=2, ignore_index=255)
        Traceback (most recent call last):
        ...
        ValueError: masks contains class ids [7] but the model predicts 2 classes (valid ids 0..1, or ignore_index=255)
    """
    ids = masks[masks != ignore_index]
    if ids.numel() == 0:
        return
    bad = (ids < 0) | (ids >= num_classes)
    if bool(bad.any()):
        values = sorted(ids[bad].unique().tolist())[:8]
        raise ValueError(
            f"{name} contains class ids {values} but the model predicts {num_classes} classes "
            f"(valid ids 0..{num_classes - 1}, or ignore_index={ignore_index})"
        )


def check_unit_interval(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A budget such as ``eps`` in ``(0, 1]`` (``[0, 1]`` with ``allow_zero``).

    Examples:
        >>> check_unit_interval(8 / 255, "eps") == 8 / 255
        True
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    lower_ok = value >= 0 if allow_zero else value > 0
    if math.isnan(value) or not lower_ok or value > 1:
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name} must be in {interval} (images are in [0, 1]), got {value}")
    return value
