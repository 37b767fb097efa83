"""Input checks shared by attacks, metrics, rain, defences, training and data sets.

Every check raises a ``TypeError`` or ``ValueError`` whose message names the
argument and what was expected, so users never meet a deep torch traceback
(kornia's ``KORNIA_CHECK`` style: one set of checks, used everywhere). Checks
return their (possibly converted) argument so they compose in assignments.
"""

from __future__ import annotations

import math
from typing import Any, Collection, Optional, Sequence, TypeVar

import torch

__all__ = [
    "AMP_DTYPES",
    "MAX_STEPS",
    "check_amp",
    "check_bool",
    "check_choice",
    "check_class_ids",
    "check_finite",
    "check_images",
    "check_int",
    "check_logits",
    "check_masks",
    "check_number",
    "check_pixel_losses",
    "check_shape",
    "check_steps",
    "check_tensor",
    "check_unit_interval",
]

_Choice = TypeVar("_Choice")

_NORMALISED_HINT = "normalised inputs? use attack.set_normalization_used(mean, std)"


def check_images(
    images: object,
    name: str = "images",
    tol: float = 1e-5,
    *,
    allow_empty: bool = False,
    hint: str = _NORMALISED_HINT,
) -> torch.Tensor:
    """Check a float batch ``(N, C, H, W)`` with finite values in ``[0, 1]``.

    Args:
        images: the tensor to check.
        name: the argument's name in messages.
        tol: how far outside ``[0, 1]`` values may lie (float rounding); ``0`` is strict.
        allow_empty: accept a batch with no element.
        hint: what the range error suggests to the user.

    Examples:
        >>> import torch
        >>> check_images(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
        >>> check_images(torch.rand(3, 4, 4))
        Traceback (most recent call last):
        ...
        ValueError: images must have shape (N, C, H, W) (a 4-D batch), got shape (3, 4, 4)
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W) (a 4-D batch), got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating point tensor in [0, 1] (a floating-point dtype such as torch.float32), "
            f"got dtype {images.dtype}"
        )
    if images.numel() == 0:
        if allow_empty:
            return images
        raise ValueError(f"{name} is empty (shape {tuple(images.shape)})")
    # one pass and one host sync: aminmax propagates NaN, and ±inf fail the finite test
    low, high = torch.aminmax(images.detach())
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf values")
    if lo < -tol or hi > 1 + tol:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] ({hint})")
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
            raise ValueError(
                f"{name} is on {masks.device} but {images_name} is on {images.device}; put both on one device"
            )
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


def check_choice(value: _Choice, choices: Collection[_Choice], name: str) -> _Choice:
    """``value`` must be one of ``choices``.

    Examples:
        >>> check_choice("warn", ("raise", "warn"), "nonfinite")
        'warn'
        >>> check_choice("ignore", ("raise", "warn"), "nonfinite")
        Traceback (most recent call last):
        ...
        ValueError: nonfinite must be one of ['raise', 'warn'], got 'ignore'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_number(
    value: object,
    name: str,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    unit: str = "",
) -> float:
    """A finite real number (not a bool) in the given interval, returned as ``float``.

    Examples:
        >>> check_number(0.5, "edge_softness", low=0, low_inclusive=False)
        0.5
        >>> check_number(0, "edge_softness", low=0, low_inclusive=False, unit="pixels")
        Traceback (most recent call last):
        ...
        ValueError: edge_softness must be a finite number of pixels > 0, got 0
    """
    what = f"a finite number of {unit}" if unit else "a finite number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        bounds.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    expected = what + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (low is not None and (number < low or (number == low and not low_inclusive)))
        or (high is not None and (number > high or (number == high and not high_inclusive)))
    ):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return number


def check_int(value: object, name: str, *, low: Optional[int] = None) -> int:
    """An ``int`` (not a bool), at least ``low`` when given.

    Examples:
        >>> check_int(3, "num_classes", low=1)
        3
        >>> check_int(True, "num_classes", low=1)
        Traceback (most recent call last):
        ...
        TypeError: num_classes must be an int, got bool
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """A real ``bool`` (a numpy bool too); ``"no"``, ``0`` or ``None`` are refused rather than guessed.

    ``bool("no")`` is True: a flag that came from a config file or the command
    line as a string would silently mean the opposite of what was written.

    Examples:
        >>> check_bool(False, "early_stop")
        False
        >>> check_bool("no", "early_stop")
        Traceback (most recent call last):
        ...
        TypeError: early_stop must be True or False, got 'no' (str)
    """
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r:.40} ({type(value).__name__})")


#: The most iterations an attack may be asked for. Each iteration stores a few numbers per image
#: (loss, accuracy, step size: ``(steps + 1) × N`` tensors), so a mistyped ``1_000_000_000`` would
#: allocate gigabytes before the first step; 100 000 is ~300× SEA's 300 and far beyond any
#: published protocol, yet costs only ~2 MB of statistics per image.
MAX_STEPS = 100_000


def check_steps(value: object, name: str = "steps", *, low: int = 0) -> int:
    """An iteration count: an ``int`` in ``[low, MAX_STEPS]``.

    Examples:
        >>> check_steps(100)
        100
        >>> check_steps(0, "steps", low=1)
        Traceback (most recent call last):
        ...
        ValueError: steps must be an int in [1, 100000], got 0
        >>> check_steps(10**9)
        Traceback (most recent call last):
        ...
        ValueError: steps must be an int in [0, 100000], got 1000000000 (MAX_STEPS caps the per-step statistics an attack allocates)
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [{low}, {MAX_STEPS}], got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an int in [{low}, {MAX_STEPS}], got {value}")
    if value > MAX_STEPS:
        raise ValueError(
            f"{name} must be an int in [{low}, {MAX_STEPS}], got {value} "
            "(MAX_STEPS caps the per-step statistics an attack allocates)"
        )
    return value


