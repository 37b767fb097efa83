"""Sliding-window and multi-scale + flip inference, as mmsegmentation evaluates, differentiably.

Full-resolution Cityscapes and most mmsegmentation results are evaluated with
``test_cfg=dict(mode="slide", crop_size=..., stride=...)`` and often with
multi-scale + flip test-time augmentation. An attack must see the model as
it is evaluated, so both are plain differentiable functions of the image
here, with thin ``nn.Module`` wrappers that any attack, rain, defence or the
benchmark takes as a segmentation model:

- [sliding_window_logits][segrobust.models.inference.sliding_window_logits] /
  [SlidingWindow][segrobust.models.SlidingWindow]: crops on a grid that covers
  the image, the last crop of a row or column aligned to the border, logits
  summed into place and divided by the count of crops covering each pixel
  (mmseg's ``slide_inference``); an image smaller than the crop is one crop of
  its own size (mmseg does not pad either);
- [multiscale_flip_log_probs][segrobust.models.inference.multiscale_flip_log_probs] /
  [MultiScaleFlip][segrobust.models.MultiScaleFlip]: the softmax averaged over
  rescaled (and horizontally flipped) copies, each prediction resized back to
  the input size (mmseg's ``SegTTAModel``), returned as log-probabilities;
- [ChannelsLast][segrobust.models.ChannelsLast]: the model run on its input in
  ``torch.channels_last`` memory format (same values, faster convolutions on
  recent GPUs).

The wrapped model must return logits at the size of what it is given (wrap a
network that predicts at 1/4 in [SegmentationModel][segrobust.models.SegmentationModel]
first): ``SlidingWindow(SegmentationModel(net, mean=..., std=...), 512, 341)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn

from segrobust.utils import segmentation_logits
from segrobust.validation import check_int, check_number

__all__ = [
    "multiscale_flip_log_probs",
    "sliding_window_logits",
    "window_grid",
]

Pair = Union[int, Sequence[int]]


def _pair(value: Pair, name: str) -> tuple[int, int]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return check_int(value[0], f"{name} height", low=1), check_int(value[1], f"{name} width", low=1)
    side = check_int(value, name, low=1)
    return side, side


def window_grid(size: Sequence[int], crop: Pair, stride: Pair) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of each window, row by row, as mmseg's ``slide_inference`` places them.

    ``ceil((H - crop) / stride) + 1`` rows of windows ``stride`` apart; the last
    one is moved back to end at the border, so every window but those of an
    image smaller than the crop has the crop's size.

    Examples:
        >>> window_grid((5, 10), crop=4, stride=3)
        [(0, 4, 0, 4), (0, 4, 3, 7), (0, 4, 6, 10), (1, 5, 0, 4), (1, 5, 3, 7), (1, 5, 6, 10)]
        >>> window_grid((3, 3), crop=4, stride=2)
        [(0, 3, 0, 3)]
    """
    (height, width), (crop_h, crop_w), (stride_h, stride_w) = size, _pair(crop, "crop"), _pair(stride, "stride")
    if stride_h > crop_h or stride_w > crop_w:
        raise ValueError(
            f"stride {(stride_h, stride_w)} must not exceed crop {(crop_h, crop_w)}: pixels would be missed"
        )
    rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
    windows = []
    for row in range(rows):
        bottom = min(row * stride_h + crop_h, height)
        for col in range(cols):
            right = min(col * stride_w + crop_w, width)
            windows.append((max(bottom - crop_h, 0), bottom, max(right - crop_w, 0), right))
    return windows


def _logits_at_input_size(model: nn.Module, images: torch.Tensor, what: str) -> torch.Tensor:
    logits = segmentation_logits(model(images))
    if logits.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"{what}: the model returned logits of size {tuple(logits.shape[-2:])} for an input of size "
            f"{tuple(images.shape[-2:])}; wrap it in SegmentationModel (which upsamples) first"
        )
    return logits


