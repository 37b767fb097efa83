"""Build segmentation models from short specs and load them from checkpoints, safely.

A *spec* names an smp architecture and encoder, plus optional keyword
arguments: ``"unet:resnet18"``, ``"deeplabv3plus:resnet34"``,
``"unet:resnet18:encoder_depth=3:decoder_channels=32,16,8"``. Models are
always built with ``encoder_weights=None`` (nothing is downloaded).

Checkpoints are read with ``torch.load(weights_only=True)``, which unpickles
only tensors and plain containers, so reading one runs no code from the file.
[`load_model`][segrobust.models.load_model] understands

- a segrobust model checkpoint written by [`save_model`][segrobust.models.save_model] (it holds its spec),
- ``SPEC@PATH``: a plain ``state_dict`` (or a segrobust training checkpoint)
  loaded into the model that ``SPEC`` builds,
- ``module:callable``: any model a Python function builds (torchvision,
  your own code), optionally with weights from a ``state_dict`` file,
- ``hf:CLASS`` (a ``transformers`` model class built from a config dict,
  random weights) and ``hf:PATH`` (a local ``save_pretrained`` folder; nothing
  is downloaded and no code from the folder runs), with ``transformers``
  installed (``pip install "segrobust[hf]"``),
- a TorchScript archive (``torch.jit.save``), only when asked with
  ``allow_torchscript=True``: a TorchScript file is a program. Its serialized
  TorchScript code and graph are run by the TorchScript interpreter when the
  model is called. No pickled Python objects are unpickled, but the model
  computes whatever the file says, so load only TorchScript files you trust.

and raises [`ModelLoadError`][segrobust.models.ModelLoadError] (a ``ValueError``) with a one-line
explanation for anything else. [`SegmentationModel`][segrobust.models.SegmentationModel] adapts any model
(lower-resolution logits, Hugging Face or torchvision outputs, its own input
normalisation, query-based Mask2Former outputs) to what segrobust expects:
``[0, 1]`` images in, logits at the input resolution out;
[`SlidingWindow`][segrobust.models.SlidingWindow] and
[`MultiScaleFlip`][segrobust.models.MultiScaleFlip] add mmsegmentation's
sliding-window and multi-scale + flip inference on top, differentiably, and
[`ChannelsLast`][segrobust.models.ChannelsLast] runs a model on channels-last inputs.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import json
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from segrobust.fileio import UnreadableFileError, atomic_torch_save, check_regular_file
from segrobust.models.errors import ModelLoadError
from segrobust.models.huggingface import (
    QUERY_CLASS_KEY,
    QUERY_MASK_KEY,
    build_hf_model,
    hf_normalisation,
    load_hf_pretrained,
    query_outputs,
    query_semantic_log_probs,
)
from segrobust.models.inference import ChannelsLast, MultiScaleFlip, SlidingWindow
from segrobust.utils import segmentation_logits

__all__ = [
    "CHECKPOINT_FORMAT",
    "ChannelsLast",
    "ModelLoadError",
    "ModelSpec",
    "MultiScaleFlip",
    "SegmentationModel",
    "SlidingWindow",
    "build_model",
    "extract_state_dict",
    "load_model",
    "load_state_dict_file",
    "load_weights",
    "parse_model_spec",
    "save_model",
]

#: ``format`` tag of the checkpoints [`save_model`][segrobust.models.save_model] writes.
CHECKPOINT_FORMAT = "segrobust.model/1"

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".ts", ".jit", ".zip")


@dataclass(frozen=True)
class ModelSpec:
    """An smp architecture, encoder and extra constructor arguments.

    Examples:
        >>> spec = parse_model_spec("unet:resnet18:encoder_depth=3")
        >>> spec.arch, spec.encoder, spec.kwargs
        ('unet', 'resnet18', {'encoder_depth': 3})
        >>> str(spec)
        'unet:resnet18:encoder_depth=3'
    """

    arch: str
    encoder: str = "resnet34"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [self.arch, self.encoder]
        for key, value in self.kwargs.items():
            text = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else str(value)
            parts.append(f"{key}={text}")
        return ":".join(parts)


_UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact")


def _channel_stats(values: Optional[Any], name: str) -> Optional[torch.Tensor]:
    if values is None:
        return None
    try:
        stats = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, one per image channel, got {values!r}") from None
    if stats.numel() == 0 or not torch.isfinite(stats).all():
        raise ValueError(f"{name} must be finite numbers, one per image channel, got {values!r}")
    return stats.view(1, -1, 1, 1)


class SegmentationModel(nn.Module):
    """Any segmentation network as segrobust expects it: ``[0, 1]`` images in, logits at input resolution out.

    The wrapped ``model`` may return a tensor, a tuple (its first item), a
    dict with ``"out"`` (torchvision) or ``"logits"``, or an object with a
    ``.logits`` tensor (Hugging Face); ``output_key`` names the entry when the
    guess is wrong (see [segmentation_logits][segrobust.utils.segmentation_logits]).
    Logits at a lower resolution (SegFormer and mmseg heads predict at 1/4)
    are resized to the input's with ``upsample`` (``"bilinear"``, ``"bicubic"``,
    ``"nearest"``; ``None`` makes a size mismatch an error). ``mean`` and ``std``
    (one value per channel) normalise the images inside, so attacks and rain
    work in ``[0, 1]`` pixel space while the network sees what it was trained on.

    Query-based models (Hugging Face Mask2Former, MaskFormer, OneFormer:
    ``class_queries_logits`` ``(N, Q, K + 1)`` and ``masks_queries_logits``
    ``(N, Q, h, w)``) are recognised: the mask logits are resized to the input
    with ``upsample`` and turned into per-class log-probabilities by
    [query_semantic_log_probs][segrobust.models.huggingface.query_semantic_log_probs]
    (the models' own semantic inference; see "Query-based models" in the
    models guide for why these are the logits attacks see).

    ``num_classes`` (default: ``model.config.num_labels`` for a Hugging Face
    model, else unknown) is checked against every output: a tensor with
    another number of channels (an ``output_key`` naming the wrong tensor,
    say) is an error, never a silently meaningless score map.

    The wrapper holds no parameters of its own and never changes the wrapped
    model's: ``train()``/``eval()`` reach it as for any submodule, and the
    constructor leaves its mode as it is.

    Shapes: images ``(N, C, H, W)`` in ``[0, 1]`` to logits ``(N, K, H, W)``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> quarter = nn.Conv2d(3, 5, kernel_size=4, stride=4)  # logits at 1/4 resolution
        >>> model = SegmentationModel(quarter, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        >>> model(torch.rand(2, 3, 32, 48)).shape
        torch.Size([2, 5, 32, 48])
    """

    def __init__(
        self,
        model: nn.Module,
        output_key: Optional[str] = None,
        upsample: Optional[str] = "bilinear",
        mean: Optional[Any] = None,
        std: Optional[Any] = None,
        num_classes: Optional[int] = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if upsample is not None and upsample not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {_UPSAMPLE_MODES} or None, got {upsample!r}")
        if output_key is not None and not isinstance(output_key, str):
            raise TypeError(f"output_key must be a string or None, got {type(output_key).__name__}")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        mean_t, std_t = _channel_stats(mean, "mean"), _channel_stats(std, "std")
        if (mean_t is None) != (std_t is None):
            raise ValueError("give both mean and std (one value per channel), or neither")
        if std_t is not None and not (std_t > 0).all():
            raise ValueError(f"std must be positive, got {std!r}")
        if mean_t is not None and std_t is not None and mean_t.numel() != std_t.numel():
            raise ValueError(f"mean and std need one value per channel each, got {mean_t.numel()} and {std_t.numel()}")
        self.model = model
        self.output_key = output_key
        self.upsample = upsample
        self.num_classes = num_classes if num_classes is not None else _declared_classes(model)
        # Not persistent: the state dict stays the wrapped model's (under ``model.``).
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = images
        if self.mean is not None:
            if images.dim() != 4 or images.shape[1] != self.mean.shape[1]:
                raise ValueError(
                    f"expected images (N, {self.mean.shape[1]}, H, W) to match mean/std, got {tuple(images.shape)}"
                )
            inputs = (images - self.mean) / self.std
        output = self.model(inputs)
        size = images.shape[-2:]
        queries = query_outputs(output)
        if queries is not None and self.output_key in (None, QUERY_CLASS_KEY, QUERY_MASK_KEY):
            if self.output_key is not None:
                raise ValueError(
                    f"output_key={self.output_key!r} names a tensor of a query-based model (Mask2Former, "
                    "MaskFormer, OneFormer): its channels are queries, not classes; leave output_key unset and "
                    "SegmentationModel turns class_queries_logits and masks_queries_logits into class scores"
                )
            class_logits, mask_logits = queries
            self._check_classes(class_logits.shape[-1] - 1, f"{QUERY_CLASS_KEY} (K + 1 with no-object)")
            return query_semantic_log_probs(class_logits, self._resized(mask_logits, size, QUERY_MASK_KEY))
        logits = segmentation_logits(output, self.output_key)
        where = "logits" if self.output_key is None else f"output_key={self.output_key!r}"
        self._check_classes(logits.shape[1], where)
        return self._resized(logits, size, where)

    def _check_classes(self, channels: int, where: str) -> None:
        if self.num_classes is not None and channels != self.num_classes:
            raise ValueError(
                f"the model's {where} has {channels} classes but num_classes={self.num_classes}: "
                "it is not one score per class (check output_key and num_classes)"
            )

    def _resized(self, scores: torch.Tensor, size: torch.Size, what: str) -> torch.Tensor:
        if scores.shape[-2:] == size:
            return scores
        if self.upsample is None:
            raise ValueError(
                f"model returned {what} of size {tuple(scores.shape[-2:])} for images of size {tuple(size)} "
                "(pass upsample='bilinear' to resize them)"
            )
        corners = {"align_corners": False} if self.upsample in ("bilinear", "bicubic") else {}
        return F.interpolate(scores, size=size, mode=self.upsample, **corners)

    def extra_repr(self) -> str:
        normalise = (
            "" if self.mean is None else f", mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
        )
        classes = "" if self.num_classes is None else f", num_classes={self.num_classes}"
        return f"output_key={self.output_key!r}, upsample={self.upsample!r}{classes}{normalise}"


def _declared_classes(model: nn.Module) -> Optional[int]:
    """``config.num_labels`` of a Hugging Face model (its heads predict that many classes), else ``None``."""
    config = getattr(model, "config", None)
    if not type(config).__module__.startswith("transformers."):
        return None
    count = getattr(config, "num_labels", None)
    return count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None


def _parse_value(text: str) -> Any:
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float)) else text


def _architectures() -> dict[str, Any]:
    from segmentation_models_pytorch import MODEL_ARCHITECTURES_MAPPING

    return dict(MODEL_ARCHITECTURES_MAPPING)


def parse_model_spec(spec: Union[str, ModelSpec]) -> ModelSpec:
    """Parse ``"arch[:encoder[:key=value...]]"`` (values: ints, floats, true/false, none, comma lists).

    Raises [`ModelLoadError`][segrobust.models.ModelLoadError] naming the valid architectures for an unknown one.

    Examples:
        >>> parse_model_spec("unet:resnet18:decoder_channels=32,16,8").kwargs
        {'decoder_channels': (32, 16, 8)}
        >>> parse_model_spec("fpn").encoder
        'resnet34'
    """
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"model spec must be a non-empty string like 'unet:resnet18', got {spec!r}")
    arch, *rest = spec.strip().split(":")
    arch = arch.lower()
    known = _architectures()
    if arch not in known:
        raise ModelLoadError(f"unknown architecture {arch!r} in model spec {spec!r}; expected one of {sorted(known)}")
    encoder = "resnet34"
    if rest and "=" not in rest[0]:
        encoder, *rest = rest
    kwargs: dict[str, Any] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ModelLoadError(
                f"bad option {item!r} in model spec {spec!r}; expected key=value, e.g. encoder_depth=3"
            )
        kwargs[key] = _parse_value(value)
    if "encoder_weights" in kwargs:
        raise ModelLoadError("model specs never take encoder_weights: models are built with encoder_weights=None")
    return ModelSpec(arch, encoder, kwargs)


def _check_encoder(encoder: str) -> None:
    from segmentation_models_pytorch.encoders import encoders

    if encoder.startswith("tu-"):
        _check_timm_encoder(encoder)
        return
    if encoder in encoders:
        return
    close = difflib.get_close_matches(encoder, list(encoders), n=4)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ModelLoadError(f"unknown smp encoder {encoder!r}{hint}; timm encoders are spelled 'tu-NAME'")


def _check_timm_encoder(encoder: str) -> None:
    """``tu-NAME``: NAME must be a timm model (timm's own error would be a bare RuntimeError)."""
    import timm

    name = encoder[len("tu-") :]
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=4)
    hint = f" (did you mean {', '.join('tu-' + c for c in close)}?)" if close else ""
    raise ModelLoadError(f"unknown timm encoder {encoder!r}: timm has no model {name!r}{hint}")


def _drop_unused_stages(model: nn.Module) -> None:
    """Replace encoder stages that ``encoder_depth`` never runs by ``nn.Identity``.

    smp keeps ResNet stages beyond ``encoder_depth`` as dead parameters (a
    depth-3 resnet18 Unet holds 11 M parameters, of which 0.7 M are used);
    dropping them keeps checkpoints small and ``model.parameters()`` honest.
    """
    encoder = getattr(model, "encoder", None)
    depth = getattr(encoder, "_depth", None)
    if not isinstance(depth, int):
        return
    for stage, name in ((2, "layer1"), (3, "layer2"), (4, "layer3"), (5, "layer4")):
        if depth < stage and isinstance(getattr(encoder, name, None), nn.Sequential):
            setattr(encoder, name, nn.Identity())


def build_model(
    spec: Union[str, ModelSpec], num_classes: int = 11, *, seed: Optional[int] = None, **kwargs: Any
) -> nn.Module:
    """Build an smp model from a spec, with ``encoder_weights=None``, in eval mode.

    Keyword arguments are added to (and override) those of the spec. Encoder
    stages beyond ``encoder_depth`` are dropped (see `_drop_unused_stages`).
    ``seed`` draws the random initial weights from its own generator (the same
    model in every process and run); ``None`` uses torch's global one.

    Examples:
        >>> import torch
        >>> net = build_model("unet:resnet18:encoder_depth=3:decoder_channels=16,8,8", num_classes=4)
        >>> net(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 4, 32, 32])
    """
    import segmentation_models_pytorch as smp

    parsed = parse_model_spec(spec)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ModelLoadError(f"num_classes must be a positive int, got {num_classes!r}")
    if kwargs.get("encoder_weights") is not None:
        raise ModelLoadError("encoder_weights must be None: segrobust never downloads weights")
    kwargs.pop("encoder_weights", None)
    _check_encoder(parsed.encoder)
    options = {**parsed.kwargs, **kwargs}
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = smp.create_model(
                parsed.arch, encoder_name=parsed.encoder, encoder_weights=None, classes=num_classes, **options
            )
        except (TypeError, ValueError, KeyError, AssertionError) as error:
            raise ModelLoadError(f"cannot build model {str(parsed)!r}: {error}") from None
    _drop_unused_stages(model)
    return model.eval()


def save_model(
    model: nn.Module,
    path: Union[str, os.PathLike],
    spec: Union[str, ModelSpec],
    num_classes: int,
    *,
    half: bool = False,
    metadata: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a checkpoint [`load_model`][segrobust.models.load_model] reads back without being told the architecture.

    ``half=True`` stores floating tensors as float16 (half the size; they are
    cast back to float32 on load). ``metadata`` (JSON-like: str, numbers,
    lists, dicts) is stored alongside. The file is written atomically.

    Examples:
        >>> import tempfile, torch
        >>> net = build_model("unet:resnet18:encoder_depth=3:decoder_channels=16,8,8", num_classes=4)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_model(net, f"{tmp}/net.pt", "unet:resnet18:encoder_depth=3:decoder_channels=16,8,8", 4)
        ...     again = load_model(path)
        >>> torch.equal(again(torch.ones(1, 3, 32, 32)), net(torch.ones(1, 3, 32, 32)))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_model needs the model (an nn.Module) first, got {type(model).__name__}")
    parsed = parse_model_spec(spec)
    # JSON round trip: weights_only=True readers accept only plain types (torch.__version__ is a str subclass).
    plain_metadata = json.loads(json.dumps(dict(metadata or {}), default=str))
    state = {
        key: (value.half() if half and value.is_floating_point() else value).detach().cpu().clone()
        for key, value in model.state_dict().items()
    }
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "spec": str(parsed),
        "num_classes": int(num_classes),
        "state_dict": state,
        "metadata": plain_metadata,
    }
    path = Path(path)
    atomic_torch_save(checkpoint, path)
    return path


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("constants.pkl") or "/code/" in name for name in names)


