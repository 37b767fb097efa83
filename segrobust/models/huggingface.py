"""Hugging Face ``transformers`` models in segrobust: query-based outputs and loading without downloads.

Two things live here:

- the conversion of a query-based output (Mask2Former, MaskFormer, OneFormer:
  ``class_queries_logits`` ``(N, Q, K + 1)`` and ``masks_queries_logits``
  ``(N, Q, h, w)``) into per-pixel class log-probabilities
  ([query_semantic_log_probs][segrobust.models.huggingface.query_semantic_log_probs]),
  which [SegmentationModel][segrobust.models.SegmentationModel] applies by itself;
- building a ``transformers`` model from a config dict (random weights) or
  loading one from a local ``from_pretrained`` folder, as
  [load_model][segrobust.models.load_model] does for ``"hf:CLASS"`` and
  ``"hf:PATH"``. Nothing is downloaded (``local_files_only=True``) and no code
  from the folder runs (``trust_remote_code=False``; the class must be one
  ``transformers`` itself provides).

``transformers`` is an optional dependency (``pip install "segrobust[hf]"``);
only the loaders import it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from segrobust.fileio import UnreadableFileError, check_regular_file, read_bytes_limited
from segrobust.models.errors import ModelLoadError

__all__ = [
    "MAX_HF_PARAMETERS",
    "QUERY_CLASS_KEY",
    "QUERY_MASK_KEY",
    "QUERY_SCORE_FLOOR",
    "build_hf_model",
    "hf_normalisation",
    "load_hf_pretrained",
    "query_outputs",
    "query_semantic_log_probs",
]

#: Key of the per-query class logits ``(N, Q, K + 1)`` (the last class is "no object").
QUERY_CLASS_KEY = "class_queries_logits"
#: Key of the per-query mask logits ``(N, Q, h, w)``.
QUERY_MASK_KEY = "masks_queries_logits"
#: Added to every class's semantic score before normalising, so the log stays finite (and its gradient
#: bounded by ``1 / QUERY_SCORE_FLOOR``) where no query claims a pixel.
QUERY_SCORE_FLOOR = 1e-6
#: Largest model (in parameters) built from a config or a folder: a config file cannot ask for unbounded memory.
MAX_HF_PARAMETERS = 2_000_000_000
#: Largest ``preprocessor_config.json`` read.
_MAX_JSON_BYTES = 1 << 20


def query_outputs(output: Any) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(class_queries_logits, masks_queries_logits)`` of a query-based model's output, else ``None``.

    Examples:
        >>> query_outputs({"logits": torch.zeros(1, 2, 4, 4)}) is None
        True
        >>> [t.shape[1] for t in query_outputs({QUERY_CLASS_KEY: torch.zeros(1, 5, 3), QUERY_MASK_KEY: torch.zeros(1, 5, 4, 4)})]
        [5, 5]
    """

    def get(key: str) -> Any:
        return output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)

    classes, masks = get(QUERY_CLASS_KEY), get(QUERY_MASK_KEY)
    if isinstance(classes, torch.Tensor) and isinstance(masks, torch.Tensor):
        return classes, masks
    return None