AMP_DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
"""The names ``amp=`` accepts for the autocast dtypes."""


def check_amp(value: object, name: str = "amp") -> Optional[torch.dtype]:
    """An autocast dtype: ``None`` (off), ``torch.bfloat16``, ``torch.float16`` or a name in `AMP_DTYPES`.

    Examples:
        >>> check_amp("bf16")
        torch.bfloat16
        >>> check_amp("fp32")
        Traceback (most recent call last):
        ...
        ValueError: amp must be None, torch.bfloat16, torch.float16 or one of ['bf16', 'bfloat16', 'fp16', 'float16'], got 'fp32'
    """
    if value is None or value in (torch.bfloat16, torch.float16):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and value.lower() in AMP_DTYPES:
        return AMP_DTYPES[value.lower()]
    raise ValueError(
        f"{name} must be None, torch.bfloat16, torch.float16 or one of {list(AMP_DTYPES)}, got {value!r:.40}"
    )


def check_pixel_losses(value: object, labels: torch.Tensor, name: str = "loss") -> torch.Tensor:
    """What a pixel loss returned: a floating-point tensor ``(N, H, W)`` shaped like ``labels``.

    Checked without a host sync (dtype and shape only), so an attack may call
    it at every step; non-finite values are caught with the gradient.

    Examples:
        >>> import torch
        >>> check_pixel_losses(torch.ones(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2), "loss")
        Traceback (most recent call last):
        ...
        TypeError: loss must return floating-point per-pixel losses (N, H, W), got a tensor of dtype torch.int64
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must return a tensor of per-pixel losses (N, H, W), got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(
            f"{name} must return floating-point per-pixel losses (N, H, W), got a tensor of dtype {value.dtype}"
        )
    if value.shape != labels.shape:
        raise ValueError(
            f"{name} must return per-pixel losses of the masks' shape {tuple(labels.shape)} (N, H, W), "
            f"got {tuple(value.shape)}"
        )
    return value


def check_tensor(value: object, name: str, expected: str = "") -> torch.Tensor:
    """A ``torch.Tensor`` (a numpy array or list is refused with a hint to convert it).

    Examples:
        >>> check_tensor([1, 2], "pred", "(N, H, W)")
        Traceback (most recent call last):
        ...
        TypeError: pred must be a torch.Tensor (N, H, W), got list (convert with torch.as_tensor)
    """
    if not isinstance(value, torch.Tensor):
        what = f" {expected}" if expected else ""
        raise TypeError(
            f"{name} must be a torch.Tensor{what}, got {type(value).__name__} (convert with torch.as_tensor)"
        )
    return value


def check_shape(tensor: torch.Tensor, shape: Sequence[Any], name: str) -> torch.Tensor:
    """``tensor.shape`` must match ``shape``, where an entry ``None`` matches any size.

    Examples:
        >>> import torch
        >>> check_shape(torch.zeros(2, 1, 4, 4), (None, 1, 4, 4), "depth").shape
        torch.Size([2, 1, 4, 4])
        >>> check_shape(torch.zeros(2, 3, 4, 4), (None, 1, None, None), "depth")
        Traceback (most recent call last):
        ...
        ValueError: depth must have shape (N, 1, H, W), got (2, 3, 4, 4)
    """
    letters = {1: "N", 2: "NK", 3: "NHW", 4: "NCHW", 5: "NTCHW"}.get(len(shape), "ABCDEFGHIJ")
    wanted = tuple(letters[i] if size is None else str(size) for i, size in enumerate(shape))
    if tensor.dim() != len(shape) or any(
        size is not None and actual != size for actual, size in zip(tensor.shape, shape)
    ):
        raise ValueError(f"{name} must have shape ({', '.join(wanted)}), got {tuple(tensor.shape)}")
    return tensor


def check_finite(tensor: torch.Tensor, name: str, where: str = "") -> torch.Tensor:
    """Every value of ``tensor`` must be finite (``where`` adds context such as a batch number).

    Examples:
        >>> import torch
        >>> check_finite(torch.tensor([1.0, float("nan")]), "logits", "in batch 3")
        Traceback (most recent call last):
        ...
        ValueError: logits contains NaN or Inf values in batch 3
    """
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        if not bool(torch.isfinite(tensor.detach()).all()):
            context = f" {where}" if where else ""
            raise ValueError(f"{name} contains NaN or Inf values{context}")
    return tensor


def check_logits(
    logits: object, name: str = "logits", *, num_classes: Optional[int] = None, where: str = ""
) -> torch.Tensor:
    """Finite float scores ``(N, K, H, W)``, with ``K == num_classes`` when given.

    Examples:
        >>> import torch
        >>> check_logits(torch.zeros(1, 3, 2, 2), num_classes=5)
        Traceback (most recent call last):
        ...
        ValueError: logits has 3 channels but num_classes is 5: expected logits (N, 5, H, W)
    """
    logits = check_tensor(logits, name, "(N, K, H, W)")
    if logits.dim() != 4:
        raise ValueError(f"{name} must be scores (N, K, H, W), got shape {tuple(logits.shape)}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating-point scores, got dtype {logits.dtype}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(
            f"{name} has {logits.shape[1]} channels but num_classes is {num_classes}: "
            f"expected logits (N, {num_classes}, H, W)"
        )
    return check_finite(logits, name, where)
