"""``segrobust benchmark``: the options as a BenchmarkConfig, the model and data loaded, the run, the summary."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from segrobust.attacks.ensemble import RELIABLE_PRESETS
from segrobust.benchmark.config import BenchmarkConfig
from segrobust.benchmark.defaults import (
    BENCHMARK_RUN,
    BUILTIN_RUN,
    DEFAULT_EPS,
    DEFAULT_RELIABLE_PRESET,
    DEFAULT_STEPS,
    FAST_BENCHMARK_RUN,
)
from segrobust.benchmark.functional import format_eps
from segrobust.cli import arguments as types
from segrobust.cli.config_files import recorded_settings
from segrobust.cli.errors import UsageError
from segrobust.cli.flags import (
    Flags,
    add_model_flags,
    add_shared_flags,
    field_default,
)
from segrobust.cli.loading import check_defense, dataset, ensure_default_model, load_benchmark_model, resolve_device
from segrobust.cli.options import Invocation
from segrobust.utils import error_line

__all__ = ["AMP_CHOICES", "FORMATS", "add_flags", "run"]

#: ``--format`` choices.
FORMATS = ("table", "json", "csv", "markdown")
#: ``--amp`` choices (names of `segrobust.validation.AMP_DTYPES`).
AMP_CHOICES = ("bf16", "fp16")


# ----------------------------------------------------------------------------- flags
def add_flags(commands: Any) -> None:
    """The ``benchmark`` sub-command and its flags."""
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
        "SPEC@state_dict.pt, module:callable (torchvision.models.segmentation:lraspp_mobilenet_v3_large), "
        "hf:CLASS (a transformers class with --model-args '{\"config\": {...}}', random weights), hf:PATH (a local "
        "save_pretrained folder) or a TorchScript file with --allow-torchscript (default: the built-in default model)",
    )
    flags.add(
        model,
        "--defense",
        metavar="KIND:PATH",
        help="defence to evaluate: depth:PATH (DepthMultiTask checkpoint) or pearl:PATH",
    )
    add_model_flags(flags, model)
    _evaluation_flags(flags, model)
    _precision_flags(flags, bench)
    _attack_flags(flags, bench)
    _corruption_flags(flags, bench)
    out = bench.add_argument_group("output")
    flags.add(
        out, "--out", default=BENCHMARK_RUN.out, metavar="DIR", help=f"output folder (default ./{BENCHMARK_RUN.out})"
    )
    flags.add(
        out,
        "--examples",
        type=types.non_negative_int,
        default=field_default(BenchmarkConfig, "num_examples"),
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
    add_shared_flags(
        flags,
        out,
        "A results.json replays its run (see docs/benchmark.md for what a replay may do).",
        BENCHMARK_RUN,
        FAST_BENCHMARK_RUN,
    )
    bench.option_defaults = flags.defaults


def _evaluation_flags(flags: Flags, model: Any) -> None:
    """How the model is read and run: its logits' entry, sliding windows, test-time augmentation."""
    flags.add(
        model,
        "--output-key",
        metavar="KEY",
        help="the entry of the model's output holding the logits (a dict key or attribute, e.g. logits); "
        "refused when its channels are not the classes",
    )
    flags.add(
        model,
        "--slide",
        type=types.sliding_window,
        metavar="HxW:SHxSW",
        help="sliding-window inference (mmsegmentation's slide mode): HxW crops every SHxSW pixels, logits "
        "averaged where they overlap; inside --defense, so a defence sees the whole image",
    )
    flags.add(
        model,
        "--tta",
        type=types.scale_list,
        metavar="S1,S2,...",
        help="multi-scale + flip test-time augmentation at these scales, e.g. 0.75,1,1.25 (softmax averaged), "
        "around --slide and --defense",
    )
    flags.add(model, "--no-tta-flip", action="store_true", help="--tta without the mirrored copies")


