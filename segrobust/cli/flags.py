"""The flags' building blocks: the parser class, the table of defaults each flag is added with, the shared groups.

Every flag is added through [Flags.add][segrobust.cli.flags.Flags.add], which
records its default (read from `segrobust.benchmark.defaults` or a config
dataclass, never written here) in the command's table. Argparse itself fills
in nothing (``argument_default=SUPPRESS``), so the parsed namespace holds
exactly the flags the command line gave: that is how a flag wins over a config
file and over ``--fast`` (see `segrobust.cli.options`). A new flag is one
``flags.add(...)`` line in the group it belongs to: here when the commands
share it, else in its command's module (``add_flags``).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, NoReturn

from segrobust.benchmark.defaults import DEFAULT_BATCH_SIZE, DEFAULT_NUM_CLASSES
from segrobust.benchmark.functional import format_eps
from segrobust.cli import arguments as types
from segrobust.training import TrainConfig

__all__ = [
    "Flags",
    "Parser",
    "add_config_flags",
    "add_data_flags",
    "add_model_flags",
    "add_run_flags",
    "add_shared_flags",
    "command_parser",
    "describe",
    "field_default",
    "recipe_defaults",
    "recipes",
]


class Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit code 2; flags are taken whole (``--output`` is not ``--output-key``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)  # a prefix silently picking another flag gives wrong runs
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class Flags:
    """Adds the flags of one sub-command and records each one's default in ``defaults`` (by ``dest``)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser
        self.defaults: dict[str, Any] = {}

    def add(self, group: Any, *names: str, default: Any = None, **kwargs: Any) -> argparse.Action:
        """``group.add_argument(*names, **kwargs)``; ``default`` goes to the table (on/off flags: ``False``)."""
        action = group.add_argument(*names, **kwargs)
        self.defaults[action.dest] = False if kwargs.get("action") == "store_true" else default
        return action


def field_default(config_type: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config_type) if f.name == name)


def recipes() -> dict[str, Any]:
    """Every training recipe ``segrobust train`` knows: the segmenter's and the defences'."""
    from segrobust.defenses import RECIPES as DEFENSE_RECIPES
    from segrobust.training import RECIPES

    return {**RECIPES, **DEFENSE_RECIPES}


def recipe_defaults(name: str) -> str:
    """``pgd_at 8/255, nat 4/255, ...``: the default of config field ``name`` in each recipe that has it."""
    found = []
    for key, recipe in recipes().items():
        fields = {f.name: f for f in dataclasses.fields(recipe.config_type)}
        if name in fields and fields[name].default is not dataclasses.MISSING:
            value = fields[name].default
            text = "2.5·ε/steps" if value is None else format_eps(value) if isinstance(value, float) else str(value)
            found.append(f"{key} {text}")
    return ", ".join(found)


def _dataset_names() -> list[str]:
    """The image/mask data sets of [`segrobust.datasets.build_dataset`][segrobust.datasets.build_dataset] (frame triplets feed Python recipes only)."""
    from segrobust.datasets.factory import DATASET_NAMES

    return [name for name in DATASET_NAMES if not name.endswith("-triplets")]


# ----------------------------------------------------------------------------- groups shared by the commands
def add_model_flags(flags: Flags, group: Any) -> None:
    flags.add(
        group,
        "--num-classes",
        type=types.positive_int,
        metavar="K",
        help=f"classes of a spec-built model (default {DEFAULT_NUM_CLASSES}); the num_labels of an hf:CLASS "
        "config; checked against the model's output",
    )
    flags.add(
        group,
        "--model-args",
        type=types.json_object,
        metavar="JSON",
        help="keyword arguments of a module:callable model (or extra smp spec arguments, or the config of "
        'an hf:CLASS: \'{"config": {...}}\'), e.g. \'{"num_classes": 21, "weights": null}\'',
    )
    flags.add(
        group,
        "--weights",
        metavar="PATH",
        help="a state_dict file for a spec-, module:callable- or hf:CLASS-built model",
    )
    flags.add(
        group,
        "--mean",
        type=types.channel_list,
        metavar="LIST",
        help="per-channel mean the model normalises with, e.g. 0.485,0.456,0.406 (images stay in [0, 1])",
    )
    flags.add(group, "--std", type=types.channel_list, metavar="LIST", help="per-channel std, e.g. 0.229,0.224,0.225")
    flags.add(
        group,
        "--allow-torchscript",
        action="store_true",
        help="load a TorchScript --model (its stored code runs when the model is called: trusted files only; "
        "only this flag on the command line allows it, never a config file)",
    )


