"""The ``segrobust`` command: ``segrobust benchmark`` and ``segrobust train``.

A thin layer over [`segrobust.benchmark.run_benchmark`][segrobust.benchmark.run_benchmark] and the training
recipes. Bad arguments (unknown attack, ε outside (0, 1], missing data root,
unreadable checkpoint...) end with one ``segrobust ...: error: ...`` line on
stderr and exit code 2, never a traceback. Under ``torchrun`` (``torchrun
--nproc_per_node N -m segrobust benchmark ...``) the work is sharded over the
processes and rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, Optional

__all__ = ["build_parser", "main"]

_DEFAULT_OUT = "segrobust-benchmark"
_FORMATS = ("table", "json", "csv", "markdown")
_BUILTIN_RELIABLE_STEPS = 10  # keeps the built-in default run under 2 minutes on 2 CPU cores
_FAST = {"num_images": 4, "size": (48, 64), "steps": 2, "eps": "8/255", "batch_size": 2}


class UsageError(Exception):
    """A bad command-line argument, reported as one line with exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- argument types
def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 96x128, got {text!r}") from None
    if height < 8 or width < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return height, width


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _budget(text: str) -> float:
    from segrobust.benchmark.functional import parse_eps

    try:
        return parse_eps(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _step_size(text: str) -> float:
    try:
        return _budget(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(str(error).replace("eps", "the step size", 1)) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"not valid JSON ({error}); expected an object like '{{\"key\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"key\": 1}}', got {type(value).__name__}")
    return value


def _attack_args(text: str) -> str:
    """``--attack-args``: a JSON object of objects, checked here and passed on as text."""
    for attack, kwargs in _json_object(text).items():
        if not isinstance(kwargs, dict):
            raise argparse.ArgumentTypeError(
                f'the value for "{attack}" must be a JSON object of keyword arguments, e.g. \'{{"{attack}": {{}}}}\''
            )
    return text


def _channel_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected comma-separated numbers, one per channel, e.g. 0.485,0.456,0.406")
    return values


def _eps_list(text: str) -> list[float]:
    values = [_budget(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("--eps needs at least one budget, e.g. 2/255,4/255,8/255")
    return values


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ----------------------------------------------------------------------------- parser
def _dataset_names() -> list[str]:
    """The image/mask data sets of [`segrobust.datasets.build_dataset`][segrobust.datasets.build_dataset] (frame triplets feed Python recipes only)."""
    from segrobust.datasets.factory import DATASET_NAMES

    return [name for name in DATASET_NAMES if not name.endswith("-triplets")]


def _add_model_options(group: Any) -> None:
    group.add_argument(
        "--model-args",
        type=_json_object,
        metavar="JSON",
        help="keyword arguments of a module:callable model (or extra smp spec arguments), "
        'e.g. \'{"num_classes": 21, "weights": null}\'',
    )
    group.add_argument("--weights", metavar="PATH", help="a state_dict file for a spec- or module:callable-built model")
    group.add_argument(
        "--mean",
        type=_channel_list,
        metavar="LIST",
        help="per-channel mean the model normalises with, e.g. 0.485,0.456,0.406 (images stay in [0, 1])",
    )
    group.add_argument("--std", type=_channel_list, metavar="LIST", help="per-channel std, e.g. 0.229,0.224,0.225")
    group.add_argument(
        "--allow-torchscript",
        action="store_true",
        help="load a TorchScript --model (its stored code runs when the model is called: trusted files only)",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="synthetic",
        choices=_dataset_names(),
        help="synthetic (SyntheticStreets, generated), camvid (SegNet layout), folder (images/ + masks/), ...",
    )
    data.add_argument("--data-root", metavar="PATH", help="data folder (camvid: default $SEGROBUST_CAMVID)")
    data.add_argument(
        "--size", type=_size, metavar="HxW", help="resize images (default: 96x128 synthetic, native size otherwise)"
    )
    data.add_argument("--num-images", type=_positive_int, metavar="N", help="use the first N images")
    run = parser.add_argument_group("run")
    run.add_argument("--batch-size", type=_positive_int, metavar="N", help="images per batch (default 8)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: cuda when available)")
    run.add_argument("--workers", type=_non_negative_int, default=0, metavar="N", help="DataLoader worker processes")
    run.add_argument("--threads", type=_positive_int, metavar="N", help="torch CPU threads per process")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="seed of every random draw (default 0)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--fast", action="store_true", help="tiny sizes for a smoke test (seconds)")


def _add_config_option(group: Any, command: str) -> None:
    group.add_argument(
        "--config",
        metavar="FILE",
        help=f"read options from a YAML or JSON file (keys: the long option names, e.g. num_images); "
        f"flags on the command line win. {'A results.json replays its run.' if command == 'benchmark' else 'OUT/config.json repeats a training run.'}",
    )


def _recipes() -> dict:
    from segrobust.defenses import RECIPES as DEFENSE_RECIPES
    from segrobust.training import RECIPES

    return {**RECIPES, **DEFENSE_RECIPES}


def _recipes_epilog() -> str:
    RECIPES = _recipes()

    width = max(len(name) for name in RECIPES)
    lines = [f"  {name.ljust(width)}  {recipe.description}" for name, recipe in RECIPES.items()]
    return "recipes (--recipe):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``segrobust`` argument parser (sub-commands ``benchmark``, ``train`` and ``list``)."""
    from segrobust import __version__

    parser = _Parser(
        prog="segrobust", description="Robustness of semantic segmentation to rain and adversarial attacks."
    )
    parser.add_argument("--version", action="version", version=f"segrobust {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{benchmark,train,list}")
    commands.required = True

    _add_benchmark_command(commands)
    _add_train_command(commands)
    commands.add_parser(
        "list",
        help="list the attacks, pixel losses, presets, recipes, data sets and defences",
        description="List what segrobust can run: every registered attack, pixel loss, APGD radius schedule, rain preset, "
        "training recipe, data set and defence, one line each.",
    )
    return parser


def _add_benchmark_command(commands: Any) -> None:
    """The ``benchmark`` sub-command and its flags."""
    bench = commands.add_parser(
        "benchmark",
        help="evaluate a model clean, under rain and under attacks",
        description="Evaluate a segmentation model clean, under rain presets and under attacks at several L∞ budgets, "
        "with the per-image worst case. Without arguments: the built-in default model on SyntheticStreets.",
    )
    model = bench.add_argument_group("model")
    model.add_argument(
        "--model",
        metavar="SPEC|PATH",
        help="smp spec (unet:resnet18, deeplabv3plus:resnet34:encoder_depth=4), a segrobust checkpoint, "
        "SPEC@state_dict.pt, module:callable (torchvision.models.segmentation:lraspp_mobilenet_v3_large) "
        "or a TorchScript file with --allow-torchscript (default: the built-in default model)",
    )
    model.add_argument(
        "--num-classes", type=_positive_int, metavar="K", help="classes of a spec-built model (default 11)"
    )
    model.add_argument(
        "--defense",
        metavar="KIND:PATH",
        help="defence to evaluate: depth:PATH (DepthMultiTask checkpoint) or pearl:PATH",
    )
    _add_model_options(model)
    attack = bench.add_argument_group("attacks")
    attack.add_argument(
        "--attacks",
        default="all",
        metavar="LIST",
        help="comma-separated attacks, 'all' or 'none' (default all: every attack but 'reliable', the "
        "reliable APGD ensemble; add it with reliable,all)",
    )
    attack.add_argument("--rain", default="all", metavar="LIST", help="comma-separated rain presets, 'all' or 'none'")
    attack.add_argument(
        "--eps", type=_eps_list, metavar="LIST", help="L∞ budgets in (0, 1], e.g. 2/255,4/255,8/255 (the default)"
    )
    attack.add_argument(
        "--steps", type=_positive_int, metavar="N", help="attack steps (default 10; 5 for the built-in default)"
    )
    attack.add_argument(
        "--reliable-steps",
        type=_positive_int,
        metavar="N",
        help="APGD iterations per loss of the reliable ensemble, --attacks reliable (default 100; "
        f"{_BUILTIN_RELIABLE_STEPS} for the built-in default and --fast)",
    )
    attack.add_argument("--alpha", type=_step_size, metavar="A", help="attack step size (default 2.5·ε/steps)")
    attack.add_argument("--no-random-start", action="store_true", help="start attacks at the clean image")
    attack.add_argument(
        "--attack-args",
        type=_attack_args,
        metavar="JSON",
        help='extra attack arguments, e.g. \'{"eroseg": {"q0": 0.3}}\'',
    )
    out = bench.add_argument_group("output")
    out.add_argument("--out", default=_DEFAULT_OUT, metavar="DIR", help=f"output folder (default ./{_DEFAULT_OUT})")
    out.add_argument(
        "--examples", type=_non_negative_int, default=3, metavar="K", help="example images in examples.png"
    )
    out.add_argument(
        "--format",
        default="table",
        choices=_FORMATS,
        help="summary on stdout: table (default, for people), json or csv (one record per condition and ε), "
        "or markdown; with json and csv the closing line goes to stderr",
    )
    _add_config_option(out, "benchmark")
    _add_common(bench)


def _add_train_command(commands: Any) -> None:
    """The ``train`` sub-command and its flags."""
    RECIPES = _recipes()

    train = commands.add_parser(
        "train",
        help="train a model with a recipe (standard, pgd_at, eroseg_at, nat, ...)",
        description="Train a segmentation model with one of the registered recipes and save a checkpoint that "
        "'segrobust benchmark --model OUT/model.pt' evaluates.",
        epilog=_recipes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipe = train.add_argument_group("recipe")
    recipe.add_argument(
        "--recipe",
        default="standard",
        metavar="NAME",
        help=f"one of {', '.join(RECIPES)} (default standard; listed below)",
    )
    recipe.add_argument(
        "--model", default="unet:resnet18", metavar="SPEC|PATH", help="model spec or checkpoint to start from"
    )
    recipe.add_argument("--num-classes", type=_positive_int, metavar="K", help="classes (default 11)")
    _add_model_options(recipe)
    recipe.add_argument("--epochs", type=_positive_int, default=10, help="epochs (default 10)")
    # The options below are passed on only when given; a recipe without the setting rejects them.
    recipe.add_argument("--lr", type=_positive_float, help="learning rate (recipe default: 0.01 SGD, 1e-3 AdamW/Adam)")
    recipe.add_argument(
        "--optimizer",
        choices=["sgd", "adamw"],
        help="sgd (poly schedule, the default) or adamw; standard, pgd_at, eroseg_at, nat",
    )
    recipe.add_argument(
        "--eps",
        type=_budget,
        metavar="E",
        help="adversarial budget (recipe default: 8/255 pgd_at/eroseg_at, 4/255 nat/pearl)",
    )
    recipe.add_argument(
        "--steps",
        type=_positive_int,
        metavar="N",
        help="inner attack steps (recipe default: 7 pgd_at/eroseg_at, 3 nat/pearl)",
    )
    recipe.add_argument(
        "--alpha",
        type=_step_size,
        metavar="A",
        help="inner attack step (recipe default: 2/255 pgd_at/eroseg_at, 2.5·ε/steps nat/pearl)",
    )
    recipe.add_argument(
        "--rain-preset",
        metavar="NAME",
        help="rain of nat and pearl (default medium, streaks scaled to the image height)",
    )
    recipe.add_argument(
        "--out",
        default="segrobust-train",
        metavar="DIR",
        help="output folder (checkpoints, model.pt, history.json, config.json)",
    )
    _add_config_option(recipe, "train")
    _add_common(train)


# ----------------------------------------------------------------------------- errors
def _one_line(error: BaseException) -> str:
    """One line that says what went wrong: the file for OS errors, the class when the message is empty."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        lines = lines[-1:]  # a DataLoader worker's error: its last line is the original one
    if not lines:
        return type(error).__name__
    text = lines[0]
    return text if isinstance(error, (ValueError, OSError, UsageError)) else f"{type(error).__name__}: {text}"


def _is_expected(error: BaseException) -> bool:
    """Failures a user can cause and fix (bad files, bad values), as opposed to bugs in segrobust.

    segrobust's own error classes (ModelLoadError, DataError,
    ResumeMismatchError) are ValueErrors; PIL's undecodable-image errors are
    OSErrors, its decompression-bomb error is not.
    """
    if isinstance(error, (UsageError, ValueError, OSError)):
        return True
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(error, Image.DecompressionBombError)


# ----------------------------------------------------------------------------- helpers
def _say(message: str) -> None:
    from segrobust.distributed import is_main_process

    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def _resolve_device(name: str) -> Any:
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


def _check_path(flag: str, path: str) -> Path:
    """``path`` as given, or a one-line error naming ``flag`` (missing, looping link, unreadable)."""
    try:
        Path(path).expanduser().stat()
    except FileNotFoundError:
        raise UsageError(f"{flag} {path} does not exist") from None
    except OSError as error:
        raise UsageError(f"{flag} {path}: {error.strerror or _one_line(error)}") from None
    return Path(path)


def _check_out_folder(out: str) -> None:
    """``--out`` must be a writable folder or a path one can be made at: checked before any work."""
    path = Path(out).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {existing}, which is a file"
        raise UsageError(f"--out {out} {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable")


def _dataset(args: argparse.Namespace, split: str, default_images: Optional[int] = None) -> tuple[Any, str]:
    from torch.utils.data import Subset

    from segrobust.datasets import build_dataset

    root = args.data_root
    if args.dataset == "synthetic":
        if root is not None:
            raise UsageError("--data-root is not used with --dataset synthetic (it is generated)")
        n = args.num_images or default_images or 50
        size = args.size or (96, 128)
        return build_dataset("synthetic", split=split, size=size, n=n), f"SyntheticStreets {split}"
    if root is None and args.dataset == "folder":
        raise UsageError("--dataset folder needs --data-root PATH (a folder with images/ and masks/)")
    if root is None and args.dataset == "camvid" and not os.environ.get("SEGROBUST_CAMVID"):
        raise UsageError("--dataset camvid needs --data-root PATH (or the SEGROBUST_CAMVID environment variable)")
    if root is not None:
        _check_path("--data-root", root)
    try:
        data = build_dataset(args.dataset, root=root, split=split, size=args.size)
    except Exception as error:
        if not (_is_expected(error) or isinstance(error, RuntimeError)):  # RuntimeError: e.g. torch reading a bad cache
            raise
        where = f" at {root}" if root is not None else ""
        raise UsageError(f"--dataset {args.dataset}: cannot read the data{where}: {_one_line(error)}") from None
    if len(data) == 0:
        raise UsageError(f"no images found in {root} ({split} split)")
    label = {"camvid": "CamVid", "folder": f"folder {root}"}.get(args.dataset, args.dataset)
    name = f"{label} {split}"
    if args.num_images and args.num_images < len(data):
        data = Subset(data, range(args.num_images))
    return data, name


def _apply_fast(args: argparse.Namespace, keys: Sequence[str]) -> None:
    if not args.fast:
        return
    for key in keys:
        if getattr(args, key, None) is None:
            value = _FAST[key]
            setattr(args, key, _eps_list(value) if key == "eps" else value)


def _ensure_default_model(progress: bool) -> None:
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


def _print_summary(results: Any, style: str) -> None:
    """The summary on stdout: the human table, JSON or CSV records, or a markdown table."""
    if style == "json":
        print(json.dumps(results.to_records(), indent=2, allow_nan=False))
    elif style == "csv":
        sys.stdout.write(results.to_csv())
    elif style == "markdown":
        print(results.table("markdown"))
    else:
        _print_table(results)


def _print_table(results: Any) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(results.table())
        return
    rows = results.table_rows()
    table = Table(title="segrobust benchmark")
    for number, column in enumerate(rows[0]):
        table.add_column(column, justify="left" if number == 0 else "right")
    for row in rows[1:]:
        table.add_row(*row)
    Console().print(table)


# ----------------------------------------------------------------------------- configuration files
_NOT_IN_CONFIG = {"help", "config"}  # a config file cannot name another one
# Not recorded for replay: where a run writes, how it continues, how it prints (--fast is recorded expanded).
_NOT_RECORDED = {"command", "config", "out", "resume", "fast", "format"}


def _read_config_file(path: str) -> dict[str, Any]:
    """The options in a YAML/JSON file; a ``results.json`` gives the settings its run recorded."""
    from segrobust.benchmark.results import RESULTS_FORMAT

    _check_path("--config", path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--config {path}: cannot read it ({_one_line(error)})") from None
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise UsageError(f"--config {path}: not valid YAML ({_one_line(error)})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as error:
            raise UsageError(f"--config {path}: not valid JSON ({error}); YAML files end in .yaml or .yml") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values, got {type(data).__name__}")
    if data.get("format") == RESULTS_FORMAT:
        settings = data.get("config", {}).get("cli")
        if not isinstance(settings, dict):
            raise UsageError(
                f"--config {path}: this results.json was not written by 'segrobust benchmark' "
                "(it records no command-line settings to replay)"
            )
        return settings
    return data


def _as_text(value: Any) -> str:
    """A config-file value as the command line would spell it (lists comma-separated, objects as JSON)."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(item) for item in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The options of ``path`` as argparse defaults of ``parser``, each checked like its flag."""
    actions = {action.dest: action for action in parser._actions if action.dest not in _NOT_IN_CONFIG}
    defaults = {}
    for key, value in _read_config_file(path).items():
        dest = str(key).strip().lstrip("-").replace("-", "_")
        if dest not in actions:
            raise UsageError(
                f"--config {path}: unknown option {key!r} for '{parser.prog}' (see '{parser.prog} --help')"
            )
        action, flag = actions[dest], f"--{dest.replace('_', '-')}"
        if value is None:
            defaults[dest] = action.default
        elif action.nargs == 0:  # an on/off flag
            if not isinstance(value, bool):
                raise UsageError(f"--config {path}: {key}: expected true or false, got {value!r}")
            defaults[dest] = value
        else:
            try:
                converted = action.type(_as_text(value)) if action.type else _as_text(value)
            except argparse.ArgumentTypeError as error:
                raise UsageError(f"--config {path}: {key} ({flag}): {error}") from None
            if action.choices is not None and converted not in action.choices:
                raise UsageError(
                    f"--config {path}: {key}: expected one of {', '.join(map(str, action.choices))}, got {value!r}"
                )
            defaults[dest] = converted
    return defaults


def _parse(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse ``argv``; with ``--config FILE`` the file's options become the defaults the flags override."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    command = subparsers.choices[args.command]
    command.set_defaults(**_config_defaults(command, args.config))
    return parser.parse_args(argv)


def _recorded_settings(args: argparse.Namespace, **resolved: Any) -> dict[str, Any]:
    """Every setting of this run as JSON values that ``--config`` reads back (``resolved`` replaces defaults)."""
    settings: dict[str, Any] = {}
    for dest, value in {**vars(args), **resolved}.items():
        if dest in _NOT_RECORDED:
            continue
        if dest == "attack_args" and isinstance(value, str):
            value = json.loads(value)
        settings[dest] = list(value) if isinstance(value, tuple) else value
    return settings


# ----------------------------------------------------------------------------- list
def _first_line(text: Optional[str]) -> str:
    """A docstring's first line as plain text (cross-references and code marks dropped)."""
    line = (text or "").strip().split("\n", 1)[0].strip().rstrip(".")
    return re.sub(r"\[([^\]]+)\]\[[^\]]+\]", r"\1", line).replace("``", "")


def _rain_summary(preset: Any) -> str:
    def span(name: str, unit: str = "") -> str:
        value = preset[name]
        low, high = value if isinstance(value, (tuple, list)) else (value, value)
        return (f"{low:g}" if low == high else f"{low:g}-{high:g}") + unit

    layers = preset.get("num_layers", 1)
    streaks = (
        (
            f"streaks {span('length', ' px')} long (at 360 px height), density {span('density')}, "
            f"{layers} layer{'s' if layers != 1 else ''}"
        )
        if span("density") != "0"
        else "no streaks"
    )
    return f"{streaks}, fog {span('fog_density')}"


def _catalogue() -> list[tuple[str, list[tuple[str, str]]]]:
    """``(group title, [(name, description), ...])`` for ``segrobust list``, read from the registries."""
    from segrobust.attacks.apgd import RADIUS_SCHEDULES
    from segrobust.benchmark.registry import ATTACKS, DEFENSES
    from segrobust.datasets.factory import DATASETS
    from segrobust.losses import PIXEL_LOSSES
    from segrobust.rain import RAIN_PRESETS
    RECIPES = _recipes()

    return [
        (
            "attacks (segrobust benchmark --attacks)",
            [(key, f"{entry.display_name}: {entry.description}") for key, entry in ATTACKS.items()],
        ),
        (
            "pixel losses (segrobust.losses.PIXEL_LOSSES)",
            [(name, _first_line(getattr(loss, "__doc__", ""))) for name, loss in PIXEL_LOSSES.items()],
        ),
        (
            "APGD radius schedules (segrobust.attacks.APGD(radius_schedule=NAME))",
            [
                (name, ", then ".join(f"{radius:g}·ε for {fraction:.0%} of the steps" for radius, fraction in stages))
                for name, stages in RADIUS_SCHEDULES.items()
            ],
        ),
        (
            "rain presets (--rain, --rain-preset)",
            [(name, _rain_summary(preset)) for name, preset in RAIN_PRESETS.items()],
        ),
        (
            "training recipes (segrobust train --recipe)",
            [(name, recipe.description) for name, recipe in RECIPES.items()],
        ),
        (
            "data sets (--dataset)",
            [(name, _first_line(getattr(build, "__doc__", ""))) for name, build in DATASETS.items()],
        ),
        (
            "defences (segrobust benchmark --defense KIND:PATH)",
            [(key, entry.description) for key, entry in DEFENSES.items()],
        ),
    ]


def _list(args: argparse.Namespace) -> int:
    for title, entries in _catalogue():
        print(f"{title}:")
        width = max((len(name) for name, _ in entries), default=0)
        for name, description in entries:
            print(f"  {name.ljust(width)}  {description}".rstrip())
        if not entries:
            print("  (none in this version)")
        print()
    return 0


# ----------------------------------------------------------------------------- benchmark
def _check_defense(text: Optional[str]) -> tuple[str, str]:
    from segrobust.benchmark.registry import DEFENSES

    if not text:
        return "", ""
    kind, sep, path = text.partition(":")
    if not sep or not path:
        raise UsageError(f"--defense must be KIND:PATH (e.g. depth:depth.pt), got {text!r}")
    if kind not in DEFENSES:
        raise UsageError(f"unknown defence {kind!r}; expected one of {', '.join(sorted(DEFENSES))}")
    _check_path(f"--defense {kind}: checkpoint", path)
    if Path(path).is_dir():
        raise UsageError(f"--defense {kind}: checkpoint {path} is a directory, expected a file")
    return kind, path


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of [`segrobust.models.load_model`][segrobust.models.load_model] the model flags give."""
    if (args.mean is None) != (args.std is None):
        raise UsageError("--mean and --std go together (one value per image channel each)")
    if args.mean is not None and len(args.mean) != len(args.std):
        raise UsageError(f"--mean has {len(args.mean)} values but --std has {len(args.std)}; give one per channel")
    if args.weights is not None:
        _check_path("--weights", args.weights)
    return {
        "model_args": args.model_args,
        "weights": args.weights,
        "mean": args.mean,
        "std": args.std,
        "allow_torchscript": args.allow_torchscript,
    }


def _load_model(args: argparse.Namespace, device: Any) -> tuple[Any, str]:
    from segrobust.benchmark.defaults import DEFAULT_MODEL_SPEC, load_default_model
    from segrobust.benchmark.registry import DEFENSES
    from segrobust.models import ModelLoadError, SegmentationModel, load_model

    options = _model_options(args)
    if args.model is None:
        if args.model_args or args.weights:
            raise UsageError("--model-args and --weights need --model (a spec or module:callable)")
        model = load_default_model(device, progress=not args.no_progress)
        if args.mean is not None:
            model = SegmentationModel(model, mean=args.mean, std=args.std).to(device)
        name = f"default ({DEFAULT_MODEL_SPEC}, trained on SyntheticStreets)"
    else:
        path_part = args.model.rpartition("@")[2] if not os.path.lexists(args.model) else args.model
        if os.path.lexists(path_part):
            _check_path("--model", path_part)  # a looping or unreadable link says so, not "does not exist"
        try:
            model = load_model(args.model, num_classes=args.num_classes, device=device, seed=args.seed, **options)
        except ModelLoadError as error:
            raise UsageError(f"--model: {error}") from None
        name = args.model
    if args.defense:
        kind, path = _check_defense(args.defense)
        try:
            model = DEFENSES[kind].load(model, path, num_classes=args.num_classes, device=device).to(device).eval()
        except Exception as error:  # hostile, truncated or mismatched files end here, whatever they raise
            if isinstance(error, MemoryError):
                raise
            reason = _one_line(error)
            raise UsageError(
                f"--defense {kind}: {reason if str(path) in reason else f'cannot load {path}: {reason}'}"
            ) from None
        name = f"{name} + {kind} defence ({path})"
    return model, name


def _benchmark(args: argparse.Namespace) -> int:
    import torch

    from segrobust.attacks import NonFiniteGradientError
    from segrobust.benchmark import BenchmarkConfig, run_benchmark
    from segrobust.benchmark.defaults import DEFAULT_EVAL_IMAGES
    from segrobust.distributed import init_distributed, is_main_process
    from segrobust.models import ModelLoadError

    _apply_fast(args, ["num_images", "size", "steps", "eps", "batch_size"])
    builtin = args.model is None and args.dataset == "synthetic"
    if args.steps is None:
        args.steps = 5 if builtin else 10
    if args.reliable_steps is None:
        args.reliable_steps = _BUILTIN_RELIABLE_STEPS if builtin or args.fast else 100
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        attack_kwargs = json.loads(args.attack_args) if args.attack_args else None
        if attack_kwargs is not None and not isinstance(attack_kwargs, dict):
            raise ValueError("expected a JSON object")
    except ValueError as error:
        raise UsageError(f'--attack-args must be a JSON object like \'{{"eroseg": {{"q0": 0.3}}}}\': {error}') from None
    device = _resolve_device(args.device)
    try:
        config = BenchmarkConfig(
            attacks=args.attacks,
            eps_list=args.eps or ["2/255", "4/255", "8/255"],
            rain=args.rain,
            steps=args.steps,
            alpha=args.alpha,
            random_start=not args.no_random_start,
            batch_size=args.batch_size or 8,
            device=device,
            seed=args.seed,
            out_dir=args.out,
            resume=args.resume,
            progress=not args.no_progress,
            num_workers=args.workers,
            num_examples=args.examples,
            attack_kwargs=attack_kwargs,
            reliable_steps=args.reliable_steps,
        )
        _check_defense(args.defense)
        data, data_name = _dataset(args, "val", DEFAULT_EVAL_IMAGES)
        if args.model is None:
            _ensure_default_model(progress=not args.no_progress)
        init_distributed()
        model, model_name = _load_model(args, device)
        settings = _recorded_settings(
            args,
            attacks=config.attacks or "none",
            rain=config.rain or "none",
            eps=config.eps_list,
            batch_size=config.batch_size,
            num_images=args.num_images or len(data),
            size=args.size or ((96, 128) if args.dataset == "synthetic" else None),
        )
        metadata = {
            "model_name": model_name,
            "dataset_name": data_name,
            "defense": args.defense,
            "command": "segrobust " + " ".join(sys.argv[1:]),
            "cli": settings,
        }
        started = time.perf_counter()
        results = run_benchmark(model, data, config.replace(metadata=metadata))
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError, OSError, NonFiniteGradientError) as error:  # bad settings, data, model or folder
        raise UsageError(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__) from None
    if is_main_process():
        _print_summary(results, args.format)
        headline = results.headline() if args.format in ("table", "markdown") else ""
        if headline:
            print(f"\n{headline}")
        out = Path(args.out)
        files = [
            name
            for name in (
                "results.json",
                "report.md",
                "miou_vs_eps.png",
                "convergence.png",
                "examples.png",
                "rain_examples.png",
            )
            if (out / name).exists()
        ]
        closing = (
            f"{results.num_images} images, {time.perf_counter() - started:.1f} s. Wrote {', '.join(files)} to {out}/"
        )
        if args.format in ("json", "csv"):  # stdout stays machine-readable
            print(closing, file=sys.stderr)
        else:
            print(f"\n{closing}")
    return 0


# ----------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    import torch

    from segrobust.distributed import init_distributed, is_main_process
    from segrobust.models import save_model
    from segrobust.training import get_recipe

    RECIPES = _recipes()

    try:
        recipe = get_recipe(args.recipe, RECIPES)
    except KeyError as error:
        raise UsageError(error.args[0]) from None
    if args.fast:
        args.num_images, args.size = args.num_images or 8, args.size or (48, 64)
        args.batch_size, args.epochs = args.batch_size or 4, 1
    try:
        settings = recipe.config(**_train_options(args, recipe))  # checked before any model or data is loaded
    except (TypeError, ValueError) as error:
        raise UsageError(f"--recipe {recipe.name}: {str(error).strip().splitlines()[0]}") from None
    _check_out_folder(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _resolve_device(args.device)
    init_distributed()
    model, spec, num_classes = _train_model(args, device)
    train_data, data_name = _dataset(args, "train", 200)
    val_data, _ = _dataset(
        argparse.Namespace(**{**vars(args), "num_images": min(args.num_images or 50, 50)}), "val", 50
    )
    out = Path(args.out)
    config = recipe.config(
        settings,
        num_classes=num_classes,
        batch_size=args.batch_size or 8,
        seed=args.seed,
        device=device,
        num_workers=args.workers,
        eval_data=val_data,
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        progress=not args.no_progress,
    )
    model.train()
    result = recipe(model, train_data, config)
    if is_main_process():
        settings = _recorded_settings(args, batch_size=config.batch_size)
        metadata = {
            "recipe": recipe.name,
            "dataset": data_name,
            "epochs": config.epochs,
            "seed": args.seed,
            "config": settings,
            "history": json.loads(json.dumps(result.history, default=float)),
        }
        path = save_model(model.eval(), out / "model.pt", spec, num_classes, metadata=metadata)
        (out / "history.json").write_text(json.dumps(result.history, indent=2, default=float) + "\n", encoding="utf-8")
        (out / "config.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        last = result.history[-1] if result.history else {}
        scores = ", ".join(
            f"{k} {v:.4f}" for k, v in last.items() if isinstance(v, float) and ("miou" in k or k == "loss")
        )
        print(f"trained {recipe.name} for {config.epochs} epoch(s) on {data_name}: {scores}")
        saved, bench = [str(path)], [f"--model {path}"]
        for name, artifact in result.artifacts.items():
            written = artifact.write(out / name)
            saved.append(str(written))
            if artifact.benchmark_option:
                bench.append(artifact.benchmark_option.format(path=written))
        print(f"saved {' and '.join(saved)}; evaluate with: segrobust benchmark {' '.join(bench)}")
    return 0


# flag (argparse dest) -> recipe config field; only flags the user gave are passed on
_TRAIN_FLAGS = {
    "lr": "lr",
    "optimizer": "optimizer",
    "eps": "eps",
    "steps": "steps",
    "alpha": "alpha",
    "rain_preset": "rain",
}


def _train_options(args: argparse.Namespace, recipe: Any) -> dict[str, Any]:
    """The recipe options the command line sets; a flag the recipe has no field for is a usage error."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(recipe.config_type)}
    options: dict[str, Any] = {"epochs": args.epochs}
    for dest, name in _TRAIN_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if name not in fields:
            raise UsageError(f"--{dest.replace('_', '-')} is not an option of recipe {recipe.name!r}")
        options[name] = value
    if args.fast and "steps" in fields:
        options["steps"] = min(options.get("steps", fields["steps"].default), 2)
        args.steps = options["steps"]  # recorded as the effective setting
    return options


def _train_model(args: argparse.Namespace, device: Any) -> tuple[Any, str, int]:
    """``(model, spec, num_classes)`` of ``--model``: a spec, SPEC@weights or a segrobust checkpoint to continue."""
    from segrobust.models import (
        CHECKPOINT_FORMAT,
        ModelLoadError,
        load_model,
        load_state_dict_file,
        parse_model_spec,
    )

    unsupported = [
        flag
        for flag, value in (
            ("--model-args", args.model_args),
            ("--mean", args.mean),
            ("--std", args.std),
            ("--allow-torchscript", args.allow_torchscript),
        )
        if value
    ]
    if unsupported:
        raise UsageError(
            f"{unsupported[0]} is not supported by 'segrobust train', which trains smp specs "
            "(use --weights to start from a state_dict)"
        )
    if args.weights is not None:
        _check_path("--weights", args.weights)
    try:
        num_classes, spec = args.num_classes or 11, args.model
        if "@" in spec and not Path(spec).exists():
            spec = spec.partition("@")[0]
        elif Path(spec).exists():
            stored = load_state_dict_file(spec)
            if not (isinstance(stored, dict) and stored.get("format") == CHECKPOINT_FORMAT):
                raise UsageError(
                    f"--model {spec}: training starts from a spec or a segrobust checkpoint (model.pt), not this file"
                )
            spec, num_classes = str(stored["spec"]), int(stored["num_classes"])
        parse_model_spec(spec)
        model = load_model(args.model, num_classes=num_classes, device=device, seed=args.seed, weights=args.weights)
        return model, spec, num_classes
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise UsageError(str(error).strip().splitlines()[0]) from None


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``segrobust`` console script; returns the exit code."""
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a CPU shared with other
    # processes, spinning OpenMP threads made a 2-thread run 8x slower than a 1-thread one (measured);
    # on an idle machine the difference is small. Set OMP_WAIT_POLICY yourself to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"segrobust {args.command}"
    try:
        args = _parse(parser, argv)
        return {"benchmark": _benchmark, "train": _train, "list": _list}[args.command](args)
    except UsageError as error:
        _say(f"{prog}: error: {error}")
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "out", None)
        _say(f"{prog}: interrupted; finished batches are kept in {where}/: rerun the same command with --resume")
        return 130
    except Exception as error:
        if os.environ.get("SEGROBUST_DEBUG", "") not in ("", "0"):
            raise
        if _is_expected(error):
            _say(f"{prog}: error: {_one_line(error)}")
            return 2
        _say(
            f"{prog}: internal error: {_one_line(error)} (a bug in segrobust: rerun with SEGROBUST_DEBUG=1 "
            "for the traceback and report it)"
        )
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