def _check_batch(images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a tensor (N, C, H, W), got {getattr(images, 'shape', type(images).__name__)}")
    return images


def sliding_window_logits(model: nn.Module, images: torch.Tensor, crop: Pair, stride: Pair) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` of ``model`` run on overlapping crops of ``images``, averaged where they overlap.

    Each window of [window_grid][segrobust.models.inference.window_grid] is one forward
    of the whole batch; the logits are added into place (zero elsewhere) and the
    sum divided by the number of windows covering each pixel, exactly as
    mmsegmentation's ``slide_inference``. Differentiable in ``images``.

    Examples:
        >>> net = nn.Conv2d(3, 4, 3, padding=1)
        >>> sliding_window_logits(net, torch.rand(2, 3, 20, 30), crop=16, stride=8).shape
        torch.Size([2, 4, 20, 30])
    """
    images = _check_batch(images)
    height, width = images.shape[-2:]
    total, count = None, images.new_zeros(1, 1, height, width)
    for top, bottom, left, right in window_grid((height, width), crop, stride):
        logits = _logits_at_input_size(model, images[..., top:bottom, left:right], "SlidingWindow")
        placed = F.pad(logits, (left, width - right, top, height - bottom))
        total = placed if total is None else total + placed
        count[..., top:bottom, left:right] += 1
    return total / count.to(total.dtype)


def multiscale_flip_log_probs(
    model: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = True
) -> torch.Tensor:
    """``log(mean of softmax)`` over copies of ``images`` rescaled by each of ``scales`` (and flipped).

    A copy at scale ``s`` is ``(round(s H), round(s W))``, resized bilinearly;
    its logits are resized back to ``(H, W)`` (and flipped back), turned into
    probabilities, and the probabilities of all copies averaged, as
    mmsegmentation's test-time augmentation does. Returned as float32
    log-probabilities (``logsumexp`` of the log-softmaxes minus ``log`` of the
    number of copies: exact, finite and differentiable), so ``argmax`` is the
    averaged prediction and cross-entropy losses apply as to logits.

    Examples:
        >>> net = nn.Conv2d(3, 4, 3, padding=1)
        >>> out = multiscale_flip_log_probs(net, torch.rand(1, 3, 16, 16), scales=(0.5, 1.0))
        >>> out.shape, bool(torch.allclose(out.exp().sum(1), torch.ones(1, 16, 16)))
        (torch.Size([1, 4, 16, 16]), True)
    """
    images = _check_batch(images)
    size = tuple(images.shape[-2:])
    total, views = None, 0
    for scale in scales:
        scaled_size = tuple(max(1, int(side * scale + 0.5)) for side in size)
        scaled = (
            images if scaled_size == size else F.interpolate(images, scaled_size, mode="bilinear", align_corners=False)
        )
        for flipped in (False, True) if flip else (False,):
            logits = _logits_at_input_size(model, scaled.flip(-1) if flipped else scaled, "MultiScaleFlip")
            logits = logits.flip(-1) if flipped else logits
            if tuple(logits.shape[-2:]) != size:
                logits = F.interpolate(logits.float(), size, mode="bilinear", align_corners=False)
            log_probs = logits.float().log_softmax(1)
            total = log_probs if total is None else torch.logaddexp(total, log_probs)
            views += 1
    return total - math.log(views)


class SlidingWindow(nn.Module):
    """mmsegmentation's sliding-window ("slide") inference around a segmentation model, differentiable.

    Crops of ``crop`` pixels every ``stride`` pixels (ints or ``(height, width)``
    pairs; ``stride <= crop``) with the last crop aligned to the border; the
    logits of overlapping crops are averaged (see
    [sliding_window_logits][segrobust.models.inference.sliding_window_logits]). One
    forward of the batch per window; an attack through it costs that many
    forwards and backwards per step.

    Shapes: images ``(N, C, H, W)`` to logits ``(N, K, H, W)``.

    Examples:
        >>> slide = SlidingWindow(nn.Conv2d(3, 4, 3, padding=1), crop=(16, 16), stride=(8, 8))
        >>> slide(torch.rand(1, 3, 24, 40)).shape, len(window_grid((24, 40), 16, 8))
        (torch.Size([1, 4, 24, 40]), 8)
    """

    def __init__(self, model: nn.Module, crop: Pair, stride: Pair) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.crop, self.stride = _pair(crop, "crop"), _pair(stride, "stride")
        window_grid(self.crop, self.crop, self.stride)  # stride <= crop, checked once here

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return sliding_window_logits(self.model, images, self.crop, self.stride)

    def extra_repr(self) -> str:
        return f"crop={self.crop}, stride={self.stride}"


class MultiScaleFlip(nn.Module):
    """Multi-scale (and flip) test-time augmentation around a segmentation model, as log-probabilities.

    Averages the softmax over the input rescaled by each of ``scales`` and, with
    ``flip``, its mirror image (see
    [multiscale_flip_log_probs][segrobust.models.inference.multiscale_flip_log_probs]).
    Differentiable: attacks see the augmented model as it is evaluated, at one
    forward and backward per view and step.

    Shapes: images ``(N, C, H, W)`` to log-probabilities ``(N, K, H, W)`` (float32).

    Examples:
        >>> tta = MultiScaleFlip(nn.Conv2d(3, 4, 3, padding=1), scales=(0.75, 1.0, 1.25), flip=True)
        >>> tta(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 4, 32, 32])
    """

    def __init__(self, model: nn.Module, scales: Sequence[float] = (1.0,), flip: bool = True) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence) or not scales:
            raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
        if not isinstance(flip, bool):
            raise TypeError(f"flip must be True or False, got {flip!r}")
        self.model = model
        self.scales = tuple(check_number(s, "scales", low=0, low_inclusive=False, high=8) for s in scales)
        self.flip = flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return multiscale_flip_log_probs(self.model, images, self.scales, self.flip)

    def extra_repr(self) -> str:
        return f"scales={self.scales}, flip={self.flip}"


class ChannelsLast(nn.Module):
    """A model run on its input in ``torch.channels_last`` memory format: the same function, differentiable.

    Each input ``(N, C, H, W)`` is made channels-last before the model sees
    it (attacks' iterates included), which lets convolutions use their NHWC
    kernels. The wrapper leaves the model's weights alone: convert them once
    yourself with ``model.to(memory_format=torch.channels_last)`` (as
    ``segrobust benchmark --channels-last`` does).

    Shapes: images ``(N, C, H, W)`` to whatever the model returns.

    Examples:
        >>> net = nn.Conv2d(3, 4, 3, padding=1)
        >>> x = torch.rand(1, 3, 8, 8)
        >>> bool(torch.allclose(ChannelsLast(net)(x), net(x)))
        True
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(_check_batch(images).contiguous(memory_format=torch.channels_last))
