"""``segrobust train``: a recipe run into an output folder it owns, locks and can resume."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from segrobust.benchmark.defaults import DEFAULT_NUM_CLASSES, FAST_TRAIN_RUN, TRAIN_RUN
from segrobust.cli import arguments as types
from segrobust.cli.config_files import recorded_settings
from segrobust.cli.errors import UsageError, check_file
from segrobust.cli.flags import (
    Flags,
    add_model_flags,
    add_shared_flags,
    field_default,
    recipe_defaults,
    recipes,
)
from segrobust.cli.loading import dataset, resolve_device
from segrobust.cli.options import Invocation
from segrobust.fileio import OutputFolder, atomic_write_text
from segrobust.training import TrainConfig
from segrobust.utils import error_line

__all__ = ["CHECKPOINTS", "OUTPUT_FILES", "add_flags", "run"]

#: The files ``segrobust train`` writes into ``--out`` (besides a recipe's artifacts).
OUTPUT_FILES = ("model.pt", "history.json", "config.json")
#: The folder of the trainer's checkpoints (``last.pt``) and caches, inside ``--out``.
CHECKPOINTS = "checkpoints"
# Settings that do not change what is trained: a resumed run may change them.
_HOW_IT_RUNS = {"no_progress", "workers", "threads", "device"}
# flag (argparse dest) -> recipe config field; only flags that are set are passed on
_RECIPE_FLAGS = {
    "lr": "lr",
    "optimizer": "optimizer",
    "eps": "eps",
    "steps": "steps",
    "alpha": "alpha",
    "rain_preset": "rain",
}


# ----------------------------------------------------------------------------- flags
def _recipes_epilog() -> str:
    table = recipes()
    width = max(len(name) for name in table)
    lines = [f"  {name.ljust(width)}  {recipe.description}" for name, recipe in table.items()]
    return "recipes (--recipe):\n" + "\n".join(lines)


def add_flags(commands: Any) -> None:
    """The ``train`` sub-command and its flags."""
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
    add_model_flags(flags, recipe)
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
        help=f"adversarial budget (recipe defaults: {recipe_defaults('eps')})",
    )
    flags.add(
        recipe,
        "--steps",
        type=types.positive_int,
        metavar="N",
        help=f"inner attack steps (recipe defaults: {recipe_defaults('steps')}; {FAST_TRAIN_RUN.steps} with --fast)",
    )
    flags.add(
        recipe,
        "--alpha",
        type=types.step_size,
        metavar="A",
        help=f"inner attack step (recipe defaults: {recipe_defaults('alpha')})",
    )
    flags.add(
        recipe,
        "--rain-preset",
        metavar="NAME",
        help=f"rain (recipe defaults: {recipe_defaults('rain')}; streaks scaled to the image height)",
    )
    flags.add(
        recipe,
        "--out",
        default=TRAIN_RUN.out,
        metavar="DIR",
        help="output folder (checkpoints/, model.pt, history.json, config.json)",
    )
    add_shared_flags(flags, recipe, "OUT/config.json repeats a training run.", TRAIN_RUN, FAST_TRAIN_RUN)
    flags.defaults["batch_size"] = field_default(TrainConfig, "batch_size")
    train.option_defaults = flags.defaults


# ----------------------------------------------------------------------------- the run
def run(invocation: Invocation) -> int:
    """Train as ``invocation`` says and save what ``segrobust benchmark`` evaluates."""
    import torch

    from segrobust.distributed import init_distributed, is_main_process

    options = invocation.options
    try:
        recipe = _recipe(options.recipe)
    except KeyError as error:
        raise UsageError(error.args[0]) from None
    settings = _recipe_settings(options, recipe)  # checked before any model or data is loaded
    recorded = recorded_settings(vars(options))
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    with _owned_folder(options, recipe, recorded) as folder:
        init_distributed()
        model, spec, num_classes = _train_model(options, device)
        train_data, data_name = dataset(options, "train", TRAIN_RUN.synthetic_images, TRAIN_RUN.synthetic_size)
        eval_images = min(options.num_images or TRAIN_RUN.eval_images, TRAIN_RUN.eval_images)
        eval_options = argparse.Namespace(**{**vars(options), "num_images": eval_images})
        val_data, _ = dataset(eval_options, "val", eval_images, TRAIN_RUN.synthetic_size)
        config = recipe.config(
            settings,
            num_classes=num_classes,
            batch_size=options.batch_size,
            seed=options.seed,
            device=device,
            num_workers=options.workers,
            eval_data=val_data,
            checkpoint_dir=Path(options.out) / CHECKPOINTS,
            resume=options.resume,
            progress=not options.no_progress,
        )
        model.train()
        result = recipe(model, train_data, config)
        if is_main_process():
            _save(folder, result, recipe, model, spec, num_classes, recorded, data_name, config.epochs)
    return 0


def _recipe(name: str) -> Any:
    from segrobust.training import get_recipe

    return get_recipe(name, recipes())


def _recipe_settings(options: argparse.Namespace, recipe: Any) -> Any:
    """The recipe config of the flags that are set; a flag the recipe has no field for is a usage error."""
    fields = {field.name for field in dataclasses.fields(recipe.config_type)}
    if options.fast and options.steps is None and "steps" in fields:
        options.steps = FAST_TRAIN_RUN.steps  # recorded as the effective setting
    values: dict[str, Any] = {"epochs": options.epochs}
    for dest, name in _RECIPE_FLAGS.items():
        value = getattr(options, dest)
        if value is None:
            continue
        if name not in fields:
            raise UsageError(f"--{dest.replace('_', '-')} is not an option of recipe {recipe.name!r}")
        values[name] = value
    try:
        return recipe.config(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--recipe {recipe.name}: {error_line(error)}") from None


# ----------------------------------------------------------------------------- the output folder
@contextlib.contextmanager
def _owned_folder(options: argparse.Namespace, recipe: Any, recorded: dict[str, Any]) -> Iterator[OutputFolder]:
    """``--out`` locked for the run (rank 0), its files checked, and a resume checked against the recorded settings.

    Only files segrobust wrote there are overwritten; ``checkpoints/`` must be
    one segrobust made. The settings of this run are recorded before training,
    so a later ``--resume`` with other settings is refused before it loads anything.
    """
    folder = OutputFolder(options.out, "train")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        folder.lock()
    try:
        if main_rank:
            folder.check_files([*OUTPUT_FILES, *recipe.artifacts])
            folder.check_folder(CHECKPOINTS)
            if options.resume:
                _check_resume(folder, recorded)
            folder.record_settings(_comparable(recorded))
            folder.claim_folder(CHECKPOINTS)
        yield folder
    finally:
        folder.unlock()


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what is trained, as JSON values."""
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in _HOW_IT_RUNS}, default=str))


