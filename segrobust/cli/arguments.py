"""The value types of the command-line flags: each turns the text of a flag into its value or says what was expected."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = [
    "attack_args",
    "budget",
    "channel_list",
    "corruption_list",
    "eps_list",
    "json_object",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "scale_list",
    "severity_list",
    "size",
    "sliding_window",
    "step_size",
]


def size(text: str) -> tuple[int, int]:
    """``HxW`` (or ``H,W``), each at least 8."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 96x128, got {text!r}") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return height, width


def _integer(text: str, minimum: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def budget(text: str) -> float:
    """An L∞ budget in ``(0, 1]``: ``8/255``, ``0.03``."""
    from segrobust.benchmark.functional import parse_eps

    try:
        return parse_eps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def step_size(text: str) -> float:
    try:
        return budget(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(str(error).replace("eps", "the step size", 1)) from None


def eps_list(text: str) -> list[float]:
    values = [budget(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("--eps needs at least one budget, e.g. 2/255,4/255,8/255")
    return values


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({error}); expected an object like '{{\"key\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {type(value).__name__}")
    return value


def attack_args(text: str) -> dict[str, dict[str, Any]]:
    """``--attack-args``: a JSON object of objects (keyword arguments per attack key)."""
    value = json_object(text)
    for attack, kwargs in value.items():
        if not isinstance(kwargs, dict):
            raise argparse.ArgumentTypeError(
                f'the value for "{attack}" must be a JSON object of keyword arguments, e.g. \'{{"{attack}": {{}}}}\''
            )
    return value


def channel_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406")
    return values


def corruption_list(text: str) -> list[str]:
    """``--corruptions``: corruption and family names, ``all`` or ``none`` (`segrobust.corruptions.resolve_corruptions`)."""
    from segrobust.corruptions import resolve_corruptions

    try:
        return resolve_corruptions(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def severity_list(text: str) -> list[int]:
    """``--severities``: levels in 1..5, comma-separated or as ranges (``1,3,5``, ``1-5``)."""
    from segrobust.corruptions import resolve_severities

    try:
        return resolve_severities(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def sliding_window(text: str) -> str:
    """``--slide HxW:SHxSW`` (crop, stride): checked, returned in that spelling (see `window_pairs`)."""
    from segrobust.models.inference import window_grid

    crop, _, stride = text.partition(":")
    try:
        (height, width), (stride_h, stride_w) = size(crop), size(stride)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected CROPxCROP:STRIDExSTRIDE, e.g. 512x1024:341x683, each side at least 8, got {text!r}"
        ) from None
    try:
        window_grid((height, width), (height, width), (stride_h, stride_w))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}, got {text!r}") from None
    return f"{height}x{width}:{stride_h}x{stride_w}"


def window_pairs(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(crop, stride)`` of a `sliding_window` value."""
    crop, _, stride = sliding_window(text).partition(":")
    return size(crop), size(stride)


def scale_list(text: str) -> list[float]:
    """``--tta``: comma-separated scales in (0, 8], e.g. ``0.75,1,1.25``."""
    from segrobust.validation import check_number

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
        if not values:
            raise ValueError("no scale given")
        return [check_number(value, "scale", low=0, low_inclusive=False, high=8) for value in values]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated scales in (0, 8], e.g. 0.75,1,1.25, got {text!r} ({error})"
        ) from None
