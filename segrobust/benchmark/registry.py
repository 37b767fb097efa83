"""The tables the benchmark and the command line read: attacks, rain conditions, defences.

Each table is a plain dict from a short key (what users type after
``--attacks`` or ``--defense``) to an entry holding the class or function
itself. Adding an attack is one [`register_attack`][segrobust.benchmark.register_attack]
call; adding a defence is one entry of `DEFENSES` (a
[`DefenseEntry`][segrobust.benchmark.registry.DefenseEntry]).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from torch import nn

from segrobust import attacks as _attacks
from segrobust.rain import RAIN_PRESETS
from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT

__all__ = [
    "ATTACKS",
    "DEFENSES",
    "AttackEntry",
    "DefenseEntry",
    "register_attack",
    "resolve_attacks",
    "resolve_rain_presets",
]


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
    ``builder(attack_class, model, **kwargs)`` adapts other constructor
    signatures; ``accepts_depth`` attacks are called with ``depth=`` when the data has one.
    ``reliable`` marks the reliable ensemble: it runs ``reliable_steps`` iterations,
    is called with ``return_stats=True`` and reports one row per member loss.
    ``default=False`` keeps an attack out of ``"all"`` (it runs only when named).
    """

    key: str
    name: str
    attack_class: Callable[..., Any]
    positive: bool = False
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    in_worst_case: bool = True
    builder: Optional[Callable[..., Any]] = None
    accepts_depth: bool = False
    reliable: bool = False
    default: bool = True

    @property
    def display_name(self) -> str:
        return f"{self.name} (positive)" if self.positive else self.name

    def build(
        self, model: nn.Module, *, image_size: Optional[tuple[int, int]] = None, **kwargs: Any
    ) -> Callable[..., Any]:
        kwargs = {**self.defaults, **kwargs}
        if self.builder is not None:
            return self.builder(self.attack_class, model, image_size=image_size, **kwargs)
        return self.attack_class(model, **kwargs)


#: Attacks in report order.
ATTACKS: dict[str, AttackEntry] = {}


def register_attack(
    key: str,
    name: str,
    attack_class: Callable[..., Any],
    *,
    positive: bool = False,
    description: str = "",
    defaults: Optional[Mapping[str, Any]] = None,
    in_worst_case: Optional[bool] = None,
    builder: Optional[Callable[..., Any]] = None,
    accepts_depth: bool = False,
    reliable: bool = False,
    default: bool = True,
) -> AttackEntry:
    """Add (or replace) an attack in `ATTACKS`.

    ``attack_class`` must take ``(model, eps=, alpha=, steps=, random_start=, ignore_index=)``
    like the attacks in `segrobust.attacks`; ``defaults`` adds keyword arguments.

    Examples:
        >>> from segrobust.attacks import NAA
        >>> register_attack("naa2", "NAA-copy", NAA).display_name
        'NAA-copy'
        >>> del ATTACKS["naa2"]
    """
    if not key or not key.replace("_", "").isalnum() or key != key.lower():
        raise ValueError(f"attack key must be lower-case letters, digits and '_', got {key!r}")
    if not callable(attack_class):
        raise TypeError(f"attack_class must be a class or callable, got {type(attack_class).__name__}")
    entry = AttackEntry(
        key,
        name,
        attack_class,
        positive,
        description,
        dict(defaults or {}),
        (not positive) if in_worst_case is None else bool(in_worst_case),
        builder,
        accepts_depth,
        bool(reliable),
        bool(default),
    )
    ATTACKS[key] = entry
    return entry


def _build_rain_attack(
    attack_class: Any,
    model: nn.Module,
    *,
    eps: float,
    alpha: Optional[float],
    steps: int,
    random_start: bool,
    ignore_index: int,
    image_size: Optional[tuple[int, int]] = None,
    ranges: Any = "medium",
    reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT,
    **kwargs: Any,
) -> Any:
    """RainAttack on a preset's ranges (streak lengths scaled to the image height) plus an L∞ ``eps`` perturbation."""
    if isinstance(ranges, str) and image_size is not None:
        from segrobust.rain import scale_rain_ranges

        ranges = scale_rain_ranges(ranges, image_size[0], reference_height)
    return attack_class(
        model,
        ranges=ranges,
        steps=steps,
        pixel_eps=eps,
        pixel_alpha=alpha,
        random_start=random_start,
        ignore_index=ignore_index,
        **kwargs,
    )


def _build_reliable(
    attack_class: Any,
    model: nn.Module,
    *,
    eps: float,
    alpha: Optional[float],
    steps: int,
    random_start: bool,
    ignore_index: int,
    image_size: Optional[tuple[int, int]] = None,
    **kwargs: Any,
) -> Any:
    """The ensemble chooses its own step sizes (APGD), so ``alpha`` does not apply."""
    return attack_class(model, eps=eps, steps=steps, random_start=random_start, ignore_index=ignore_index, **kwargs)


