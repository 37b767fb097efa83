"""The ``segrobust`` argument parser: sub-commands, their flags, and the table of each flag's default.

Every flag is added through [Flags.add][segrobust.cli.parser.Flags.add], which
records its default (read from `segrobust.benchmark.defaults` or a config
dataclass, never written here) in the command's table. Argparse itself
fills in nothing (``argument_default=SUPPRESS``), so the parsed namespace
holds exactly the flags the command line gave: that is how a flag wins over
a config file and over ``--fast`` (see `segrobust.cli.options`). A new flag is
one ``flags.add(...)`` line in the group it belongs to.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, NoReturn

from segrobust.benchmark.config import BenchmarkConfig
from segrobust.benchmark.defaults import (
    BENCHMARK_RUN,
    BUILTIN_RUN,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPS,
    DEFAULT_NUM_CLASSES,
    DEFAULT_RELIABLE_STEPS,
    DEFAULT_STEPS,
    FAST_BENCHMARK_RUN,
    FAST_TRAIN_RUN,
    TRAIN_RUN,
)
from segrobust.cli import arguments as types
from segrobust.training import TrainConfig

__all__ = ["FORMATS", "Flags", "build_parser", "command_parser", "recipes"]

#: ``--format`` choices of ``segrobust benchmark``.
FORMATS = ("table", "json", "csv", "markdown")


class Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit code 2."""

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


def _field_default(config_type: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(config_type) if f.name == name)


def recipes() -> dict[str, Any]:
    """Every training recipe ``segrobust train`` knows: the segmenter's and the defences'."""
    from segrobust.defenses import RECIPES as DEFENSE_RECIPES
    from segrobust.training import RECIPES

    return {**RECIPES, **DEFENSE_RECIPES}


def _dataset_names() -> list[str]:
    """The image/mask data sets of [`segrobust.datasets.build_dataset`][segrobust.datasets.build_dataset] (frame triplets feed Python recipes only)."""
    from segrobust.datasets.factory import DATASET_NAMES

    return [name for name in DATASET_NAMES if not name.endswith("-triplets")]


# ----------------------------------------------------------------------------- groups shared by the commands
def _model_flags(flags: Flags, group: Any) -> None:
    flags.add(
        group,
        "--num-classes",
        type=types.positive_int,
        metavar="K",
        help=f"classes of a spec-built model (default {DEFAULT_NUM_CLASSES})",
    )
    flags.add(
        group,
        "--model-args",
        type=types.json_object,
        metavar="JSON",
        help="keyword arguments of a module:callable model (or extra smp spec arguments), "
        'e.g. \'{"num_classes": 21, "weights": null}\'',
    )
    flags.add(group, "--weights", metavar="PATH", help="a state_dict file for a spec- or module:callable-built model")
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


def _data_flags(flags: Flags, run: Any) -> None:
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


def _run_flags(flags: Flags, run_defaults: Any, fast: str) -> None:
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
        default=_field_default(TrainConfig, "num_workers"),
        metavar="N",
        help="DataLoader worker processes",
    )
    flags.add(run, "--threads", type=types.positive_int, metavar="N", help="torch CPU threads per process")
    flags.add(
        run,
        "--seed",
        type=types.non_negative_int,
        default=_field_default(TrainConfig, "seed"),
        help="seed of every random draw (default 0)",
    )
    flags.add(run, "--resume", action="store_true", help="continue an interrupted run in --out")
    flags.add(run, "--no-progress", action="store_true", help="no progress bars")
    flags.add(run, "--fast", action="store_true", help=f"a smoke test in seconds: {fast}; flags you give win")


def _config_flags(flags: Flags, group: Any, replays: str) -> None:
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


