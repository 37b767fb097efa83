"""``segrobust benchmark``: the options as a BenchmarkConfig, the model and data loaded, the run, the summary."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from segrobust.benchmark.defaults import BENCHMARK_RUN
from segrobust.cli.config_files import recorded_settings
from segrobust.cli.errors import UsageError
from segrobust.cli.loading import check_defense, dataset, ensure_default_model, load_benchmark_model, resolve_device
from segrobust.cli.options import Invocation
from segrobust.utils import error_line

__all__ = ["run"]


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
    )


def _metadata(options: Any, config: Any, data: Any, data_name: str, model_name: str) -> dict[str, Any]:
    """What ``results.json`` records of the command line: enough to replay the run with ``--config``."""
    settings = recorded_settings(
        vars(options),
        attacks=config.attacks or "none",
        rain=config.rain or "none",
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
        model, model_name = load_benchmark_model(options, device)
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


def _print_closing(results: Any, options: Any, seconds: float) -> None:
    """Images, time and the files written; on stderr when stdout is machine-readable."""
    out = options.out
    names = ", ".join(path.name for path in results.files.values())
    closing = f"{results.num_images} images, {seconds:.1f} s. Wrote {names} to {out}/"
    if options.format in ("json", "csv"):  # stdout stays machine-readable
        print(closing, file=sys.stderr)
    else:
        print(f"\n{closing}")