register_attack(
    "reliable",
    "Reliable ensemble",
    _attacks.ReliableEnsemble,
    builder=_build_reliable,
    reliable=True,
    default=False,
    description="APGD with masked CE, balanced masked CE and JS losses, worst case per image (SEA, Croce et al. 2024)",
)
for _key, _name, _class, _positive, _description in (
    (
        "naa",
        "NAA",
        _attacks.NAA,
        False,
        "PGD ascending the masked pixel cross-entropy (PEARL's Negative Adversarial Attack)",
    ),
    (
        "segpgd",
        "SegPGD",
        _attacks.SegPGD,
        False,
        "PGD re-weighting correct and wrong pixels over the steps (Gu et al. 2022)",
    ),
    (
        "cospgd",
        "CosPGD",
        _attacks.CosPGD,
        False,
        "PGD weighting pixels by softmax/label cosine (Agnihotri & Keuper 2024)",
    ),
    (
        "eroseg",
        "EroSeg",
        _attacks.EroSeg,
        False,
        "PGD eroding confident regions from their weak points (Song et al. 2026)",
    ),
    (
        "ama",
        "AMA",
        _attacks.AMA,
        True,
        "PGD descending the loss: the image the model segments best (PEARL's Auxiliary Mirror Attack)",
    ),
):
    register_attack(_key, _name, _class, positive=_positive, description=_description)
register_attack(
    "rain_attack",
    "RainAttack",
    _attacks.RainAttack,
    in_worst_case=False,
    builder=_build_rain_attack,
    accepts_depth=True,
    description="adversarial 'medium' rain parameters plus an L∞ ε perturbation (the PEARL threat)",
)


def _selection(names: Union[str, list[str], tuple[str, ...], None]) -> Optional[list[str]]:
    """Normalised names, ``None`` for "all"; ``[]`` for "none"."""
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    wanted = [str(name).strip().lower().replace("-", "_") for name in names if str(name).strip()]
    if wanted == ["all"]:
        return None
    return [] if wanted in (["none"], []) else wanted


def resolve_attacks(names: Union[str, list[str], tuple[str, ...], None]) -> list[str]:
    """Attack keys from ``"all"``, ``"none"``, a comma-separated string or a list (case-insensitive).

    ``"all"`` is every attack registered with ``default=True`` (it may be combined with
    others: ``"reliable,all"``); keys come back in report order.

    Examples:
        >>> resolve_attacks("NAA, segpgd")
        ['naa', 'segpgd']
        >>> resolve_attacks("pgd")
        Traceback (most recent call last):
        ...
        ValueError: unknown attack 'pgd'; expected 'all', 'none' or a comma-separated list of: reliable, naa, segpgd, cospgd, eroseg, ama, rain_attack
    """
    defaults = [key for key, entry in ATTACKS.items() if entry.default]
    wanted = _selection(names)
    if wanted is None:
        return defaults
    if "all" in wanted:  # "reliable,all": the default set plus the attacks named
        wanted = [name for name in wanted if name != "all"] + defaults
    for name in wanted:
        if name not in ATTACKS:
            raise ValueError(
                f"unknown attack {name!r}; expected 'all', 'none' or a comma-separated list of: {', '.join(ATTACKS)}"
            )
    return [key for key in ATTACKS if key in wanted]  # report order, no duplicates


# ----------------------------------------------------------------------------- rain
def resolve_rain_presets(names: Union[str, list[str], tuple[str, ...], None]) -> list[str]:
    """Preset names (keys of ``segrobust.rain.RAIN_PRESETS``) from ``"all"``, ``"none"``, a comma-separated string or a list.

    Examples:
        >>> resolve_rain_presets("heavy,light")
        ['light', 'heavy']
    """
    wanted = _selection(names)
    if wanted is None:
        return list(RAIN_PRESETS)
    for name in wanted:
        if name not in RAIN_PRESETS:
            raise ValueError(
                f"unknown rain preset {name!r}; expected 'all', 'none' or some of: {', '.join(RAIN_PRESETS)}"
            )
    return [name for name in RAIN_PRESETS if name in wanted]


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


def _load_depth_defense(model: nn.Module, path: Union[str, os.PathLike], **_: Any) -> nn.Module:
    """A DepthMultiTask checkpoint: its segmentation weights (``model.*``) go into ``model``.

    At test time the depth branch is dropped (SGDepth), so only the shared
    encoder, the segmentation decoder and head are loaded; the checkpoint may
    be a segrobust training checkpoint, a plain ``state_dict`` of a
    ``DepthMultiTask`` or a segrobust model checkpoint of one.
    """
    from pathlib import Path

    from segrobust.models import (
        ModelLoadError,
        extract_state_dict,
        load_state_dict_file,
        load_weights,
    )

    state = extract_state_dict(load_state_dict_file(path), Path(path))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    inner = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if not inner:
        raise ModelLoadError(
            f"{path} is not a DepthMultiTask checkpoint (no 'model.*' weights; found e.g. {next(iter(state), 'nothing')})"
        )
    load_weights(model, inner, Path(path), getattr(model, "_segrobust_spec", type(model).__name__))
    return model.eval()


def _load_pearl_defense(model: nn.Module, path: Union[str, os.PathLike], **kwargs: Any) -> nn.Module:
    """PEARL: a derain network in front of the model (``f ∘ D``), loaded by ``segrobust.defenses.pearl_training``."""
    from segrobust.defenses.pearl_training import (
        load_pearl_defense,  # imports segrobust.training: only when used
    )

    return load_pearl_defense(model, path, **kwargs)


#: ``--defense KIND:PATH`` kinds; add one with ``DEFENSES[key] = DefenseEntry(key, load, description)``.
DEFENSES: dict[str, DefenseEntry] = {
    "depth": DefenseEntry(
        "depth", _load_depth_defense, "SGDepth multi-task model (segmentation weights of a DepthMultiTask checkpoint)"
    ),
    "pearl": DefenseEntry("pearl", _load_pearl_defense, "PEARL derain preprocessor D in front of the model (f ∘ D)"),
}
