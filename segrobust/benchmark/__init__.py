"""How robust is a segmentation model to rain and to attacks, and does a defence help?

:func:`evaluate` runs a model on a data set clean, under the rain presets and
under every registered attack at several L∞ budgets, adds the per-image
worst case over the attacks, and returns :class:`BenchmarkResults` (tables,
``results.json``, ``report.md`` and figures). It resumes from per-batch
partial results and shards batches over ``torch.distributed`` ranks with
results identical to one process. ``segrobust benchmark`` is a thin
command-line layer over it.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from segrobust.benchmark import evaluate
    >>> data = [(torch.rand(3, 8, 8), torch.randint(0, 2, (8, 8))) for _ in range(4)]
    >>> results = evaluate(nn.Conv2d(3, 2, 1), data, attacks="naa,ama", eps_list=["4/255"], rain="none", steps=1, progress=False)
    >>> [row.kind for row in results.rows]
    ['clean', 'attack', 'positive', 'worst']
"""

from segrobust.benchmark import functional
from segrobust.benchmark.core import (
    DEFAULT_EPS,
    BenchmarkPlan,
    Condition,
    build_conditions,
    evaluate,
    plan_evaluation,
    run_plan,
)
from segrobust.benchmark.defaults import (
    DEFAULT_EVAL_IMAGES,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_MODEL_SPEC,
    default_dataset,
    load_default_model,
    train_default_model,
)
from segrobust.benchmark.plots import plot_examples, plot_miou_vs_eps, plot_rain_examples
from segrobust.benchmark.registry import (
    ATTACKS,
    DEFENSES,
    RECIPES,
    UnavailableError,
    available_attacks,
    available_rain_presets,
    register_attack,
    register_defense,
    register_recipe,
)
from segrobust.benchmark.report import render_markdown, write_report
from segrobust.benchmark.results import BenchmarkResults, ConditionResult
from segrobust.benchmark.storage import ResumeMismatchError

__all__ = [
    "ATTACKS",
    "DEFAULT_EPS",
    "DEFAULT_EVAL_IMAGES",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MODEL_SPEC",
    "DEFENSES",
    "RECIPES",
    "BenchmarkPlan",
    "BenchmarkResults",
    "Condition",
    "ConditionResult",
    "ResumeMismatchError",
    "UnavailableError",
    "available_attacks",
    "available_rain_presets",
    "build_conditions",
    "default_dataset",
    "evaluate",
    "functional",
    "load_default_model",
    "plan_evaluation",
    "plot_examples",
    "plot_miou_vs_eps",
    "plot_rain_examples",
    "register_attack",
    "register_defense",
    "register_recipe",
    "render_markdown",
    "run_plan",
    "train_default_model",
    "write_report",
]