def add_data_flags(flags: Flags, run: Any) -> None:
    data = flags.parser.add_argument_group("data")
    flags.add(
        data,
        "--dataset",
        default=run.dataset,
        choices=_dataset_names(),
        help="synthetic (SyntheticStreets, generated), camvid (SegNet layout), folder (images/ + masks/), ...",
    )
    flags.add(data, "--data-root", metavar="PATH", help="data folder (camvid: default $SEGROBUST_CAMVID)")
    size = run.synthetic_size
    flags.add(
        data,
        "--size",
        type=types.size,
        metavar="HxW",
        help=f"resize images (default: {size[0]}x{size[1]} synthetic, native size otherwise)",
    )
    flags.add(
        data,
        "--num-images",
        type=types.positive_int,
        metavar="N",
        help=f"use the first N images (synthetic: {run.synthetic_images} are generated)",
    )


def add_run_flags(flags: Flags, run_defaults: Any, fast: str) -> None:
    run = flags.parser.add_argument_group("run")
    flags.add(
        run,
        "--batch-size",
        type=types.positive_int,
        metavar="N",
        default=DEFAULT_BATCH_SIZE,
        help=f"images per batch (default {DEFAULT_BATCH_SIZE})",
    )
    flags.add(
        run,
        "--device",
        default=run_defaults.device,
        help="cpu, cuda, cuda:1 or auto (default: cuda when available)",
    )
    flags.add(
        run,
        "--workers",
        type=types.non_negative_int,
        default=field_default(TrainConfig, "num_workers"),
        metavar="N",
        help="DataLoader worker processes",
    )
    flags.add(run, "--threads", type=types.positive_int, metavar="N", help="torch CPU threads per process")
    flags.add(
        run,
        "--seed",
        type=types.non_negative_int,
        default=field_default(TrainConfig, "seed"),
        help="seed of every random draw (default 0)",
    )
    flags.add(run, "--resume", action="store_true", help="continue an interrupted run in --out")
    flags.add(run, "--no-progress", action="store_true", help="no progress bars")
    flags.add(run, "--fast", action="store_true", help=f"a smoke test in seconds: {fast}; flags you give win")


def add_config_flags(flags: Flags, group: Any, replays: str) -> None:
    flags.add(
        group,
        "--config",
        metavar="FILE",
        help="read options from a YAML or JSON file (keys: the long option names, e.g. num_images); "
        f"flags on the command line win. {replays} A file never runs code: see --trust-config",
    )
    flags.add(
        group,
        "--trust-config",
        action="store_true",
        help="let --config name Python code to import (a module:callable --model); without it such a file is refused",
    )


def describe(sizes: Any) -> str:
    parts = []
    for key, value in sizes.given().items():
        if key == "size":
            value = f"{value[0]}x{value[1]}"
        elif key == "eps":
            value = ",".join(f"{round(e * 255)}/255" for e in value)
        parts.append(f"{key.replace('_', '-')} {value}")
    return ", ".join(parts)


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-command parser of ``command``."""
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices[command]


def add_shared_flags(flags: Flags, config_group: Any, replays: str, run_defaults: Any, fast: Any) -> None:
    """The flags every command has: ``--config`` (in ``config_group``), the data group and the run group."""
    add_config_flags(flags, config_group, replays)
    add_data_flags(flags, run_defaults)
    add_run_flags(flags, run_defaults, describe(fast))
