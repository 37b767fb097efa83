"""The tables the benchmark and the command line read: attacks, rain conditions, defences, training recipes.

Each table maps a short key (what users type after ``--attacks``,
``--rain``, ``--defense`` or ``--recipe``) to an entry. Adding an attack,
defence or recipe is one :func:`register_attack` / :func:`register_defense`
/ :func:`register_recipe` call (or one line in the tables below). Entries
import their implementation lazily, so an entry whose module does not exist
yet stays listed and fails with a clear "not available" message.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from torch import nn

from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT

__all__ = [
    "ATTACKS",
    "DEFENSES",
    "RECIPES",
    "AttackEntry",
    "DefenseEntry",
    "RecipeEntry",
    "UnavailableError",
    "available_attacks",
    "available_rain_presets",
    "register_attack",
    "register_defense",
    "register_recipe",
    "resolve_attacks",
    "resolve_rain_presets",
]


class UnavailableError(ValueError):
    """A registered entry whose implementation is not in this installation (yet)."""


def _import_attr(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise UnavailableError(f"{module}.{name} is not available in this version of segrobust") from None


def _has_attr(module: str, name: str) -> bool:
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


# ----------------------------------------------------------------------------- attacks
@dataclass(frozen=True)
class AttackEntry:
    """How to build one attack for the benchmark.

    ``build(model, eps=..., alpha=..., steps=..., random_start=..., ignore_index=...,
    image_size=(H, W), **kwargs)`` returns a callable ``attack(images, masks) ->
    adversarial images``. ``positive`` marks an attack that *helps* the model
    (AMA): it is reported in its own row and never enters the worst case.
    ``in_worst_case=False`` keeps an attack out of the per-image worst case
    (RainAttack: its rain is not inside the L∞ ball the other attacks share).
    ``builder(cls, model, **kwargs)`` adapts other constructor signatures;
    ``accepts_depth`` attacks are called with ``depth=`` when the data has one.
    """

    key: str
    name: str
    module: str
    attr: str
    positive: bool = False
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    in_worst_case: bool = True
    builder: Optional[Callable[..., Any]] = None
    accepts_depth: bool = False

    @property
    def available(self) -> bool:
        return _has_attr(self.module, self.attr)

    @property
    def display_name(self) -> str:
        return f"{self.name} (positive)" if self.positive else self.name

    def build(self, model: nn.Module, *, image_size: Optional[tuple[int, int]] = None, **kwargs: Any) -> Callable[..., Any]:
        cls = _import_attr(self.module, self.attr)
        kwargs = {**self.defaults, **kwargs}
        if self.builder is not None:
            return self.builder(cls, model, image_size=image_size, **kwargs)
        return cls(model, **kwargs)


#: Attacks in report order. RainAttack is listed already: it is used as soon as
#: ``segrobust.attacks.RainAttack`` exists.
ATTACKS: dict[str, AttackEntry] = {}


def register_attack(
    key: str,
    name: str,
    module: str,
    attr: str,
    *,
    positive: bool = False,
    description: str = "",
    defaults: Optional[Mapping[str, Any]] = None,
    in_worst_case: Optional[bool] = None,
    builder: Optional[Callable[..., Any]] = None,
    accepts_depth: bool = False,
) -> AttackEntry:
    """Add (or replace) an attack in :data:`ATTACKS`; its class is imported when first built.

    The class must take ``(model, eps=, alpha=, steps=, random_start=, ignore_index=)``
    like the attacks in :mod:`segrobust.attacks`; ``defaults`` adds keyword arguments.

    Examples:
        >>> entry = register_attack("naa2", "NAA-copy", "segrobust.attacks", "NAA")
        >>> entry.available
        True
        >>> del ATTACKS["naa2"]
    """
    if not key or not key.replace("_", "").isalnum() or key != key.lower():
        raise ValueError(f"attack key must be lower-case letters, digits and '_', got {key!r}")
    entry = AttackEntry(
        key, name, module, attr, positive, description, dict(defaults or {}),
        (not positive) if in_worst_case is None else bool(in_worst_case), builder, accepts_depth,
    )
    ATTACKS[key] = entry
    return entry


def _build_rain_attack(
    cls: Any, model: nn.Module, *, eps: float, alpha: Optional[float], steps: int, random_start: bool,
    ignore_index: int, image_size: Optional[tuple[int, int]] = None, ranges: Any = "medium",
    reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT, **kwargs: Any,
) -> Any:
    """RainAttack on a preset's ranges (streak lengths scaled to the image height) plus an L∞ ``eps`` perturbation."""
    if isinstance(ranges, str) and image_size is not None:
        from segrobust.benchmark.core import _rain_ranges

        ranges = _rain_ranges(ranges, image_size[0], reference_height)
    return cls(
        model, ranges=ranges, steps=steps, pixel_eps=eps, pixel_alpha=alpha, random_start=random_start,
        ignore_index=ignore_index, **kwargs,
    )


