"""The tables the benchmark and the command line read: attacks, rain conditions, defences.

Each table is a plain dict from a short key (what users type after
``--attacks`` or ``--defense``) to an entry holding the class or function
itself. The attacks' table is [`segrobust.attacks.registry.ATTACKS`][segrobust.attacks.registry.ATTACKS],
re-exported here; adding an attack is one line
(``ATTACKS["mine"] = AttackEntry(MyAttack, "Mine")``), adding a defence one entry of `DEFENSES` (a
[`DefenseEntry`][segrobust.benchmark.registry.DefenseEntry]).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from torch import nn

from segrobust.attacks.registry import ATTACKS, AttackEntry
from segrobust.rain import RAIN_PRESETS

__all__ = [
    "ATTACKS",
    "DEFENSES",
    "AttackEntry",
    "DefenseEntry",
    "resolve_attacks",
    "resolve_rain_presets",
]


# ----------------------------------------------------------------------------- attacks
# The attack table lives beside the attacks (segrobust.attacks.registry); the benchmark and the
# command line read it from here too.
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
    """Attack keys from ``"all"``, ``"short"``, ``"none"``, a comma-separated string or a list (case-insensitive).

    ``"all"`` is every attack registered with ``default=True``, the reliable
    evaluation included; ``"short"`` is the same set without it (the short
    attacks alone, upper bounds on robustness). Either may be combined with
    other names (``"short,reliable"``); keys come back in report order.

    Examples:
        >>> resolve_attacks("NAA, segpgd")
        ['naa', 'segpgd']
        >>> resolve_attacks("short") == [key for key in resolve_attacks("all") if key != "reliable"]
        True
        >>> resolve_attacks("pgd")
        Traceback (most recent call last):
        ...
        ValueError: unknown attack 'pgd'; expected 'all', 'short', 'none' or a comma-separated list of: reliable, naa, segpgd, cospgd, eroseg, ama, rain_attack
    """
    defaults = [key for key, entry in ATTACKS.items() if entry.default]
    groups = {"all": defaults, "short": [key for key in defaults if not ATTACKS[key].reliable]}
    wanted = _selection(names)
    if wanted is None:
        return defaults
    wanted = [key for name in wanted for key in groups.get(name, [name])]
    for name in wanted:
        if name not in ATTACKS:
            raise ValueError(
                f"unknown attack {name!r}; expected 'all', 'short', 'none' or a comma-separated list of: "
                f"{', '.join(ATTACKS)}"
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
