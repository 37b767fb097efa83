"""Build segmentation models from short specs and load them from checkpoints, safely.

A *spec* names an smp architecture and encoder, plus optional keyword
arguments: ``"unet:resnet18"``, ``"deeplabv3plus:resnet34"``,
``"unet:resnet18:encoder_depth=3:decoder_channels=32,16,8"``. Models are
always built with ``encoder_weights=None`` (nothing is downloaded).

Checkpoints are read with ``torch.load(weights_only=True)``, so loading one
never runs code from the file. :func:`load_model` understands

- a segrobust model checkpoint written by :func:`save_model` (it holds its spec),
- ``SPEC@PATH``: a plain ``state_dict`` (or a segrobust training checkpoint)
  loaded into the model that ``SPEC`` builds,
- a TorchScript archive (``torch.jit.save``),

and raises :class:`ModelLoadError` (a ``ValueError``) with a one-line
explanation for anything else.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from segrobust.fileio import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT",
    "ModelLoadError",
    "ModelSpec",
    "build_model",
    "load_model",
    "load_state_dict_file",
    "parse_model_spec",
    "save_model",
]

#: ``format`` tag of the checkpoints :func:`save_model` writes.
CHECKPOINT_FORMAT = "segrobust.model/1"

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".ts", ".jit", ".zip")


class ModelLoadError(ValueError):
    """A model spec or checkpoint that cannot be used; the message says why and what to do."""


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

    Raises :class:`ModelLoadError` naming the valid architectures for an unknown one.

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
            raise ModelLoadError(f"bad option {item!r} in model spec {spec!r}; expected key=value, e.g. encoder_depth=3")
        kwargs[key] = _parse_value(value)
    if "encoder_weights" in kwargs:
        raise ModelLoadError("model specs never take encoder_weights: models are built with encoder_weights=None")
    return ModelSpec(arch, encoder, kwargs)


def _check_encoder(encoder: str) -> None:
    from segmentation_models_pytorch.encoders import encoders

    if encoder in encoders or encoder.startswith("tu-"):
        return
    close = difflib.get_close_matches(encoder, list(encoders), n=4)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ModelLoadError(f"unknown smp encoder {encoder!r}{hint}; timm encoders are spelled 'tu-NAME'")


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
    stages beyond ``encoder_depth`` are dropped (see :func:`_drop_unused_stages`).
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
    """Write a checkpoint :func:`load_model` reads back without being told the architecture.

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
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise ModelLoadError(f"checkpoint {path} is a directory, expected a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip().splitlines()
        reason = f"not a file written by torch.save ({type(error).__name__}: {text[0] if text else ''})"
        if "Unsupported global" in str(error) or "This file can still be loaded" in str(error):
            reason = (
                "it holds pickled Python objects (e.g. a whole nn.Module); save model.state_dict() "
                "or a TorchScript model instead"
            )
        elif "Weights only load failed" in str(error):
            reason = "not a file written by torch.save (it cannot be unpickled)"
        raise ModelLoadError(f"cannot read checkpoint {path}: {reason}") from None


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a plain / segrobust / training / Lightning-style checkpoint."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise ModelLoadError(f"{path} holds no state dict (expected a mapping of parameter names to tensors)")


def _load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, spec: str) -> None:
    """Load ``state`` into ``model``; ignore only weights of stages dropped by :func:`_drop_unused_stages`."""
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DDP-saved weights
    expected = model.state_dict()
    unused = {k for k in state if k not in expected and any(f".layer{i}." in k for i in range(1, 5))}
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
        raise ModelLoadError(
            f"checkpoint {path} does not fit model {spec!r}: " + "; ".join(details)
            + " - check the spec and --num-classes"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(_CHECKPOINT_SUFFIXES)


def load_model(
    source: Union[str, os.PathLike, nn.Module],
    num_classes: Optional[int] = None,
    device: Union[str, torch.device] = "cpu",
    *,
    seed: Optional[int] = 0,
) -> nn.Module:
    """A segmentation model in eval mode from a spec, ``SPEC@PATH``, a checkpoint or a TorchScript file.

    Args:
        source: ``"unet:resnet18"`` (random weights), ``"unet:resnet18@weights.pt"``
            (a plain state dict for that architecture), a path to a checkpoint
            written by :func:`save_model`, or a TorchScript archive. An
            ``nn.Module`` is returned as is (moved to ``device``, in eval mode).
        num_classes: classes of a spec-built model (default 11, CamVid); for a
            checkpoint that records its class count, a different value is an error.
        device: where the model goes.
        seed: seed of the random weights of a spec-built model (the default 0
            makes ``load_model("unet:resnet18")`` the same model in every
            process, which resumed and distributed runs rely on); ``None`` uses
            torch's global generator.

    Examples:
        >>> load_model("unet:resnet18:encoder_depth=3:decoder_channels=16,8,8", num_classes=4).training
        False
        >>> load_model("missing.pt")
        Traceback (most recent call last):
        ...
        segrobust.models.ModelLoadError: checkpoint missing.pt does not exist
    """
    if isinstance(source, nn.Module):
        return source.to(device).eval()
    text = os.fspath(source)
    spec: Optional[str] = None
    if "@" in text and not Path(text).exists():
        spec, _, text = text.partition("@")
        parse_model_spec(spec)
    path = Path(text)
    if spec is None and not path.exists():
        if _looks_like_path(text):
            raise ModelLoadError(f"checkpoint {text} does not exist")
        return build_model(text, num_classes if num_classes is not None else 11, seed=seed).to(device)
    if not path.exists():
        raise ModelLoadError(f"checkpoint {text} does not exist")
    if path.is_file() and _is_torchscript(path):
        if spec is not None:
            raise ModelLoadError(f"{path} is a TorchScript model: pass the path alone, without 'SPEC@'")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, yet still the format users have
                return torch.jit.load(str(path), map_location=device).eval()
        except Exception as error:
            raise ModelLoadError(f"cannot load TorchScript model {path}: {str(error).splitlines()[0]}") from None
    obj = load_state_dict_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        stored = int(obj["num_classes"])
        if num_classes is not None and num_classes != stored:
            raise ModelLoadError(f"checkpoint {path} predicts {stored} classes, but {num_classes} were asked for")
        spec = spec or str(obj["spec"])
        num_classes = stored
    elif spec is None:
        raise ModelLoadError(
            f"{path} is a plain state dict without its architecture; pass it as SPEC@PATH, "
            f"e.g. 'unet:resnet18@{path}'"
        )
    state = _extract_state_dict(obj, path)
    if num_classes is None:
        head = state.get("segmentation_head.0.weight", state.get("module.segmentation_head.0.weight"))
        num_classes = int(head.shape[0]) if head is not None else 11
    model = build_model(spec, num_classes)
    _load_weights(model, state, path, spec)
    return model.to(device).eval()