for _key, _name, _attr, _positive, _description in (
    ("naa", "NAA", "NAA", False, "PGD ascending the masked pixel cross-entropy (PEARL's Negative Adversarial Attack)"),
    ("segpgd", "SegPGD", "SegPGD", False, "PGD re-weighting correct and wrong pixels over the steps (Gu et al. 2022)"),
    ("cospgd", "CosPGD", "CosPGD", False, "PGD weighting pixels by softmax/label cosine (Agnihotri & Keuper 2024)"),
    ("eroseg", "EroSeg", "EroSeg", False, "PGD eroding confident regions from their weak points (Song et al. 2026)"),
    ("ama", "AMA", "AMA", True, "PGD descending the loss: the image the model segments best (PEARL's Auxiliary Mirror Attack)"),
):
    register_attack(_key, _name, "segrobust.attacks", _attr, positive=_positive, description=_description)
register_attack(
    "rain_attack", "RainAttack", "segrobust.attacks", "RainAttack", in_worst_case=False, builder=_build_rain_attack,
    accepts_depth=True, description="adversarial 'medium' rain parameters plus an L∞ ε perturbation (the PEARL threat)",
)


def available_attacks() -> list[str]:
    """Keys of the attacks whose implementation exists, in report order.

    Examples:
        >>> {"naa", "segpgd", "cospgd", "eroseg", "ama"} <= set(available_attacks())
        True
    """
    return [key for key, entry in ATTACKS.items() if entry.available]


def resolve_attacks(names: Union[str, list[str], tuple[str, ...], None]) -> list[str]:
    """Attack keys from ``"all"``, ``"none"``, a comma-separated string or a list (case-insensitive).

    Examples:
        >>> resolve_attacks("NAA, segpgd")
        ['naa', 'segpgd']
        >>> resolve_attacks("pgd")
        Traceback (most recent call last):
        ...
        ValueError: unknown attack 'pgd'; expected 'all', 'none' or a comma-separated list of: naa, segpgd, cospgd, eroseg, ama, rain_attack
    """
    known = available_attacks()
    if names is None:
        return known
    if isinstance(names, str):
        names = [part for part in names.split(",")]
    wanted = [str(name).strip().lower().replace("-", "_") for name in names if str(name).strip()]
    if wanted == ["all"]:
        return known
    if wanted in (["none"], []):
        return []
    for name in wanted:
        if name in ATTACKS and name not in known:
            raise UnavailableError(
                f"attack {name!r} is not available in this version of segrobust; available: {', '.join(known)}"
            )
        if name not in ATTACKS:
            raise ValueError(
                f"unknown attack {name!r}; expected 'all', 'none' or a comma-separated list of: {', '.join(known)}"
            )
    return [key for key in known if key in wanted]  # report order, no duplicates


# ----------------------------------------------------------------------------- rain
def available_rain_presets() -> list[str]:
    """Names of the rain presets (``segrobust.rain.RAIN_PRESETS``), or ``[]`` without the rain module."""
    try:
        from segrobust.rain import RAIN_PRESETS
    except ImportError:
        return []
    return list(RAIN_PRESETS)