def _check_resume(folder: OutputFolder, recorded: dict[str, Any]) -> None:
    stored = folder.settings()
    if stored is None:
        return  # nothing trained there yet: --resume starts afresh
    current = _comparable(recorded)
    differing = sorted(key for key in set(stored) | set(current) if stored.get(key) != current.get(key))
    if differing:
        raise UsageError(
            f"cannot resume: {folder.path} holds a training run made with other settings "
            f"({', '.join(differing)} differ); use another --out or drop --resume"
        )


def _save(
    folder: OutputFolder,
    result: Any,
    recipe: Any,
    model: Any,
    spec: str,
    num_classes: int,
    recorded: dict[str, Any],
    data_name: str,
    epochs: int,
) -> None:
    """Write model.pt, history.json, config.json and the recipe's artifacts (atomically, recorded as segrobust's)."""
    from segrobust.models import save_model

    out = folder.path
    history = json.loads(json.dumps(result.history, default=float))
    metadata = {
        "recipe": recipe.name,
        "dataset": data_name,
        "epochs": epochs,
        "seed": recorded["seed"],
        "config": recorded,
        "history": history,
    }
    folder.check_files([*OUTPUT_FILES, *result.artifacts])
    written = [
        save_model(model.eval(), out / "model.pt", spec, num_classes, metadata=metadata),
        atomic_write_text(out / "history.json", json.dumps(history, indent=2) + "\n"),
        atomic_write_text(out / "config.json", json.dumps(recorded, indent=2) + "\n"),
    ]
    bench = [f"--model {written[0]}"]
    for name, artifact in result.artifacts.items():
        path = artifact.write(out / name)
        written.append(path)
        if artifact.benchmark_option:
            bench.append(artifact.benchmark_option.format(path=path))
    folder.record(written)
    last = result.history[-1] if result.history else {}
    scores = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float) and ("miou" in k or k == "loss"))
    print(f"trained {recipe.name} for {epochs} epoch(s) on {data_name}: {scores}")
    saved = " and ".join(str(path) for path in [written[0], *written[3:]])
    print(f"saved {saved}; evaluate with: segrobust benchmark {' '.join(bench)}")


# ----------------------------------------------------------------------------- the model
def _train_model(options: argparse.Namespace, device: Any) -> tuple[Any, str, int]:
    """``(model, spec, num_classes)`` of ``--model``: a spec, SPEC@weights or a segrobust checkpoint to continue."""
    from segrobust.models import CHECKPOINT_FORMAT, ModelLoadError, load_model, load_state_dict_file, parse_model_spec

    unsupported = [
        flag
        for flag, value in (
            ("--model-args", options.model_args),
            ("--mean", options.mean),
            ("--std", options.std),
            ("--allow-torchscript", options.allow_torchscript),
        )
        if value
    ]
    if unsupported:
        raise UsageError(
            f"{unsupported[0]} is not supported by 'segrobust train', which trains smp specs "
            "(use --weights to start from a state_dict)"
        )
    if options.weights is not None:
        check_file("--weights", options.weights)
    try:
        num_classes, spec = options.num_classes or DEFAULT_NUM_CLASSES, options.model
        if "@" in spec and not os.path.lexists(spec):
            spec = spec.partition("@")[0]
        elif os.path.lexists(spec):
            check_file("--model", spec)
            stored = load_state_dict_file(spec)
            if not (isinstance(stored, dict) and stored.get("format") == CHECKPOINT_FORMAT):
                raise UsageError(
                    f"--model {spec}: training starts from a spec or a segrobust checkpoint (model.pt), not this file"
                )
            spec, num_classes = str(stored["spec"]), int(stored["num_classes"])
        parse_model_spec(spec)
        model = load_model(
            options.model, num_classes=num_classes, device=device, seed=options.seed, weights=options.weights
        )
        return model, spec, num_classes
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise UsageError(error_line(error)) from None
