"""Small helpers shared across segrobust: model outputs, device and mode bookkeeping, one-line error messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional

import torch
from torch import nn

__all__ = ["error_line", "item_dict", "model_mode_preserved", "predicted_classes", "segmentation_logits"]


def segmentation_logits(output: Any, key: Optional[str] = None) -> torch.Tensor:
    """Return the segmentation logits ``(N, K, H, W)`` from a model's output.

    The one place that knows how segmentation models return their logits:

    - a tensor is returned as is;
    - a mapping: its ``"out"`` entry (torchvision), else its ``"logits"`` entry
      (Hugging Face ``ModelOutput``), else its only entry;
    - an object with a tensor ``.logits`` attribute (Hugging Face outputs);
    - a tuple or list: its first item (smp models built with ``aux_params``
      return ``(mask_logits, label_logits)``).

    ``key`` names the entry (or attribute) to use instead of guessing.

    Examples:
        >>> import torch
        >>> logits = torch.zeros(1, 3, 4, 4)
        >>> segmentation_logits((logits, torch.zeros(1, 3))).shape
        torch.Size([1, 3, 4, 4])
        >>> segmentation_logits({"out": logits, "aux": logits}).shape
        torch.Size([1, 3, 4, 4])
        >>> segmentation_logits({"logits": logits, "hidden_states": None}).shape
        torch.Size([1, 3, 4, 4])
    """
    logits = _pick_logits(output) if key is None else _pick_key(output, key)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model output must be segmentation logits (N, K, H, W), got {shape}")
    return logits


def _pick_key(output: Any, key: str) -> Any:
    if isinstance(output, Mapping):
        if key not in output:
            raise TypeError(f"model output has no key {key!r} (keys: {sorted(map(str, output))})")
        return output[key]
    if not hasattr(output, key):
        raise TypeError(f"model output ({type(output).__name__}) has no key or attribute {key!r}")
    return getattr(output, key)


def _pick_logits(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("out", "logits"):
            if key in output:
                return output[key]
        if len(output) == 1:
            return next(iter(output.values()))
        if "class_queries_logits" in output and "masks_queries_logits" in output:
            raise TypeError(
                "model returned query-based outputs (class_queries_logits and masks_queries_logits, as Mask2Former, "
                "MaskFormer and OneFormer do): wrap it in segrobust.models.SegmentationModel, which turns them into "
                "per-class scores (no output_key: each of those tensors holds queries, not classes)"
            )
        raise TypeError(
            f"model returned a dict without an 'out' or 'logits' key (keys: {sorted(map(str, output))}); "
            "name the key of the segmentation logits with SegmentationModel(model, output_key=...)"
        )
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        return output.logits
    if isinstance(output, Sequence) and not isinstance(output, str) and len(output) > 0:
        return output[0]
    raise TypeError(
        f"model returned {type(output).__name__}; expected a tensor (N, K, H, W), a tuple whose first item is one, "
        "a dict with key 'out' or 'logits', or an object with a .logits tensor"
    )


@contextlib.contextmanager
def model_mode_preserved(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's ``training`` flag on exit, whatever happens inside.

    ``model.train(given)`` alone would lose per-module choices such as a frozen
    BatchNorm inside a model in training mode.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).train()
        >>> _ = net[1].eval()
        >>> with model_mode_preserved(net):
        ...     _ = net.eval()
        >>> net.training, net[1].training
        (True, False)
    """
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """Class ids ``(N, H, W)`` from logits ``(N, K, H, W)``: the index of the first maximum.

    Same result as ``logits.argmax(dim=1)``, but ``max(dim=1)`` is about 4× faster
    on CPU for this layout (measured: 3.0 ms vs 14.2 ms for 4×11×128×128 on 2
    threads), which matters inside an attack step.

    Examples:
        >>> import torch
        >>> predicted_classes(torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]]))
        tensor([[[1]]])
    """
    return logits.max(dim=1).indices


def error_line(error: BaseException) -> str:
    """The first line of an error's message, or its class name when the message is empty.

    Examples:
        >>> error_line(ValueError("bad value\\nmore detail"))
        'bad value'
        >>> error_line(KeyError())
        'KeyError'
    """
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def item_dict(item: Any) -> dict[str, Any]:
    """A data-set item as a fresh dict: a mapping's entries, or ``{"image", "mask"}`` of an ``(image, mask, ...)`` pair.

    ``TypeError`` for anything else (the caller names the item).

    Examples:
        >>> sorted(item_dict(("x", "y")).items())
        [('image', 'x'), ('mask', 'y')]
    """
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return {"image": item[0], "mask": item[1]}
    raise TypeError(f"expected a dict item or an (image, mask) pair, got {type(item).__name__}")