def _precision_flags(flags: Flags, bench: argparse.ArgumentParser) -> None:
    precision = bench.add_argument_group("precision and speed")
    flags.add(
        precision,
        "--amp",
        choices=AMP_CHOICES,
        help="run every forward of the model (clean, rain, corruptions, attacks) under torch.autocast in "
        "bfloat16 or float16; losses, attack steps and the ε projection stay float32",
    )
    flags.add(
        precision,
        "--channels-last",
        action="store_true",
        help="model weights and inputs in channels_last memory format (faster convolutions on recent GPUs)",
    )
    flags.add(
        precision,
        "--compile",
        action="store_true",
        help="torch.compile the model once; its first calls compile (about a minute on CPU for the default "
        "model, per input shape and for the gradient pass)",
    )


def _corruption_flags(flags: Flags, bench: argparse.ArgumentParser) -> None:
    group = bench.add_argument_group("corruptions")
    flags.add(
        group,
        "--corruptions",
        type=types.corruption_list,
        default=BENCHMARK_RUN.corruptions,
        metavar="LIST",
        help="common corruptions: names or families (noise, blur, weather, digital, rain), 'all' (the 15 of "
        "ImageNet-C and rain) or 'none' (default); 'segrobust list' lists them",
    )
    severities = list(field_default(BenchmarkConfig, "severities"))
    flags.add(
        group,
        "--severities",
        type=types.severity_list,
        default=severities,
        metavar="LIST",
        help=f"corruption severities in 1-5, e.g. 1,3,5 or 1-5 (default {severities[0]}-{severities[-1]}; "
        "rain has 1-3: its light, medium and heavy presets)",
    )


