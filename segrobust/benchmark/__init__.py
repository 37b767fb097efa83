"""How robust is a segmentation model to rain and to attacks, and does a defence help?

[run_benchmark][segrobust.benchmark.run_benchmark] runs a model on a data set
clean, under the rain presets and under every registered attack at several L∞
budgets (the reliable APGD ensemble, key ``"reliable"``, and the short
attacks beside it), adds the per-image worst case over the attacks, and returns
[BenchmarkResults][segrobust.benchmark.BenchmarkResults] (tables,
``results.json``, ``report.md`` and figures). Its settings are one
[BenchmarkConfig][segrobust.benchmark.BenchmarkConfig]. It resumes from
per-batch partial results and shards batches over ``torch.distributed`` ranks
with results identical to one process. ``segrobust benchmark`` is a thin
command-line layer over it.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from segrobust.benchmark import BenchmarkConfig, run_benchmark
    >>> data = [(torch.rand(3, 8, 8), torch.randint(0, 2, (8, 8))) for _ in range(4)]
    >>> config = BenchmarkConfig(attacks="naa,ama", eps_list=["4/255"], rain="none", steps=1, progress=False)
    >>> results = run_benchmark(nn.Conv2d(3, 2, 1), data, config)
    >>> [row.kind for row in results.rows]
    ['clean', 'attack', 'positive', 'worst']
"""

from segrobust.benchmark import functional
from segrobust.benchmark.config import DEFAULT_EPS, BenchmarkConfig
from segrobust.benchmark.core import (
    Condition,
    ModelOutputError,
    build_conditions,
    run_benchmark,
)
from segrobust.benchmark.data import DataError
from segrobust.benchmark.defaults import (
    DEFAULT_EVAL_IMAGES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MODEL_SPEC,
    default_dataset,
    load_default_model,
    train_default_model,
)
from segrobust.benchmark.plots import (
    plot_convergence,
    plot_examples,
    plot_miou_vs_eps,
    plot_rain_examples,
)
from segrobust.benchmark.registry import (
    ATTACKS,
    DEFENSES,
)
from segrobust.benchmark.report import render_markdown, write_report
from segrobust.benchmark.results import BenchmarkResults, ConditionResult
from segrobust.benchmark.storage import OutputFolderError, ResumeMismatchError

__all__ = [
    "ATTACKS",
    "DEFAULT_EPS",
    "DEFAULT_EVAL_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MODEL_SPEC",
    "DEFENSES",
    "BenchmarkConfig",
    "BenchmarkResults",
    "Condition",
    "ConditionResult",
    "DataError",
    "ModelOutputError",
    "OutputFolderError",
    "ResumeMismatchError",
    "build_conditions",
    "default_dataset",
    "functional",
    "load_default_model",
    "plot_convergence",
    "plot_examples",
    "plot_miou_vs_eps",
    "plot_rain_examples",
    "render_markdown",
    "run_benchmark",
    "train_default_model",
    "write_report",
]
