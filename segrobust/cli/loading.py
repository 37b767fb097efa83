"""What a command loads from its options: the device, the data set, the model (with its defence)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional

from segrobust.cli.errors import UsageError, check_exists, check_file, is_expected, one_line

__all__ = [
    "check_defense",
    "dataset",
    "ensure_default_model",
    "load_benchmark_model",
    "model_options",
    "resolve_device",
    "say",
]


def say(message: str) -> None:
    """A line on stderr, from the main process only."""
    from segrobust.distributed import is_main_process

    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def resolve_device(name: str) -> Any:
    """``--device``: ``auto`` is the local CUDA device when there is one, else the CPU."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def dataset(options: argparse.Namespace, split: str, synthetic_images: int, size: tuple[int, int]) -> tuple[Any, str]:
    """``(data set, name)`` of the data options; the generated one has ``synthetic_images`` images of ``size``."""
    from torch.utils.data import Subset

    from segrobust.datasets import build_dataset

    root = options.data_root
    if options.dataset == "synthetic":
        if root is not None:
            raise UsageError("--data-root is not used with --dataset synthetic (it is generated)")
        n = options.num_images or synthetic_images
        return build_dataset("synthetic", split=split, size=options.size or size, n=n), f"SyntheticStreets {split}"
    if root is None and options.dataset == "folder":
        raise UsageError("--dataset folder needs --data-root PATH (a folder with images/ and masks/)")
    if root is None and options.dataset == "camvid" and not os.environ.get("SEGROBUST_CAMVID"):
        raise UsageError("--dataset camvid needs --data-root PATH (or the SEGROBUST_CAMVID environment variable)")
    if root is not None:
        check_exists("--data-root", root)
    try:
        data = build_dataset(options.dataset, root=root, split=split, size=options.size)
    except Exception as error:
        if not (is_expected(error) or isinstance(error, RuntimeError)):  # RuntimeError: e.g. torch reading a bad cache
            raise
        where = f" at {root}" if root is not None else ""
        raise UsageError(f"--dataset {options.dataset}: cannot read the data{where}: {one_line(error)}") from None
    if len(data) == 0:
        raise UsageError(f"no images found in {root} ({split} split)")
    label = {"camvid": "CamVid", "folder": f"folder {root}"}.get(options.dataset, options.dataset)
    if options.num_images and options.num_images < len(data):
        data = Subset(data, range(options.num_images))
    return data, f"{label} {split}"


def ensure_default_model(progress: bool) -> None:
    """Train and cache the default model once, before the process group starts (local rank 0 only)."""
    from segrobust.benchmark.defaults import default_model_path, train_default_model

    path = default_model_path()
    if path.exists():
        return
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(
            f"segrobust: training the default model once (about a minute; cached as {path}) ...",
            file=sys.stderr,
            flush=True,
        )
        train_default_model(path, progress=progress)
    else:
        deadline = time.time() + 3600
        while not path.exists() and time.time() < deadline:
            time.sleep(2)


def check_defense(text: Optional[str]) -> tuple[str, str]:
    """``--defense KIND:PATH`` checked: a known kind and a regular file."""
    from segrobust.benchmark.registry import DEFENSES

    if not text:
        return "", ""
    kind, sep, path = text.partition(":")
    if not sep or not path:
        raise UsageError(f"--defense must be KIND:PATH (e.g. depth:depth.pt), got {text!r}")
    if kind not in DEFENSES:
        raise UsageError(f"unknown defence {kind!r}; expected one of {', '.join(sorted(DEFENSES))}")
    check_file(f"--defense {kind}: checkpoint", path)
    return kind, path