def resolve_rain_presets(names: Union[str, list[str], tuple[str, ...], None]) -> list[str]:
    """Preset names from ``"all"``, ``"none"``, a comma-separated string or a list.

    Examples:
        >>> resolve_rain_presets("heavy,light")
        ['light', 'heavy']
    """
    known = available_rain_presets()
    if names is None:
        return known
    if isinstance(names, str):
        names = names.split(",")
    wanted = [str(name).strip().lower().replace("-", "_") for name in names if str(name).strip()]
    if wanted == ["all"]:
        return known
    if wanted in (["none"], []):
        return []
    for name in wanted:
        if name not in known:
            raise ValueError(f"unknown rain preset {name!r}; expected 'all', 'none' or some of: {', '.join(known)}")
    return [name for name in known if name in wanted]


# ----------------------------------------------------------------------------- defences
@dataclass(frozen=True)
class DefenseEntry:
    """How ``--defense KIND:PATH`` turns the model into the defended one.

    ``load(model, path, num_classes=..., device=...)`` returns the defended
    model (a plain segmentation model: images in ``[0, 1]`` to logits).
    """

    key: str
    load: Callable[..., nn.Module]
    description: str = ""


DEFENSES: dict[str, DefenseEntry] = {}


def register_defense(key: str, load: Callable[..., nn.Module], description: str = "") -> DefenseEntry:
    """Add (or replace) a ``--defense`` kind.

    Examples:
        >>> entry = register_defense("identity", lambda model, path, **kw: model)
        >>> sorted(DEFENSES)[:2]
        ['depth', 'identity']
        >>> del DEFENSES["identity"]
    """
    entry = DefenseEntry(key, load, description)
    DEFENSES[key] = entry
    return entry


def _load_depth_defense(model: nn.Module, path: Union[str, os.PathLike], **_: Any) -> nn.Module:
    """A DepthMultiTask checkpoint: its segmentation weights (``model.*``) go into ``model``.

    At test time the depth branch is dropped (SGDepth), so only the shared
    encoder, the segmentation decoder and head are loaded; the checkpoint may
    be a segrobust training checkpoint, a plain ``state_dict`` of a
    ``DepthMultiTask`` or a segrobust model checkpoint of one.
    """
    _import_attr("segrobust.defenses", "DepthMultiTask")  # a clear error where the module is missing
    from pathlib import Path

    from segrobust.models import (
        ModelLoadError,
        _extract_state_dict,
        _load_weights,
        load_state_dict_file,
    )

    state = _extract_state_dict(load_state_dict_file(path), Path(path))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    inner = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not inner:
        raise ModelLoadError(
            f"{path} is not a DepthMultiTask checkpoint (no 'model.*' weights; found e.g. {next(iter(state), 'nothing')})"
        )
    _load_weights(model, inner, Path(path), getattr(model, "_segrobust_spec", type(model).__name__))
    return model.eval()


def _load_pearl_defense(model: nn.Module, path: Union[str, os.PathLike], **kwargs: Any) -> nn.Module:
    """PEARL: a derain network in front of the model (``f ∘ D``), loaded by ``segrobust.defenses.pearl``."""
    loader = _import_attr("segrobust.defenses.pearl_training", "load_pearl_defense")
    return loader(model, path, **kwargs)


register_defense("depth", _load_depth_defense, "SGDepth multi-task model (segmentation weights of a DepthMultiTask checkpoint)")
register_defense("pearl", _load_pearl_defense, "PEARL derain preprocessor D in front of the model (f ∘ D)")


# ----------------------------------------------------------------------------- training recipes
# The recipes moved to segrobust.training (one protocol, typed configs); these names stay importable here.
from segrobust.training.recipes import RECIPES, register_recipe  # noqa: E402
from segrobust.training.recipes import Recipe as RecipeEntry  # noqa: E402