def _describe(sizes: Any) -> str:
    parts = []
    for key, value in sizes.given().items():
        if key == "size":
            value = f"{value[0]}x{value[1]}"
        elif key == "eps":
            value = ",".join(f"{round(e * 255)}/255" for e in value)
        parts.append(f"{key.replace('_', '-')} {value}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- the commands
def build_parser() -> argparse.ArgumentParser:
    """The ``segrobust`` argument parser (sub-commands ``benchmark``, ``train`` and ``list``).

    Each sub-command parser carries ``option_defaults``, the default of every flag.
    """
    from segrobust import __version__

    parser = Parser(
        prog="segrobust", description="Robustness of semantic segmentation to rain and adversarial attacks."
    )
    parser.add_argument("--version", action="version", version=f"segrobust {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=Parser, metavar="{benchmark,train,list}")
    commands.required = True
    _benchmark_command(commands)
    _train_command(commands)
    listing = commands.add_parser(
        "list",
        help="list the attacks, pixel losses, presets, recipes, data sets and defences",
        description="List what segrobust can run: every registered attack, pixel loss, APGD radius schedule, rain preset, "
        "training recipe, data set and defence, one line each.",
    )
    listing.option_defaults = {}
    return parser


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-command parser of ``command``."""
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices[command]


def _benchmark_command(commands: Any) -> None:
    bench = commands.add_parser(
        "benchmark",
        help="evaluate a model clean, under rain and under attacks",
        description="Evaluate a segmentation model clean, under rain presets and under attacks at several L∞ budgets, "
        "with the per-image worst case. Without arguments: the built-in default model on SyntheticStreets.",
        argument_default=argparse.SUPPRESS,
    )
    flags = Flags(bench)
    model = bench.add_argument_group("model")
    flags.add(
        model,
        "--model",
        metavar="SPEC|PATH",
        help="smp spec (unet:resnet18, deeplabv3plus:resnet34:encoder_depth=4), a segrobust checkpoint, "
        "SPEC@state_dict.pt, module:callable (torchvision.models.segmentation:lraspp_mobilenet_v3_large) "
        "or a TorchScript file with --allow-torchscript (default: the built-in default model)",
    )
    flags.add(
        model,
        "--defense",
        metavar="KIND:PATH",
        help="defence to evaluate: depth:PATH (DepthMultiTask checkpoint) or pearl:PATH",
    )
    _model_flags(flags, model)
    _attack_flags(flags, bench)
    out = bench.add_argument_group("output")
    flags.add(
        out, "--out", default=BENCHMARK_RUN.out, metavar="DIR", help=f"output folder (default ./{BENCHMARK_RUN.out})"
    )
    flags.add(
        out,
        "--examples",
        type=types.non_negative_int,
        default=_field_default(BenchmarkConfig, "num_examples"),
        metavar="K",
        help="example images in examples.png",
    )
    flags.add(
        out,
        "--format",
        default=BENCHMARK_RUN.format,
        choices=FORMATS,
        help="summary on stdout: table (default, for people), json or csv (one record per condition and ε), "
        "or markdown; with json and csv the closing line goes to stderr",
    )
    _config_flags(flags, out, "A results.json replays its run (see docs/benchmark.md for what a replay may do).")
    _data_flags(flags, BENCHMARK_RUN)
    _run_flags(flags, BENCHMARK_RUN, _describe(FAST_BENCHMARK_RUN))
    bench.option_defaults = flags.defaults


def _attack_flags(flags: Flags, bench: argparse.ArgumentParser) -> None:
    attack = bench.add_argument_group("attacks")
    flags.add(
        attack,
        "--attacks",
        default=BENCHMARK_RUN.attacks,
        metavar="LIST",
        help="comma-separated attacks, 'all' or 'none' (default all: every attack but 'reliable', the "
        "reliable APGD ensemble; add it with reliable,all)",
    )
    flags.add(
        attack,
        "--rain",
        default=BENCHMARK_RUN.rain,
        metavar="LIST",
        help="comma-separated rain presets, 'all' or 'none'",
    )
    flags.add(
        attack,
        "--eps",
        type=types.eps_list,
        default=list(DEFAULT_EPS),
        metavar="LIST",
        help="L∞ budgets in (0, 1], e.g. 2/255,4/255,8/255 (the default)",
    )
    flags.add(
        attack,
        "--steps",
        type=types.positive_int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"attack steps (default {DEFAULT_STEPS}; {BUILTIN_RUN.steps} for the built-in default)",
    )
    flags.add(
        attack,
        "--reliable-steps",
        type=types.positive_int,
        default=DEFAULT_RELIABLE_STEPS,
        metavar="N",
        help=f"APGD iterations per loss of the reliable ensemble, --attacks reliable (default {DEFAULT_RELIABLE_STEPS}; "
        f"{BUILTIN_RUN.reliable_steps} for the built-in default and --fast)",
    )
    flags.add(attack, "--alpha", type=types.step_size, metavar="A", help="attack step size (default 2.5·ε/steps)")
    flags.add(attack, "--no-random-start", action="store_true", help="start attacks at the clean image")
    flags.add(
        attack,
        "--attack-args",
        type=types.attack_args,
        metavar="JSON",
        help='extra attack arguments, e.g. \'{"eroseg": {"q0": 0.3}}\'',
    )


def _recipes_epilog() -> str:
    table = recipes()
    width = max(len(name) for name in table)
    lines = [f"  {name.ljust(width)}  {recipe.description}" for name, recipe in table.items()]
    return "recipes (--recipe):\n" + "\n".join(lines)


def _train_command(commands: Any) -> None:
    train = commands.add_parser(
        "train",
        help="train a model with a recipe (standard, pgd_at, eroseg_at, nat, ...)",
        description="Train a segmentation model with one of the registered recipes and save a checkpoint that "
        "'segrobust benchmark --model OUT/model.pt' evaluates.",
        epilog=_recipes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    flags = Flags(train)
    recipe = train.add_argument_group("recipe")
    flags.add(
        recipe,
        "--recipe",
        default=TRAIN_RUN.recipe,
        metavar="NAME",
        help=f"one of {', '.join(recipes())} (default {TRAIN_RUN.recipe}; listed below)",
    )
    flags.add(
        recipe,
        "--model",
        default=TRAIN_RUN.model,
        metavar="SPEC|PATH",
        help=f"model spec or checkpoint to start from (default {TRAIN_RUN.model})",
    )
    _model_flags(flags, recipe)
    flags.add(
        recipe,
        "--epochs",
        type=types.positive_int,
        default=TRAIN_RUN.epochs,
        help=f"epochs (default {TRAIN_RUN.epochs})",
    )
    # The options below are passed on only when given; a recipe without the setting rejects them.
    flags.add(
        recipe, "--lr", type=types.positive_float, help="learning rate (recipe default: 0.01 SGD, 1e-3 AdamW/Adam)"
    )
    flags.add(
        recipe,
        "--optimizer",
        choices=["sgd", "adamw"],
        help="sgd (poly schedule, the default) or adamw; standard, pgd_at, eroseg_at, nat",
    )
    flags.add(
        recipe,
        "--eps",
        type=types.budget,
        metavar="E",
        help="adversarial budget (recipe default: 8/255 pgd_at/eroseg_at, 4/255 nat/pearl)",
    )
    flags.add(
        recipe,
        "--steps",
        type=types.positive_int,
        metavar="N",
        help="inner attack steps (recipe default: 7 pgd_at/eroseg_at, 3 nat/pearl)",
    )
    flags.add(
        recipe,
        "--alpha",
        type=types.step_size,
        metavar="A",
        help="inner attack step (recipe default: 2/255 pgd_at/eroseg_at, 2.5·ε/steps nat/pearl)",
    )
    flags.add(
        recipe,
        "--rain-preset",
        metavar="NAME",
        help="rain of nat and pearl (default medium, streaks scaled to the image height)",
    )
    flags.add(
        recipe,
        "--out",
        default=TRAIN_RUN.out,
        metavar="DIR",
        help="output folder (checkpoints/, model.pt, history.json, config.json)",
    )
    _config_flags(flags, recipe, "OUT/config.json repeats a training run.")
    _data_flags(flags, TRAIN_RUN)
    _run_flags(flags, TRAIN_RUN, _describe(FAST_TRAIN_RUN))
    flags.defaults["batch_size"] = _field_default(TrainConfig, "batch_size")
    train.option_defaults = flags.defaults