def model_options(options: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of [`segrobust.models.load_model`][segrobust.models.load_model] the model flags give."""
    if (options.mean is None) != (options.std is None):
        raise UsageError("--mean and --std go together (one value per image channel each)")
    if options.mean is not None and len(options.mean) != len(options.std):
        raise UsageError(
            f"--mean has {len(options.mean)} values but --std has {len(options.std)}; give one per channel"
        )
    if options.weights is not None:
        check_file("--weights", options.weights)
    return {
        "model_args": options.model_args,
        "weights": options.weights,
        "mean": options.mean,
        "std": options.std,
        "allow_torchscript": options.allow_torchscript,
        **({"output_key": options.output_key} if getattr(options, "output_key", None) is not None else {}),
    }


def _model_path(model: str) -> Optional[str]:
    """The file part of ``--model`` (``PATH`` or ``SPEC@PATH``) when it names an existing path."""
    for candidate in (model, model.rpartition("@")[2]):
        if os.path.lexists(candidate):
            return candidate
    return None


def load_benchmark_model(options: argparse.Namespace, device: Any, sample: Any = None) -> tuple[Any, str]:
    """``(model, name)`` of the model flags, as the benchmark runs it.

    Innermost first: the built-in default or ``--model`` (with ``--output-key``,
    ``--mean``/``--std``), ``--slide``, ``--defense``, ``--tta``,
    ``--channels-last``, ``--compile`` (warmed up on ``sample``, an image ``(C, H, W)``).
    """
    segmenter, name = _segmenter(options, device)
    model = segmenter
    if options.slide:
        model = _sliding(segmenter, options.slide)
        name += f", sliding window {options.slide}"
    if options.defense:
        model, name = _defended(segmenter, model, name, options, device)
    if options.tta:
        model = _augmented(model, options.tta, not options.no_tta_flip)
        name += f", multi-scale {','.join(f'{s:g}' for s in options.tta)}{'' if options.no_tta_flip else ' + flip'}"
    if options.channels_last:
        model = _channels_last(model)
    if options.compile:
        model = _compiled(model, sample, options.amp, device)
    return model, name


def _segmenter(options: argparse.Namespace, device: Any) -> tuple[Any, str]:
    """The built-in default model or ``--model``, with ``--output-key`` and ``--mean``/``--std``."""
    from segrobust.benchmark.defaults import DEFAULT_MODEL_SPEC, load_default_model
    from segrobust.models import ModelLoadError, SegmentationModel, load_model

    load_options = model_options(options)
    if options.model is None:
        if options.model_args or options.weights:
            raise UsageError("--model-args and --weights need --model (a spec, module:callable or hf:CLASS)")
        model = load_default_model(device, progress=not options.no_progress)
        if options.mean is not None or options.output_key is not None:
            wrapping = {"mean": options.mean, "std": options.std, "output_key": options.output_key}
            try:
                model = SegmentationModel(model, **wrapping).to(device)
            except (TypeError, ValueError) as error:
                raise UsageError(one_line(error)) from None
        return model, f"default ({DEFAULT_MODEL_SPEC}, trained on SyntheticStreets)"
    path = _model_path(options.model)
    if path is not None:  # a looping link, a FIFO or a folder says so, not "does not exist"
        check_file("--model", path)
    try:
        model = load_model(
            options.model, num_classes=options.num_classes, device=device, seed=options.seed, **load_options
        )
    except ModelLoadError as error:
        raise UsageError(f"--model: {error}") from None
    return model, options.model


def _sliding(model: Any, text: str) -> Any:
    from segrobust.cli.arguments import window_pairs
    from segrobust.models import SlidingWindow

    return SlidingWindow(model, *window_pairs(text))


def _augmented(model: Any, scales: Any, flip: bool) -> Any:
    from segrobust.models import MultiScaleFlip

    return MultiScaleFlip(model, tuple(scales), flip=flip)


def _channels_last(model: Any) -> Any:
    """Weights converted once (the CLI's own model), every input converted by the wrapper."""
    import torch

    from segrobust.models import ChannelsLast

    return ChannelsLast(model.to(memory_format=torch.channels_last))


def _compiled(model: Any, sample: Any, amp: Optional[str], device: Any) -> Any:
    """``torch.compile(model)``, called once on ``sample`` so that a compiler failure is one line, now."""
    import torch
    from torch._dynamo.exc import TorchDynamoException

    from segrobust.validation import check_amp

    hint = "run without --compile (docs/benchmark.md, 'Precision and speed')"
    try:
        compiled = torch.compile(model)
    except RuntimeError as error:  # e.g. a Python version dynamo does not support
        raise UsageError(f"--compile: torch.compile is not available here: {one_line(error)}; {hint}") from None
    if sample is None:
        return compiled
    say("segrobust: compiling the model (torch.compile; the first calls take a while) ...")
    started = time.perf_counter()
    dtype = check_amp(amp, "--amp")
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            compiled(sample.unsqueeze(0).to(device))
    except TorchDynamoException as error:
        cause = getattr(error, "inner_exception", None) or error  # a backend's failure: say what the backend said
        raise UsageError(f"--compile: torch.compile could not compile the model: {one_line(cause)}; {hint}") from None
    except Exception:  # not the compiler's failure: the benchmark's own model check reports it in its words
        return compiled
    say(f"segrobust: compiled in {time.perf_counter() - started:.1f} s")
    return compiled


def _replace_module(root: Any, old: Any, new: Any) -> Any:
    """``root`` with every occurrence of submodule ``old`` replaced by ``new`` (``new`` if ``root`` is ``old``)."""
    if root is old:
        return new
    places = [(parent, name) for parent in root.modules() for name, child in parent.named_children() if child is old]
    for parent, name in places:
        setattr(parent, name, new)
    return root


def _defended(segmenter: Any, model: Any, name: str, options: argparse.Namespace, device: Any) -> tuple[Any, str]:
    """The defence loaded around ``segmenter``; ``model`` (the segmenter as evaluated, e.g. in windows) put in its place."""
    from segrobust.benchmark.registry import DEFENSES

    kind, path = check_defense(options.defense)
    try:
        defended = DEFENSES[kind].load(segmenter, path, num_classes=options.num_classes, device=device)
    except Exception as error:  # hostile, truncated or mismatched files end here, whatever they raise
        if isinstance(error, MemoryError):
            raise
        reason = one_line(error)
        raise UsageError(
            f"--defense {kind}: {reason if str(path) in reason else f'cannot load {path}: {reason}'}"
        ) from None
    return _replace_module(defended, segmenter, model).to(device).eval(), f"{name} + {kind} defence ({path})"
