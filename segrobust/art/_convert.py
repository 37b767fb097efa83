"""Conversions between ART's numpy / torch calling conventions and segrobust's tensors.

ART calls estimators with numpy arrays (numpy-path attacks, trainers) or torch
tensors (PyTorch-path attacks, which also cast labels to float32), and passes
either masks ``(N, H, W)`` or, when ``y=None``, the model's own logits
``(N, K, H, W)``. Everything here turns those into one form, with errors that
name the argument and what was expected.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from segrobust.utils import predicted_classes
from segrobust.validation import check_class_ids

__all__ = ["ArrayLike", "as_image_tensor", "as_mask_tensor", "clip_bounds"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def clip_bounds(clip_values: Optional[object], name: str = "clip_values") -> tuple[float, float]:
    """Scalar ``(low, high)`` of an estimator's ``clip_values``; a clear error for per-feature bounds.

    Examples:
        >>> clip_bounds((0.0, 255.0))
        (0.0, 255.0)
    """
    if clip_values is None:
        raise ValueError(f"{name} is None; segrobust attacks need bounded inputs, e.g. clip_values=(0.0, 1.0)")
    bounds = np.asarray(clip_values, dtype=np.float64)
    if bounds.shape != (2,):
        raise ValueError(
            f"{name} must be two scalars (low, high) for segrobust attacks, got an array of shape {bounds.shape} "
            "(per-feature bounds are not supported)"
        )
    return float(bounds[0]), float(bounds[1])


def _shape(value: ArrayLike) -> tuple[int, ...]:
    return tuple(value.shape)


def as_image_tensor(
    x: object,
    *,
    channels: int,
    clip_values: Optional[object],
    device: torch.device,
    name: str = "x",
) -> torch.Tensor:
    """A float32 ``(N, C, H, W)`` tensor on ``device`` from a numpy array or tensor, checked.

    Checks: type, 4 dimensions, ``channels`` channels first, floating dtype,
    finite values, and values inside ``clip_values`` (when given). A float32
    numpy array on a CPU device is wrapped without copying; nothing is modified.

    Examples:
        >>> import numpy as np, torch
        >>> t = as_image_tensor(np.zeros((2, 3, 4, 4), np.float32), channels=3, clip_values=(0, 1), device=torch.device("cpu"))
        >>> t.shape, t.dtype
        (torch.Size([2, 3, 4, 4]), torch.float32)
    """
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name} must be a numeric array (N, C, H, W), got an object array")
        is_float = np.issubdtype(x.dtype, np.floating)
        dtype_name = str(x.dtype)
    elif isinstance(x, torch.Tensor):
        is_float = x.dtype.is_floating_point
        dtype_name = str(x.dtype)
    else:
        raise TypeError(f"{name} must be a numpy array or torch.Tensor (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be a 4-D batch (N, C, H, W), got shape {_shape(x)}")
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels (shape {_shape(x)}) but the estimator expects {channels}; "
            "inputs must be channels-first (N, C, H, W)"
        )
    if not is_float:
        raise TypeError(
            f"{name} must be floating point with values in clip_values, got dtype {dtype_name} "
            "(e.g. convert uint8 images with x.astype(np.float32) / 255)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {_shape(x)})")
    if isinstance(x, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    else:
        tensor = x.detach().to(torch.float32).contiguous()  # same memory layout (and numbers) as the numpy path
    tensor = tensor.to(device)
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    if clip_values is not None:
        bounds = np.asarray(clip_values, dtype=np.float32)
        if bounds.shape == (2,):
            low, high = float(bounds[0]), float(bounds[1])
            tol = 1e-5 * max(1.0, high - low)
            lo, hi = float(tensor.min()), float(tensor.max())
            if lo < low - tol or hi > high + tol:
                raise ValueError(
                    f"{name} must have values in clip_values [{low:.4g}, {high:.4g}], got range [{lo:.4g}, {hi:.4g}] "
                    "(already standardised? pass raw images and give the estimator preprocessing=(mean, std))"
                )
        else:
            low_t = torch.as_tensor(bounds[0], device=device)
            high_t = torch.as_tensor(bounds[1], device=device)
            if bool(((tensor < low_t - 1e-5) | (tensor > high_t + 1e-5)).any()):
                raise ValueError(f"{name} has values outside the estimator's per-feature clip_values")
    return tensor


def as_mask_tensor(
    y: object,
    images: torch.Tensor,
    *,
    nb_classes: Optional[int],
    ignore_index: int,
    name: str = "y",
) -> torch.Tensor:
    """Integer masks ``(N, H, W)`` (int64, on ``images.device``) from any label form ART passes.

    Accepted: integer masks ``(N, H, W)``; float masks holding integer ids (PGD-PyTorch
    casts labels to float32); ``(N, 1, H, W)`` masks; ``(N, K, H, W)`` logits or one-hot
    maps (ART passes the model's predictions when ``y=None``), reduced by argmax, so
    they carry no ignored pixel. Ids must be in ``[0, nb_classes)`` or ``ignore_index``.

    Examples:
        >>> import numpy as np, torch
        >>> images = torch.zeros(1, 3, 2, 2)
        >>> as_mask_tensor(np.array([[[0., 1.], [255., 1.]]], np.float32), images, nb_classes=2, ignore_index=255)
        tensor([[[  0,   1],
                 [255,   1]]])
    """
    if isinstance(y, np.ndarray):
        if y.dtype == object:
            raise TypeError(f"{name} must be a numeric array of masks (N, H, W), got an object array")
        tensor = torch.from_numpy(np.ascontiguousarray(y))
    elif isinstance(y, torch.Tensor):
        tensor = y.detach()
    else:
        raise TypeError(f"{name} must be a numpy array or torch.Tensor of masks (N, H, W), got {type(y).__name__}")
    if tensor.dtype == torch.bool or tensor.dtype.is_complex:
        raise TypeError(f"{name} must hold integer class ids, got dtype {tensor.dtype}")
    tensor = tensor.to(images.device)
    expected = (images.shape[0], images.shape[2], images.shape[3])
    if tensor.dim() == 4 and tensor.shape[1] == 1:
        tensor = tensor[:, 0]
    if tensor.dim() == 4:
        if nb_classes is not None and tensor.shape[1] != nb_classes:
            raise ValueError(
                f"{name} of shape {tuple(tensor.shape)} looks like (N, K, H, W) scores but K={tensor.shape[1]} "
                f"differs from nb_classes={nb_classes}; pass masks (N, H, W) of class ids"
            )
        tensor = predicted_classes(tensor)
    elif tensor.dim() != 3:
        raise ValueError(
            f"{name} must be masks (N, H, W) of class ids (or (N, K, H, W) scores), got shape {tuple(tensor.shape)}"
        )
    if tuple(tensor.shape) != expected:
        raise ValueError(
            f"{name} shape {tuple(tensor.shape)} does not match the images {tuple(images.shape)}: expected {expected}"
        )
    if tensor.dtype.is_floating_point:
        if not bool(torch.isfinite(tensor).all()) or not bool((tensor == tensor.round()).all()):
            raise ValueError(
                f"{name} holds non-integer values; masks must be class ids (or ignore_index={ignore_index})"
            )
    tensor = tensor.long()
    if nb_classes is not None:
        check_class_ids(tensor, nb_classes, ignore_index, name)
    return tensor