def load_state_dict_file(path: Union[str, os.PathLike]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors.

    Examples:
        >>> load_state_dict_file("/nonexistent/model.pt")
        Traceback (most recent call last):
        ...
        segrobust.models.ModelLoadError: checkpoint /nonexistent/model.pt does not exist
    """
    try:  # a FIFO, socket or device would block the read forever
        path = check_regular_file(path, "checkpoint")
    except UnreadableFileError as error:
        raise ModelLoadError(str(error)) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:  # permissions, links, I/O: say so rather than "not a torch file"
        raise ModelLoadError(f"cannot read checkpoint {path}: {error.strerror or _error_text(error)}") from None
    except Exception as error:
        reason = f"not a file written by torch.save ({_error_text(error)})"
        if "Unsupported global" in str(error) or "This file can still be loaded" in str(error):
            reason = (
                "it holds pickled Python objects (e.g. a whole nn.Module); save model.state_dict() "
                "or a TorchScript model instead"
            )
        elif "Weights only load failed" in str(error):
            reason = "not a file written by torch.save (it cannot be unpickled)"
        raise ModelLoadError(f"cannot read checkpoint {path}: {reason}") from None


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a plain / segrobust / training / Lightning-style checkpoint."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise ModelLoadError(f"{path} holds no state dict (expected a mapping of parameter names to tensors)")


def load_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: Path,
    spec: str,
    *,
    smp_stages: bool = True,
    hint: str = "check the spec and --num-classes",
) -> None:
    """Load ``state`` into ``model``, all or nothing, with a one-line error listing what does not fit.

    ``smp_stages`` ignores weights of encoder stages dropped by
    `_drop_unused_stages` (only meaningful for spec-built smp models).
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved weights
    expected = model.state_dict()
    unused = {k for k in state if smp_stages and k not in expected and any(f".layer{i}." in k for i in range(1, 5))}
    state = {k: v for k, v in state.items() if k not in unused}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            key = wrong_shape[0]
            details.append(
                f"{len(wrong_shape)} with another shape (e.g. {key}: {tuple(state[key].shape)} "
                f"in the file, {tuple(expected[key].shape)} in the model)"
            )
        raise ModelLoadError(f"checkpoint {path} does not fit model {spec!r}: " + "; ".join(details) + f" - {hint}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)


_CALLABLE_SOURCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _is_callable_source(text: str) -> bool:
    """``module:callable`` (``torchvision.models.segmentation:lraspp_mobilenet_v3_large``), not an smp spec."""
    if not _CALLABLE_SOURCE.fullmatch(text) or Path(text).exists():
        return False
    head = text.partition(":")[0]
    return "." in head or head.lower() not in _architectures()  # smp architectures have no dots


def _error_text(error: BaseException) -> str:
    """``Class: first line of the message`` (just the class when the message is empty)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _import_callable(source: str) -> Any:
    """The callable ``module:attr`` names; the current directory is importable, as with ``python -m``."""
    module_name, _, attr = source.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = getattr(error, "name", None)
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ModelLoadError(
                f"model {source!r}: no module named {missing!r} (an smp spec starts with one of "
                f"{', '.join(sorted(_architectures()))}; 'module:callable' needs an importable module)"
            ) from None
        raise ModelLoadError(f"model {source!r}: importing {module_name} failed: {_error_text(error)}") from None
    except Exception as error:  # the user's module raised while being imported
        raise ModelLoadError(f"model {source!r}: importing {module_name} failed: {_error_text(error)}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"model {source!r}: module {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelLoadError(
            f"model {source!r}: {attr} is a {type(target).__name__}, not a callable that builds a model"
        )
    return target


def _build_from_callable(
    source: str, num_classes: Optional[int], model_args: Mapping[str, Any], seed: Optional[int]
) -> nn.Module:
    factory = _import_callable(source)
    kwargs = dict(model_args)
    if num_classes is not None:
        if kwargs.setdefault("num_classes", num_classes) != num_classes:
            raise ModelLoadError(
                f"model {source!r}: num_classes={num_classes} contradicts the model arguments {kwargs}"
            )
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            model = factory(**kwargs)
        except Exception as error:  # whatever the user's builder raises is a bad --model / --model-args
            raise ModelLoadError(
                f"model {source!r}: {_call_text(source, kwargs)} failed: {_error_text(error)}"
            ) from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model {source!r} returned a {type(model).__name__}, expected a torch.nn.Module")
    return model


def _call_text(source: str, kwargs: Mapping[str, Any]) -> str:
    arguments = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"{source.partition(':')[2]}({arguments})"


def _read_segrobust_checkpoint(obj: Mapping[str, Any], path: Path) -> tuple[str, int]:
    """The spec and class count a [`save_model`][segrobust.models.save_model] checkpoint records."""
    spec, stored = obj.get("spec"), obj.get("num_classes")
    if not isinstance(spec, str) or isinstance(stored, bool) or not isinstance(stored, int) or stored < 1:
        missing = [key for key, value in (("spec", spec), ("num_classes", stored)) if value is None]
        what = f"misses {' and '.join(repr(k) for k in missing)}" if missing else "has a bad 'spec' or 'num_classes'"
        raise ModelLoadError(
            f"checkpoint {path} is a damaged segrobust checkpoint: it {what}; write it with save_model"
        )
    return spec, stored


def _load_torchscript(path: Path, device: Union[str, torch.device], allow: bool) -> nn.Module:
    if not allow:
        raise ModelLoadError(
            f"{path} is a TorchScript model: it runs the code stored in the file when called; if you trust it, "
            "allow it with --allow-torchscript (Python: load_model(..., allow_torchscript=True))"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, yet still the format users have
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as error:
        raise ModelLoadError(f"cannot load TorchScript model {path}: {_error_text(error)}") from None


def load_model(
    source: Union[str, os.PathLike, nn.Module],
    num_classes: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    *,
    seed: Optional[int] = 0,
    model_args: Optional[Mapping[str, Any]] = None,
    weights: Optional[Union[str, os.PathLike]] = None,
    mean: Optional[Any] = None,
    std: Optional[Any] = None,
    output_key: Optional[str] = None,
    allow_torchscript: bool = False,
) -> nn.Module:
    """A segmentation model in eval mode from a spec, ``module:callable``, a checkpoint or a TorchScript file.

    Args:
        source: ``"unet:resnet18"`` (random weights), ``"unet:resnet18@weights.pt"``
            (a plain state dict for that architecture), a path to a checkpoint
            written by [`save_model`][segrobust.models.save_model], ``"package.module:function"`` (any
            function returning an ``nn.Module``, called with ``model_args``; the
            current directory is importable), ``"hf:CLASS"`` (a ``transformers``
            model class such as ``SegformerForSemanticSegmentation``, built with
            random weights from ``model_args={"config": {...}}``),
            ``"hf:PATH"`` (a local ``save_pretrained`` folder: nothing is
            downloaded, no code from it runs), or a TorchScript archive. An
            ``nn.Module`` is returned as is (moved to ``device``, in eval mode).
        num_classes: classes of a spec-built model (default 11, CamVid), passed as
            ``num_classes`` to a ``module:callable`` and as ``num_labels`` to an
            ``hf:CLASS`` config; for a checkpoint or folder that records its
            class count, a different value is an error. Given to
            [SegmentationModel][segrobust.models.SegmentationModel] whenever the
            model is wrapped, so an output with another number of channels is
            refused.
        device: where the model goes.
        seed: seed of the random weights of a built model (the default 0
            makes ``load_model("unet:resnet18")`` the same model in every
            process, which resumed and distributed runs rely on); ``None`` uses
            torch's global generator.
        model_args: keyword arguments of the ``module:callable`` (or extra
            arguments of an smp spec, or ``{"config": {...}}`` for ``hf:CLASS``).
        weights: a ``state_dict`` file (read with ``weights_only=True``) loaded,
            strictly, into a spec- or callable-built model.
        mean, std: per-channel normalisation the model expects; the model is
            wrapped in [SegmentationModel][segrobust.models.SegmentationModel]
            so that it takes ``[0, 1]`` images. A ``module:callable`` model is
            always wrapped (output auto-detection, logits upsampled to the input),
            and so is an ``hf:`` model (with the mean and std of the folder's
            ``preprocessor_config.json`` when none are given).
        output_key: the output entry holding the logits (wraps the model in
            [SegmentationModel][segrobust.models.SegmentationModel]).
        allow_torchscript: load TorchScript archives. Off by default: unlike
            checkpoints, a TorchScript file is a program (its serialized
            TorchScript code runs whenever the model is called), so only files
            you trust should be loaded.

    Examples:
        >>> load_model("unet:resnet18:encoder_depth=3:decoder_channels=16,8,8", num_classes=4).training
        False
        >>> load_model("missing.pt")
        Traceback (most recent call last):
        ...
        segrobust.models.ModelLoadError: checkpoint missing.pt does not exist
    """
    wrapping = {"mean": mean, "std": std, "output_key": output_key, "num_classes": num_classes}
    if isinstance(source, nn.Module):
        return _wrap(source, **wrapping).to(device).eval()
    if not isinstance(source, (str, os.PathLike)):
        raise ModelLoadError(f"model must be a spec, a path or an nn.Module, got {type(source).__name__}")
    if model_args is not None and not isinstance(model_args, Mapping):
        raise ModelLoadError(f"model_args must be a mapping of keyword arguments, got {type(model_args).__name__}")
    text = os.fspath(source)
    if text.startswith("hf:"):
        return _load_hf(text, model_args or {}, seed, weights, wrapping).to(device).eval()
    if _is_callable_source(text):
        model = _build_from_callable(text, num_classes, model_args or {}, seed)
        if weights is not None:
            state = extract_state_dict(load_state_dict_file(weights), Path(weights))
            load_weights(model, state, Path(weights), text, smp_stages=False, hint="check --model-args")
        return _adapter(model, **wrapping).to(device).eval()
    spec: Optional[str] = None
    if "@" in text and not Path(text).exists():
        spec, _, text = text.partition("@")
        parse_model_spec(spec)
        if weights is not None:
            raise ModelLoadError(f"give the weights once: either {spec}@{text} or weights={weights}")
    elif weights is not None and not Path(text).exists() and not _looks_like_path(text):
        spec, text = text, os.fspath(weights)
    path = Path(text)
    if spec is None and not path.exists():
        if _looks_like_path(text):
            raise ModelLoadError(f"checkpoint {text} does not exist")
        model = build_model(text, num_classes if num_classes is not None else 11, seed=seed, **(model_args or {}))
        return _wrap(model, **{**wrapping, "num_classes": num_classes if num_classes is not None else 11}).to(device)
    if not path.exists():
        raise ModelLoadError(f"checkpoint {text} does not exist")
    if spec is None and (weights is not None or model_args):
        raise ModelLoadError(
            f"{path} is a complete model file: weights and model arguments go with a spec or module:callable"
        )
    if path.is_file() and _is_torchscript(path):
        if spec is not None:
            raise ModelLoadError(f"{path} is a TorchScript model: pass the path alone, without a spec")
        return _wrap(_load_torchscript(path, device, allow_torchscript), **wrapping).to(device).eval()
    obj = load_state_dict_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        stored_spec, stored = _read_segrobust_checkpoint(obj, path)
        if num_classes is not None and num_classes != stored:
            raise ModelLoadError(f"checkpoint {path} predicts {stored} classes, but {num_classes} were asked for")
        spec = spec or stored_spec
        num_classes = stored
    elif spec is None:
        raise ModelLoadError(
            f"{path} is a plain state dict without its architecture; pass it as SPEC@PATH, e.g. 'unet:resnet18@{path}'"
        )
    state = extract_state_dict(obj, path)
    if num_classes is None:
        head = state.get("segmentation_head.0.weight", state.get("module.segmentation_head.0.weight"))
        num_classes = int(head.shape[0]) if head is not None else 11
    model = build_model(spec, num_classes, **(model_args or {}))
    load_weights(model, state, path, spec)
    return _wrap(model, **{**wrapping, "num_classes": num_classes}).to(device).eval()


def _adapter(model: nn.Module, **wrapping: Any) -> SegmentationModel:
    """``SegmentationModel(model, **wrapping)``, its argument errors as one-line `ModelLoadError`s."""
    try:
        return SegmentationModel(model, **wrapping)
    except (TypeError, ValueError) as error:
        raise ModelLoadError(str(error)) from None


def _wrap(model: nn.Module, **wrapping: Any) -> nn.Module:
    """``model`` itself when it needs no adapter (no mean, std or output_key), else wrapped."""
    if all(wrapping.get(key) is None for key in ("mean", "std", "output_key")):
        return model
    return _adapter(model, **wrapping)


def _is_hf_folder(name: str) -> bool:
    """``hf:NAME`` names a folder unless ``NAME`` is a bare identifier (a class name) that is not a path."""
    return not name.isidentifier() or Path(name).exists()


def _load_hf(text: str, model_args: Mapping[str, Any], seed: Optional[int], weights: Any, wrapping: dict) -> nn.Module:
    """``hf:CLASS`` built from ``model_args["config"]`` or ``hf:PATH`` loaded from its folder, wrapped."""
    name = text[3:]
    if not name:
        raise ModelLoadError(
            "model 'hf:' needs a transformers class (hf:SegformerForSemanticSegmentation) or a folder (hf:./my-model)"
        )
    if not _is_hf_folder(name):
        model = build_hf_model(name, model_args, wrapping["num_classes"], seed)
        if weights is not None:
            state = extract_state_dict(load_state_dict_file(weights), Path(weights))
            load_weights(model, state, Path(weights), text, smp_stages=False, hint="check --model-args")
        return _adapter(model, **wrapping)
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(
            f"model {text!r}: {folder} is not a folder written by save_pretrained (segrobust never downloads: "
            "fetch the files first, e.g. with 'hf download REPO --local-dir DIR', and pass hf:DIR)"
        )
    if weights is not None or model_args:
        raise ModelLoadError(f"model {text!r} is a complete model folder: weights and model arguments go with hf:CLASS")
    model = load_hf_pretrained(folder, wrapping["num_classes"])
    if wrapping["mean"] is None and wrapping["std"] is None:
        mean, std = hf_normalisation(folder) or (None, None)
        wrapping = {**wrapping, "mean": mean, "std": std}
    return _adapter(model, **wrapping)