def _attack_flags(flags: Flags, bench: argparse.ArgumentParser) -> None:
    attack = bench.add_argument_group("attacks")
    flags.add(
        attack,
        "--attacks",
        default=BENCHMARK_RUN.attacks,
        metavar="LIST",
        help="comma-separated attacks, 'all' (default: the reliable evaluation and the short attacks), 'short' "
        "(the short attacks alone: upper bounds on robustness) or 'none'",
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
        help="L∞ budgets in (0, 1] (default " + ",".join(format_eps(e) for e in DEFAULT_EPS) + ")",
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
        "--reliable-preset",
        default=DEFAULT_RELIABLE_PRESET,
        choices=sorted(RELIABLE_PRESETS),
        help=f"the reliable evaluation (segrobust list shows each): default ({DEFAULT_RELIABLE_PRESET}; "
        f"{BUILTIN_RUN.reliable_preset}, a smoke test, for the built-in default and --fast), sea (SEA's protocol)",
    )
    flags.add(
        attack,
        "--reliable-steps",
        type=types.positive_int,
        metavar="N",
        help="iterations of every member of the reliable evaluation (default: the preset's; "
        f"{BUILTIN_RUN.reliable_steps} in the built-in default)",
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


# ----------------------------------------------------------------------------- the run
def _config(options: Any, device: Any) -> Any:
    """The [BenchmarkConfig][segrobust.benchmark.BenchmarkConfig] of the options (checked: bad values fail here)."""
    from segrobust.benchmark import BenchmarkConfig

    return BenchmarkConfig(
        attacks=options.attacks,
        eps_list=options.eps,
        rain=options.rain,
        steps=options.steps,
        alpha=options.alpha,
        random_start=not options.no_random_start,
        batch_size=options.batch_size,
        device=device,
        seed=options.seed,
        out_dir=options.out,
        resume=options.resume,
        progress=not options.no_progress,
        num_workers=options.workers,
        num_examples=options.examples,
        attack_kwargs=options.attack_args,
        reliable_steps=options.reliable_steps,
        reliable_preset=options.reliable_preset,
        num_classes=options.num_classes,
        corruptions=options.corruptions,
        severities=options.severities,
        amp=options.amp,
    )


def _check_combinations(invocation: Invocation) -> None:
    """Flags that only qualify another one need it (before anything is loaded)."""
    options = invocation.options
    if invocation.is_given("severities") and options.corruptions in ("none", []):
        raise UsageError("--severities sets the levels of --corruptions: give --corruptions LIST|all too")
    if options.no_tta_flip and not options.tta:
        raise UsageError("--no-tta-flip turns off the mirrored copies of --tta: give --tta SCALES too")


def _first_image(data: Any) -> Any:
    item = data[0]
    return item["image"] if isinstance(item, dict) else item[0]


def _metadata(options: Any, config: Any, data: Any, data_name: str, model_name: str) -> dict[str, Any]:
    """What ``results.json`` records of the command line: enough to replay the run with ``--config``."""
    settings = recorded_settings(
        vars(options),
        attacks=config.attacks or "none",
        rain=config.rain or "none",
        corruptions=config.corruptions or "none",
        severities=config.severities,
        eps=config.eps_list,
        batch_size=config.batch_size,
        num_images=options.num_images or len(data),
        size=options.size or (BENCHMARK_RUN.synthetic_size if options.dataset == "synthetic" else None),
    )
    return {
        "model_name": model_name,
        "dataset_name": data_name,
        "defense": options.defense,
        "command": "segrobust " + " ".join(sys.argv[1:]),
        "cli": settings,
    }


def run(invocation: Invocation) -> int:
    """Run the benchmark of ``invocation``; print the summary and what was written."""
    import torch

    from segrobust.attacks import NonFiniteGradientError
    from segrobust.benchmark import run_benchmark
    from segrobust.distributed import init_distributed, is_main_process
    from segrobust.models import ModelLoadError

    options = invocation.options
    _check_combinations(invocation)
    if options.threads:
        torch.set_num_threads(options.threads)
    device = resolve_device(options.device)
    try:
        config = _config(options, device)
        check_defense(options.defense)
        data, data_name = dataset(options, "val", BENCHMARK_RUN.synthetic_images, BENCHMARK_RUN.synthetic_size)
        if options.model is None:
            ensure_default_model(progress=not options.no_progress)
        init_distributed()
        model, model_name = load_benchmark_model(options, device, _first_image(data) if options.compile else None)
        metadata = _metadata(options, config, data, data_name, model_name)
        started = time.perf_counter()
        results = run_benchmark(model, data, config.replace(metadata=metadata))
    except ModelLoadError as error:
        raise UsageError(str(error)) from None
    except (ValueError, TypeError, OSError, NonFiniteGradientError) as error:  # bad settings, data, model or folder
        raise UsageError(error_line(error)) from None
    if is_main_process():
        _print_summary(results, options.format)
        _print_closing(results, options, time.perf_counter() - started)
    return 0


def _print_summary(results: Any, style: str) -> None:
    """The summary on stdout: the human table (and the headline), JSON or CSV records, or a markdown table."""
    if style == "json":
        print(json.dumps(results.to_records(), indent=2, allow_nan=False))
    elif style == "csv":
        sys.stdout.write(results.to_csv())
    else:
        print(results.table("markdown" if style == "markdown" else "plain"))
        headline = results.headline()
        if headline:
            print(f"\n{headline}")
        if any(row.kind == "corruption" for row in results.rows):
            print("\n" + "\n".join(_card_lines(results)))


def _card_lines(results: Any) -> list[str]:
    """The robustness card as aligned text: condition, mIoU, share of clean, what the number is."""
    entries = results.robustness_card()
    width = max(len(entry["label"]) for entry in entries)
    lines = ["Robustness card (robustness_card.png):"]
    for entry in entries:
        miou = "–" if entry["miou"] is None else f"{100 * entry['miou']:.1f} %"
        share = "" if entry["relative"] is None else f"{100 * entry['relative']:.0f} % of clean"
        lines.append(f"  {entry['label'].ljust(width)}  {miou:>7}  {share:>14}  {entry['detail']}".rstrip())
    return lines


def _print_closing(results: Any, options: Any, seconds: float) -> None:
    """Images, time and the files written; on stderr when stdout is machine-readable."""
    out = options.out
    names = ", ".join(path.name for path in results.files.values())
    closing = f"{results.num_images} images, {seconds:.1f} s. Wrote {names} to {out}/"
    if options.format in ("json", "csv"):  # stdout stays machine-readable
        print(closing, file=sys.stderr)
    else:
        print(f"\n{closing}")