def query_semantic_log_probs(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel class log-probabilities from query outputs, as the models' semantic inference scores them.

    ``S_k(x) = Σ_q softmax(class_logits_q)_k · sigmoid(mask_logits_q(x))`` over the
    ``K`` real classes (the no-object class dropped), the semantic score map of
    Mask2Former / MaskFormer / OneFormer; the result is
    ``log((S_k + f) / Σ_j (S_j + f))`` with ``f`` = `QUERY_SCORE_FLOOR`:
    its softmax is the normalised score map and its argmax the models'
    semantic prediction. Computed in float32, differentiably; masks are used
    at their own resolution (resize ``mask_logits`` first for another size).

    Args:
        class_logits: ``(N, Q, K + 1)``.
        mask_logits: ``(N, Q, H, W)``.

    Returns:
        ``(N, K, H, W)`` float32 log-probabilities.

    Examples:
        >>> classes = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])  # 2 queries, 2 classes + no-object
        >>> masks = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])         # query 0 left, query 1 right
        >>> query_semantic_log_probs(classes, masks).argmax(1).tolist()
        [[[0, 1]]]
    """
    if not isinstance(class_logits, torch.Tensor) or class_logits.dim() != 3 or class_logits.shape[-1] < 2:
        raise ValueError(f"{QUERY_CLASS_KEY} must be (N, Q, K + 1) with K >= 1, got {_shape(class_logits)}")
    if not isinstance(mask_logits, torch.Tensor) or mask_logits.dim() != 4:
        raise ValueError(f"{QUERY_MASK_KEY} must be (N, Q, H, W), got {_shape(mask_logits)}")
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            f"{QUERY_CLASS_KEY} {_shape(class_logits)} and {QUERY_MASK_KEY} {_shape(mask_logits)} "
            "must have the same batch size and number of queries"
        )
    class_probs = class_logits.float().softmax(-1)[..., :-1]
    scores = torch.einsum("nqk,nqhw->nkhw", class_probs, mask_logits.float().sigmoid()) + QUERY_SCORE_FLOOR
    return scores.log() - scores.sum(1, keepdim=True).log()


def _shape(value: Any) -> Any:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


# ----------------------------------------------------------------------------- loading
def _model_error(message: str) -> Exception:
    return ModelLoadError(message)


def _transformers(source: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise _model_error(f"model {source!r} needs the transformers package: pip install 'segrobust[hf]'") from None
    return transformers


def _model_class(transformers: Any, name: str, source: str) -> type:
    """The ``transformers`` model class ``name`` (only classes the package itself provides)."""
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    known = [n for n in dir(transformers) if n.endswith(("SemanticSegmentation", "UniversalSegmentation"))]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else f"; e.g. {', '.join(sorted(known)[:4])}"
    raise _model_error(f"model {source!r}: {name!r} is not a transformers model class{hint}")


def _config_options(config_class: type) -> set[str]:
    import inspect

    default = config_class().to_dict()
    return set(default) | set(inspect.signature(config_class.__init__).parameters) | {"num_labels"}


def _checked_config(config_class: type, options: Any, num_classes: Optional[int], source: str) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise _model_error(f"model {source!r}: model_args['config'] must be a mapping, got {type(options).__name__}")
    options = dict(options)
    unknown = sorted(set(options) - _config_options(config_class))
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(_config_options(config_class)), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _model_error(f"model {source!r}: {config_class.__name__} has no option {unknown[0]!r}{hint}")
    if num_classes is not None and options.setdefault("num_labels", num_classes) != num_classes:
        raise _model_error(
            f"model {source!r}: num_classes={num_classes} contradicts config num_labels={options['num_labels']}"
        )
    return options


def _instantiate(cls: type, config: Any, source: str) -> nn.Module:
    try:
        return cls(config)
    except Exception as error:  # transformers' own checks of the config (sizes that do not divide...)
        raise _model_error(f"model {source!r}: cannot build it from this config: {_first_line(error)}") from None


def _check_size(cls: type, config: Any, source: str) -> None:
    """Build the model on the meta device (no memory) and refuse one above `MAX_HF_PARAMETERS`."""
    with torch.device("meta"):
        probe = _instantiate(cls, config, source)
    count = sum(p.numel() for p in probe.parameters())
    if count > MAX_HF_PARAMETERS:
        raise _model_error(
            f"model {source!r} would have {count:,} parameters, over the {MAX_HF_PARAMETERS:,} segrobust builds"
        )


def build_hf_model(
    class_name: str, model_args: Mapping[str, Any], num_classes: Optional[int], seed: Optional[int]
) -> nn.Module:
    """A ``transformers`` model ``class_name`` with random weights, from ``model_args["config"]`` (a dict).

    ``num_classes`` becomes the config's ``num_labels`` (a different
    ``num_labels`` is an error); unknown config options are refused (a typo
    would otherwise be ignored). The weights come from ``seed`` (``None``: the
    global generator). Returned in eval mode.
    """
    source = f"hf:{class_name}"
    transformers = _transformers(source)
    cls = _model_class(transformers, class_name, source)
    extra = sorted(set(model_args) - {"config"})
    if extra:
        raise _model_error(f"model {source!r}: model_args takes only 'config' (a dict), got {extra}")
    options = _checked_config(cls.config_class, model_args.get("config", {}), num_classes, source)
    try:
        config = cls.config_class(**options)
    except Exception as error:  # a value the config class refuses
        raise _model_error(f"model {source!r}: bad config: {_first_line(error)}") from None
    _check_size(cls, config, source)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = _instantiate(cls, config, source)
    return model.eval()


def _check_folder(folder: Path, source: str) -> None:
    """Every file transformers may open in ``folder`` is a regular file (a FIFO would block forever)."""
    try:
        for entry in folder.iterdir():
            if not entry.is_dir():
                check_regular_file(entry, f"model {source!r}: file")
    except UnreadableFileError as error:
        raise _model_error(str(error)) from None
    config = folder / "config.json"
    if not config.exists():
        raise _model_error(f"model {source!r}: {folder} has no config.json (a folder written by save_pretrained)")


def load_hf_pretrained(folder: Path, num_classes: Optional[int]) -> nn.Module:
    """The model saved in the local ``from_pretrained`` folder, in float32 and eval mode.

    The class is the first of the config's ``architectures`` and must be one
    ``transformers`` provides: no code from the folder runs
    (``trust_remote_code=False``), nothing is downloaded
    (``local_files_only=True``), weights are read with ``weights_only=True``
    (safetensors files carry no code). A model stored in half precision is
    cast to float32 (exactly). ``num_classes``, when given, must match the
    config's ``num_labels``.
    """
    source = f"hf:{folder}"
    transformers = _transformers(source)
    _check_folder(folder, source)
    kwargs = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), **kwargs)
    except Exception as error:  # a damaged or foreign config.json
        raise _model_error(f"model {source!r}: cannot read {folder / 'config.json'}: {_first_line(error)}") from None
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        raise _model_error(f"model {source!r}: config.json names no architectures; use hf:CLASS with its config")
    cls = _model_class(transformers, str(architectures[0]), source)
    if num_classes is not None and getattr(config, "num_labels", num_classes) != num_classes:
        raise _model_error(f"model {source!r} predicts {config.num_labels} classes, but {num_classes} were asked for")
    _check_size(cls, config, source)
    try:
        model = cls.from_pretrained(str(folder), config=config, weights_only=True, **kwargs)
    except Exception as error:  # missing or damaged weights
        raise _model_error(f"model {source!r}: cannot load its weights: {_first_line(error)}") from None
    return model.float().eval()


def hf_normalisation(folder: Path) -> Optional[tuple[list[float], list[float]]]:
    """``(image_mean, image_std)`` from the folder's ``preprocessor_config.json``, when it normalises ``[0, 1]`` images.

    ``None`` when the file is absent or the processor does not rescale to
    ``[0, 1]`` and normalise (then pass ``mean``/``std`` yourself).
    """
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return None
    try:
        settings = json.loads(read_bytes_limited(path, "preprocessor_config.json", _MAX_JSON_BYTES))
    except (UnreadableFileError, ValueError) as error:
        raise _model_error(f"model 'hf:{folder}': cannot read {path}: {_first_line(error)}") from None
    if not isinstance(settings, Mapping) or not settings.get("do_normalize", True):
        return None
    if not settings.get("do_rescale", True) or abs(float(settings.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        return None
    mean, std = settings.get("image_mean"), settings.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
        return None
    return [float(v) for v in mean], [float(v) for v in std]


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
