"""``run_benchmark``: clean, rain, corrupted and attacked accuracy of a segmentation model, resumable and distributed.

Work is cut into *units*: one condition (clean, a rain preset, a corruption at
one severity, an attack at one ε) on one batch. Batch ``b`` always holds samples ``b·B … (b+1)·B − 1``
and every random draw of a unit is seeded from ``(seed, condition, ε, b)``
(rain and corruptions: from the sample index), never from the process rank
or from the order of work. So:

- with ``out_dir`` each unit is written atomically when done, and a resumed
  run skips finished units and ends with exactly the numbers of an
  uninterrupted run;
- under ``torch.distributed`` rank ``r`` takes batches ``r, r + W, …``; the
  per-condition confusion matrices and per-image accuracies are summed over
  ranks, giving exactly the single-process numbers.

A run is a sequence of named stages: plan (check the model and settings),
load (check every item, fingerprint every batch), prepare the output folder
(lock, ownership, manifest), run the units, reduce over ranks, build the rows,
write the report.
"""

from __future__ import annotations

import contextlib
import math
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from segrobust import distributed
from segrobust.attacks.ensemble import EnsembleStats
from segrobust.benchmark import functional as BF
from segrobust.benchmark import reliable as R
from segrobust.benchmark.checks import gradient_masking_checks
from segrobust.benchmark.conditions import Condition
from segrobust.benchmark.config import DEFAULT_EPS, RAIN_REFERENCE_HEIGHT, BenchmarkConfig
from segrobust.benchmark.data import BatchSource, CheckedItems, DataError
from segrobust.benchmark.registry import ATTACKS
from segrobust.benchmark.results import BenchmarkResults, ConditionResult
from segrobust.benchmark.storage import REPORT_FILES, OutputFolder, UnitStore, fingerprint
from segrobust.losses import inverse_frequency_weights
from segrobust.metrics.functional import (
    class_iou,
    mean_class_accuracy,
    mean_iou,
    per_image_confusion,
    per_image_pixel_accuracy,
    pixel_accuracy,
)
from segrobust.utils import error_line, model_mode_preserved, predicted_classes, segmentation_logits
from segrobust.validation import check_class_ids

__all__ = [
    "DEFAULT_EPS",
    "RAIN_REFERENCE_HEIGHT",
    "Condition",
    "DataError",
    "ModelOutputError",
    "build_conditions",
    "run_benchmark",
]

Unit = dict[str, Any]


class ModelOutputError(ValueError):
    """The model's output cannot be scored: wrong shape, or NaN / infinite logits."""


def build_conditions(
    attacks: Sequence[str],
    eps_list: Sequence[float],
    rain: Sequence[str],
    corruptions: Sequence[str] = (),
    severities: Sequence[int] = (),
) -> list[Condition]:
    """Conditions in report order: clean, rain presets, corruptions (each severity), attacks, positive attacks (each ε).

    The rain family of the corruptions is evaluated as the rain presets of its
    severities (``RAIN_SEVERITY_PRESETS``), each preset once.

    Examples:
        >>> [c.tag for c in build_conditions(["naa", "ama"], [4 / 255], ["heavy"])]
        ['clean', 'rain-heavy', 'naa@eps4', 'ama@eps4']
        >>> [c.tag for c in build_conditions([], [], ["heavy"], ["fog", "rain"], [1, 3])]
        ['clean', 'rain-light', 'rain-heavy', 'corruption-fog@s1', 'corruption-fog@s3']
    """
    from segrobust.corruptions import CORRUPTIONS, RAIN_SEVERITY_PRESETS
    from segrobust.rain import RAIN_PRESETS

    family_rain = [
        RAIN_SEVERITY_PRESETS[s - 1] for s in severities if "rain" in corruptions and s <= len(RAIN_SEVERITY_PRESETS)
    ]
    presets = [name for name in RAIN_PRESETS if name in rain or name in family_rain]
    conditions = [Condition("clean", "Clean", "clean")]
    conditions += [Condition(f"rain:{name}", f"Rain ({name.replace('_', ' ')})", "rain") for name in presets]
    for name in corruptions:
        entry = CORRUPTIONS[name]
        if entry.family == "rain":
            continue
        conditions += [
            Condition(f"corruption:{name}", entry.display_name, "corruption", severity=s)
            for s in severities
            if s in entry.severities
        ]
    for positive in (False, True):
        for key in attacks:
            entry = ATTACKS[key]
            if entry.positive != positive:
                continue
            for index, eps in enumerate(eps_list):
                kind = "positive" if positive else "attack"
                conditions.append(Condition(key, entry.display_name, kind, float(eps), index))
    return conditions


def _rainy(
    images: torch.Tensor,
    depth: Optional[torch.Tensor],
    indices: torch.Tensor,
    preset: str,
    seed: int,
    reference_height: Optional[int],
) -> torch.Tensor:
    """Rain drawn per sample from a generator seeded by ``(seed, preset, sample index)``."""
    from segrobust.corruptions import rain_preset

    generators = [torch.Generator().manual_seed(BF.unit_seed(seed, "rain", preset, int(i))) for i in indices.tolist()]
    return rain_preset(images, preset, generators, depth, reference_height)


def _corrupted(images: torch.Tensor, indices: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """Corruption ``name`` at ``severity``, drawn per sample from a generator seeded by ``(seed, name, severity, index)``."""
    from segrobust.corruptions import corrupt

    generators = [
        torch.Generator().manual_seed(BF.unit_seed(seed, "corruption", name, severity, int(i)))
        for i in indices.tolist()
    ]
    return corrupt(images, name, severity, generators)


def _versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, read from package metadata (nothing is imported)."""
    from importlib import metadata

    import segrobust

    versions = {
        "segrobust": segrobust.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
    }
    for name in ("torchvision", "segmentation-models-pytorch", "timm", "kornia", "torchattacks", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["platform"] = platform.platform()
    return versions


def _check_logits(logits: torch.Tensor, where: str) -> torch.Tensor:
    if not bool(torch.isfinite(logits).all()):
        raise ModelOutputError(f"the model returned NaN or infinite logits on {where}; check its weights and inputs")
    return logits


# ----------------------------------------------------------------------------- stage 1: plan
@dataclass
class _Plan:
    """What the run does, fixed before any work: checked model, classes, conditions, batches, settings."""

    model: nn.Module
    dataset: Any
    config: BenchmarkConfig
    device: torch.device
    world: int
    rank: int
    num_items: int
    num_classes: int
    class_names: list[str]
    image_size: tuple[int, int]
    conditions: list[Condition]
    batches: list[list[int]]
    mine: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    reliable: Optional[R.EnsemblePlan] = None  # the reliable evaluation's members, when it runs
    class_weights: Optional[torch.Tensor] = None  # SEA's class weights of the data, when a member asks


def _run_device(model: nn.Module, device: Any) -> torch.device:
    parameters = list(model.parameters()) + list(model.buffers())
    model_device = parameters[0].device if parameters else torch.device("cpu")
    run_device = torch.device(device) if device is not None else model_device
    if (
        parameters
        and run_device != model_device
        and not (run_device.type == model_device.type == "cuda" and run_device.index is None)
    ):
        raise ValueError(
            f"model is on {model_device} but device={run_device}; move it first with model.to({str(run_device)!r})"
        )
    return run_device


def _scores(model: nn.Module, images: torch.Tensor, amp: Optional[torch.dtype]) -> torch.Tensor:
    """The model's logits on ``images`` without gradient, under ``torch.autocast(amp)`` when set, in float32 or wider."""
    with torch.no_grad(), torch.autocast(images.device.type, dtype=amp, enabled=amp is not None):
        logits = segmentation_logits(model(images))
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _classes_of_model(
    model: nn.Module, dataset: Any, device: torch.device, amp: Optional[torch.dtype]
) -> tuple[int, dict[str, torch.Tensor]]:
    """Run the model once on item 0: clear errors for wrong outputs; returns the number of classes and the item."""
    first = CheckedItems(dataset, None, None, 255)[0]
    if first[2] is not None:
        raise DataError(first[2])
    item = first[1]
    image, mask = item["image"], item["mask"]
    with model_mode_preserved(model):
        model.eval()
        try:
            logits = _scores(model, image.unsqueeze(0).to(device), amp)
        except (RuntimeError, ValueError, TypeError) as error:
            raise ModelOutputError(
                f"the model fails on an image of shape {tuple(image.shape)}: {error_line(error)}"
            ) from None
    if logits.shape[-2:] != mask.shape:
        raise ModelOutputError(
            f"model output {tuple(logits.shape)} does not match masks {tuple(mask.shape)}: "
            "the model must return logits (N, K, H, W) at the input resolution"
        )
    _check_logits(logits, "dataset item 0")
    return int(logits.shape[1]), item


def _class_names(dataset: Any, given: Optional[list[str]], num_classes: int) -> list[str]:
    names = given if given is not None else getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    if names is None and num_classes == 11:
        from segrobust.datasets.functional import CAMVID_CLASSES

        names = CAMVID_CLASSES
    names = [str(name) for name in (names or range(num_classes))][:num_classes]
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def _plan(model: nn.Module, dataset: Any, config: BenchmarkConfig) -> _Plan:
    """Check the model and the data set against the settings; everything a user can get wrong fails here."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
    num_items = len(dataset)
    if num_items == 0:
        raise ValueError("dataset is empty")
    device = _run_device(model, config.device)
    num_classes, first = _classes_of_model(model, dataset, device, config.amp)
    image_size = tuple(first["image"].shape[-2:])
    reliable = None
    for key in config.attacks:  # bad attack arguments fail now, not after the clean pass
        attack = ATTACKS[key].build(
            model,
            eps=config.eps_list[0],
            alpha=config.alpha,
            random_start=config.random_start,
            ignore_index=config.ignore_index,
            **_attack_arguments(config, key),
        )
        reliable = R.ensemble_plan(attack) if ATTACKS[key].reliable else reliable
    if config.num_classes is not None and config.num_classes != num_classes:
        raise ValueError(f"num_classes={config.num_classes} but the model predicts {num_classes} classes")
    check_class_ids(first["mask"], num_classes, config.ignore_index, "dataset masks")
    world, rank = distributed.get_world_size(), distributed.get_rank()
    batches = BF.batch_indices(num_items, config.batch_size)
    plan = _Plan(
        model=model,
        dataset=dataset,
        config=config,
        device=device,
        world=world,
        rank=rank,
        num_items=num_items,
        num_classes=num_classes,
        class_names=_class_names(dataset, config.class_names, num_classes),
        image_size=image_size,
        conditions=build_conditions(
            config.attacks, config.eps_list, config.rain, config.corruptions, config.severities
        ),
        batches=batches,
        mine=list(range(rank, len(batches), world)),
        reliable=reliable,
    )
    plan.settings = _settings(plan)
    plan.manifest = {
        **plan.settings,
        "model": fingerprint(model),
        "data": fingerprint(first["image"]) + fingerprint(first["mask"]),
        "dataset_type": type(dataset).__name__,
    }
    return plan


def _attack_arguments(config: BenchmarkConfig, key: str) -> dict[str, Any]:
    """``steps`` of attack ``key`` (the reliable ensemble: ``reliable_steps`` and its preset), ``amp`` when set
    (so attacks registered without an ``amp`` argument still run) and its ``attack_kwargs``."""
    amp = {} if config.amp is None else {"amp": config.amp}
    if not ATTACKS[key].reliable:
        return {"steps": config.steps, **amp, **config.attack_kwargs.get(key, {})}
    preset = {} if config.reliable_preset is None else {"preset": config.reliable_preset}
    return {"steps": config.reliable_steps, **preset, **amp, **config.attack_kwargs.get(key, {})}


def _settings(plan: _Plan) -> dict[str, Any]:
    """The settings that determine the numbers (recorded in the manifest and in ``results.json``)."""
    config = plan.config
    return {
        "attacks": list(config.attacks),
        "rain": list(config.rain),
        "eps": list(config.eps_list),
        "steps": config.steps,
        **(plan.reliable.settings(config.reliable_steps) if plan.reliable is not None else {}),
        "alpha": config.alpha,
        "random_start": config.random_start,
        "batch_size": config.batch_size,
        "num_classes": plan.num_classes,
        "ignore_index": config.ignore_index,
        "seed": config.seed,
        "num_images": plan.num_items,
        "image_size": list(plan.image_size),
        "attack_kwargs": config.attack_kwargs,
        "rain_reference_height": config.rain_reference_height,
        "num_examples": config.num_examples,
        # only when asked for, so that output folders of runs without them still resume
        **({"amp": str(config.amp).removeprefix("torch.")} if config.amp is not None else {}),
        **(
            {"corruptions": list(config.corruptions), "severities": list(config.severities)}
            if config.corruptions
            else {}
        ),
    }


# ----------------------------------------------------------------------------- stage 2: load and check the data
def _agreed(action: Callable[[], Any]) -> Any:
    """Run ``action`` on every rank; if it fails on any rank, fail on all of them (before the next collective)."""
    try:
        value, failure = action(), None
    except (ValueError, TypeError, OSError) as error:
        value, failure = None, error
    if distributed.get_world_size() > 1:
        messages = distributed.all_gather_object(None if failure is None else error_line(failure))
        if failure is None and any(messages):
            rank, message = next((r, m) for r, m in enumerate(messages) if m)
            raise ValueError(f"rank {rank}: {message}")
    if failure is not None:
        raise failure
    return value


def _load_data(plan: _Plan) -> tuple[BatchSource, dict[int, str]]:
    """Every item of this rank's batches loaded and checked once; the fingerprint of each batch.

    A data set without a single labelled pixel (every mask all ``ignore_index``)
    is refused here, before any attack: its mIoU and accuracies would be NaN.
    """
    config = plan.config
    items = CheckedItems(plan.dataset, plan.image_size, plan.num_classes, config.ignore_index)
    source = BatchSource(items, plan.batches, config.num_workers, config.cache_bytes)
    fingerprints = _agreed(lambda: source.check(plan.mine))
    labelled = distributed.reduce_over_ranks(torch.tensor([source.labelled_pixels], dtype=torch.float64))
    if float(labelled.sum()) == 0:
        raise DataError(
            f"every pixel of the data set ({type(plan.dataset).__name__}, {plan.num_items} images) is "
            f"ignore_index={config.ignore_index}: there is nothing to evaluate (check the masks and ignore_index)"
        )
    if plan.reliable is not None and plan.reliable.wants_class_weights:
        # SEA's weights: inverse pixel frequency over the whole evaluated set (every rank's batches)
        plan.class_weights = inverse_frequency_weights(distributed.reduce_over_ranks(source.class_pixels.clone()))
        weights = [float(w) for w in plan.class_weights]
        plan.settings["reliable_class_weights"] = plan.manifest["reliable_class_weights"] = weights
    return source, fingerprints


# ----------------------------------------------------------------------------- stage 3: the output folder
@contextlib.contextmanager
def _output(plan: _Plan) -> Iterator[UnitStore]:
    """The unit store; with ``out_dir``, rank 0 holds the folder's lock for the run and prepares it."""
    config = plan.config
    unit_files = [UnitStore.relative_path(c.tag, b) for c in plan.conditions for b in range(len(plan.batches))]
    store = UnitStore(config.out_dir, plan.manifest, config.resume, unit_files)
    folder = OutputFolder(config.out_dir) if config.out_dir is not None and plan.rank == 0 else None

    def prepare() -> None:
        if folder is not None:
            folder.lock()
            if config.write_report:
                folder.check_files(REPORT_FILES)
            store.prepare()

    try:
        _agreed(prepare)
        yield store
    finally:
        if folder is not None:
            folder.unlock()


# ----------------------------------------------------------------------------- stage 4: run the units
@dataclass
class _Work:
    """Units of this rank, by (condition index, batch), and the time spent computing them."""

    units: dict[tuple[int, int], Unit]
    seconds: torch.Tensor
    computed_images: torch.Tensor
    examples: dict[str, Unit]


def _build_attack(plan: _Plan, condition: Condition) -> Callable[..., torch.Tensor]:
    config = plan.config
    kwargs = {
        "eps": condition.eps,
        "alpha": config.alpha,
        "random_start": config.random_start,
        "ignore_index": config.ignore_index,
        **_attack_arguments(config, condition.key),
    }
    if ATTACKS[condition.key].reliable and plan.class_weights is not None:
        kwargs["class_weights"] = plan.class_weights
    return ATTACKS[condition.key].build(plan.model, **kwargs)


def _shown_and_logits(
    plan: _Plan,
    condition: Condition,
    attack: Optional[Callable[..., torch.Tensor]],
    b: int,
    batch: dict[str, torch.Tensor],
    images: torch.Tensor,
    masks: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, Optional[EnsembleStats]]:
    """The images the model sees under ``condition``, its logits on them and the ensemble's statistics (if any)."""
    model, seed, device = plan.model, plan.config.seed, plan.device
    depth = batch.get("depth")
    shown, stats = images, None
    if condition.kind == "rain":
        with torch.no_grad():
            shown = _rainy(
                images,
                None if depth is None else depth.to(device),
                batch["index"],
                condition.key.split(":", 1)[1],
                seed,
                plan.config.rain_reference_height,
            )
    elif condition.kind == "corruption":
        with torch.no_grad():
            shown = _corrupted(images, batch["index"], condition.key.split(":", 1)[1], condition.severity, seed)
    elif condition.kind != "clean":
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(BF.unit_seed(seed, condition.key, condition.eps_index, b))
            if depth is not None and ATTACKS[condition.key].accepts_depth:
                shown = attack(images, masks, depth=depth.to(device))
            elif ATTACKS[condition.key].reliable:
                shown, stats = attack(images, masks, return_stats=True)
            else:
                shown = attack(images, masks)
    logits = _scores(model, shown, plan.config.amp)
    first, last = int(batch["index"][0]), int(batch["index"][-1])
    return shown, _check_logits(logits, f"batch {b} (dataset items {first}-{last}) under {condition.label}"), stats


def _compute_unit(
    plan: _Plan,
    condition: Condition,
    attack: Optional[Callable[..., torch.Tensor]],
    b: int,
    batch: dict[str, torch.Tensor],
) -> Unit:
    """One condition on one batch: per-image confusion matrices and accuracies (and example images for batch 0)."""
    num_classes, ignore_index = plan.num_classes, plan.config.ignore_index
    images = batch["image"].to(plan.device)
    masks = batch["mask"].to(plan.device)
    shown, logits, stats = _shown_and_logits(plan, condition, attack, b, batch, images, masks)
    pred = predicted_classes(logits)
    unit: Unit = {
        "indices": batch["index"].clone(),
        "confusion": per_image_confusion(pred, masks, num_classes, ignore_index).cpu(),
        "accuracy": per_image_pixel_accuracy(pred, masks, ignore_index).double().cpu(),
    }
    if stats is not None:
        unit.update(R.ensemble_unit(stats))
    num_examples = plan.config.num_examples
    if b == 0 and num_examples > 0 and _keeps_examples(plan, condition):
        k = min(num_examples, images.shape[0])
        unit["example_image"] = shown[:k].detach().half().cpu()
        unit["example_pred"] = pred[:k].to(torch.uint8).cpu()
        if condition.kind == "clean":
            unit["example_mask"] = masks[:k].cpu()
    return unit


def _keeps_examples(plan: _Plan, condition: Condition) -> bool:
    """Example images are kept for the largest ε and the largest severity (and for clean and rain)."""
    if condition.severity is not None:
        return condition.severity == max(plan.config.severities)
    return condition.eps_index in (None, len(plan.config.eps_list) - 1)


def _run_condition(
    plan: _Plan, c: int, store: UnitStore, source: BatchSource, fingerprints: dict[int, str], work: _Work, bar: Any
) -> None:
    """Every batch of this rank under condition ``c``: read back from the store, or computed and saved."""
    condition = plan.conditions[c]
    pending = []
    for b in plan.mine:
        unit = store.load(condition.tag, b, fingerprints[b])
        if unit is not None:
            work.units[(c, b)] = unit
        else:
            pending.append(b)
    bar.update(len(plan.mine) - len(pending))
    attack = _build_attack(plan, condition) if pending and condition.kind in ("attack", "positive") else None
    for b, batch in source(pending):
        started = time.perf_counter()
        unit = _compute_unit(plan, condition, attack, b, batch)
        if plan.device.type == "cuda":
            torch.cuda.synchronize(plan.device)
        work.seconds[c] += time.perf_counter() - started
        work.computed_images[c] += len(plan.batches[b])
        unit["data"] = fingerprints[b]
        store.save(condition.tag, b, unit)
        work.units[(c, b)] = unit
        bar.update(1)
    if 0 in plan.mine and "example_image" in work.units.get((c, 0), {}):
        work.examples[condition.tag] = {k: v for k, v in work.units[(c, 0)].items() if k.startswith("example_")}


def _run_units(plan: _Plan, store: UnitStore, source: BatchSource, fingerprints: dict[int, str]) -> _Work:
    """All conditions on this rank's batches, the model in eval mode (its flags restored afterwards)."""
    from tqdm.auto import tqdm

    count = len(plan.conditions)
    work = _Work({}, torch.zeros(count, dtype=torch.float64), torch.zeros(count, dtype=torch.float64), {})
    show = plan.config.progress and plan.rank == 0
    with model_mode_preserved(plan.model):
        plan.model.eval()
        for c, condition in enumerate(plan.conditions):
            with tqdm(
                total=len(plan.mine),
                desc=condition.label,
                unit="batch",
                disable=not show,
                leave=True,
                dynamic_ncols=True,
                file=sys.stderr,
            ) as bar:
                _run_condition(plan, c, store, source, fingerprints, work, bar)
    return work


# ----------------------------------------------------------------------------- stage 5: reduce over ranks
@dataclass
class _Totals:
    """Whole-set sums: per condition and, per ε, for the per-image worst case."""

    confusion: torch.Tensor
    accuracy: torch.Tensor
    worst_confusion: torch.Tensor
    worst_accuracy: torch.Tensor
    worst_choice: torch.Tensor
    seconds: torch.Tensor
    computed_images: torch.Tensor
    ensembles: dict[int, R.EnsembleTotals] = field(default_factory=dict)


def _worst_case_group(plan: _Plan, e: int) -> list[int]:
    """Indices of the adversarial conditions at ε index ``e`` that enter the worst case."""
    return [
        c
        for c, cond in enumerate(plan.conditions)
        if cond.kind == "attack" and ATTACKS[cond.key].in_worst_case and cond.eps_index == e
    ]


def _reduce(plan: _Plan, work: _Work) -> _Totals:
    """Sum this rank's units, pick the per-image worst case per ε, then sum over ranks."""
    k, n, num_eps = plan.num_classes, plan.num_items, len(plan.config.eps_list)
    totals = _Totals(
        confusion=torch.zeros(len(plan.conditions), k, k, dtype=torch.int64),
        accuracy=torch.zeros(len(plan.conditions), n, dtype=torch.float64),
        worst_confusion=torch.zeros(num_eps, k, k, dtype=torch.int64),
        worst_accuracy=torch.zeros(num_eps, n, dtype=torch.float64),
        worst_choice=torch.zeros(num_eps, n, dtype=torch.int64),
        seconds=work.seconds,
        computed_images=work.computed_images,
    )
    for (c, _batch), unit in work.units.items():
        totals.confusion[c] += unit["confusion"].sum(dim=0)
        totals.accuracy[c, unit["indices"]] = unit["accuracy"]
    for e in range(num_eps):
        group = _worst_case_group(plan, e)
        for b in plan.mine if group else []:
            accs = torch.stack([work.units[(c, b)]["accuracy"] for c in group])
            choice = BF.worst_case_selection(accs)
            cms = torch.stack([work.units[(c, b)]["confusion"] for c in group])  # (A, n, K, K)
            indices = work.units[(group[0], b)]["indices"]
            totals.worst_confusion[e] += cms[choice, torch.arange(cms.shape[1])].sum(dim=0)
            totals.worst_accuracy[e, indices] = accs[choice, torch.arange(accs.shape[1])]
            totals.worst_choice[e, indices] = torch.tensor(group)[choice]
    for name in ("confusion", "accuracy", "worst_confusion", "worst_accuracy", "worst_choice", "computed_images"):
        setattr(totals, name, distributed.reduce_over_ranks(getattr(totals, name)))
    for c, condition in enumerate(plan.conditions):  # every rank reaches this loop in the same order
        if condition.kind == "attack" and ATTACKS[condition.key].reliable:
            units = [work.units[(c, b)] for b in plan.mine]
            totals.ensembles[c] = R.reduce_ensemble(units, n, k, plan.reliable.steps)
    totals.seconds = distributed.reduce_over_ranks(totals.seconds, "max")
    return totals


# ----------------------------------------------------------------------------- stage 6: rows and results
def _row(
    condition: Condition, cm: torch.Tensor, accs: torch.Tensor, secs: Optional[float], images: float
) -> ConditionResult:
    speed = images / secs if secs and images else None
    return ConditionResult(
        key=condition.key,
        name=condition.name,
        kind=condition.kind,
        eps=condition.eps,
        severity=condition.severity,
        miou=mean_iou(cm),
        pixel_accuracy=pixel_accuracy(cm),
        mean_class_accuracy=mean_class_accuracy(cm),
        iou=[float(v) for v in class_iou(cm)],
        num_pixels=int(cm.sum()),
        confusion_matrix=cm.tolist(),
        per_image_pixel_accuracy=[float(v) for v in accs],
        seconds=float(secs) if images else None,
        images_per_second=speed,
    )


def _rows(plan: _Plan, totals: _Totals) -> list[ConditionResult]:
    """One row per condition, then the worst case per ε."""
    rows = []
    for c, cond in enumerate(plan.conditions):
        row = _row(
            cond, totals.confusion[c], totals.accuracy[c], float(totals.seconds[c]), float(totals.computed_images[c])
        )
        rows.append(row)
        if c in totals.ensembles:
            rows += R.ensemble_rows(row, totals.ensembles[c], _row, plan.reliable)
    for e, eps in enumerate(plan.config.eps_list):
        if not _worst_case_group(plan, e):
            continue
        row = _row(
            Condition("worst", "Worst case", "worst", eps, e),
            totals.worst_confusion[e],
            totals.worst_accuracy[e],
            None,
            0,
        )
        row.worst_attack = [plan.conditions[int(c)].key for c in totals.worst_choice[e]]
        rows.append(row)
    return rows


def _results(plan: _Plan, totals: _Totals, rows: list[ConditionResult], examples: dict[str, Unit]) -> BenchmarkResults:
    timing = {
        "world_size": plan.world,
        "device": str(plan.device),
        "threads_per_process": torch.get_num_threads(),
        "seconds": float(totals.seconds.sum()),
        "clean_images_per_second": rows[0].images_per_second,
        "attack_images_per_second": {
            cond.tag: rows[c].images_per_second
            for c, cond in enumerate(plan.conditions)
            if cond.kind in ("attack", "positive")
        },
    }
    run_config = {
        **plan.settings,
        "world_size": plan.world,
        "device": str(plan.device),
        "model_fingerprint": plan.manifest["model"],
        **plan.config.metadata,
    }
    return BenchmarkResults(
        rows=rows,
        class_names=list(plan.class_names),
        num_images=plan.num_items,
        config=run_config,
        versions=_versions(),
        timing=timing,
        checks=gradient_masking_checks(rows),
        examples=_examples_for_plot(examples, plan.conditions, rows, plan.config.eps_list) if examples else None,
    )


def _examples_for_plot(
    examples: dict[str, Any], conditions: list[Condition], rows: list[ConditionResult], eps_values: list[float]
) -> dict[str, Any]:
    """Clean images, masks and predictions of the first batch, and per image its worst attack at the largest ε."""
    clean = examples.get("clean")
    if clean is None:
        return {}
    out: dict[str, Any] = {
        "image": clean["example_image"].float(),
        "mask": clean["example_mask"],
        "clean_pred": clean["example_pred"].long(),
        "rain": {},
        "corruption": {},
        "adversarial": None,
    }
    for cond in conditions:
        if cond.kind in ("rain", "corruption") and cond.tag in examples:
            out[cond.kind][cond.label if cond.kind == "corruption" else cond.name] = {
                "image": examples[cond.tag]["example_image"].float(),
                "pred": examples[cond.tag]["example_pred"].long(),
            }
    last = len(eps_values) - 1
    worst = [
        row for row in rows if row.kind == "worst" and row.eps is not None and math.isclose(row.eps, eps_values[-1])
    ]
    candidates = [
        cond
        for cond in conditions
        if cond.kind == "attack" and ATTACKS[cond.key].in_worst_case and cond.eps_index == last
    ]
    if not candidates:
        candidates = [cond for cond in conditions if cond.kind == "positive" and cond.eps_index == last]
    if not candidates:
        return out
    chosen = []
    for i in range(out["image"].shape[0]):
        key = worst[0].worst_attack[i] if worst else candidates[0].key
        chosen.append(next(cond for cond in candidates if cond.key == key))
    out["adversarial"] = {
        "eps": eps_values[-1],
        "attack": [cond.name for cond in chosen],
        "image": torch.stack([examples[cond.tag]["example_image"][i].float() for i, cond in enumerate(chosen)]),
        "pred": torch.stack([examples[cond.tag]["example_pred"][i].long() for i, cond in enumerate(chosen)]),
    }
    return out


# ----------------------------------------------------------------------------- run_benchmark
def run_benchmark(
    model: nn.Module,
    dataset: Any,
    config: Optional[BenchmarkConfig] = None,
    *,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    **settings: Any,
) -> BenchmarkResults:
    """Benchmark ``model`` on ``dataset``: clean, under rain presets, corruptions and attacks at each ε, plus the worst case.

    The per-image worst case at each ε takes, for every image, the attack
    (among the adversarial ones; AMA is excluded since it helps the model)
    whose prediction has the lowest pixel accuracy, and accumulates that
    prediction into its own confusion matrix. mIoU always comes from a
    confusion matrix summed over the whole set.

    The reliable evaluation (attack ``"reliable"``, the ensemble of the preset
    ``reliable_preset``) adds one row per member; its own row gives the pixel
    accuracy of its per-image worst case and the greedy worst-case mIoU over
    the whole set, and its returned image is one candidate of the worst case.
    ``results.checks`` holds the gradient-masking checks.

    Every item is loaded and checked before any attack runs (a bad file is
    named in a one-line [DataError][segrobust.benchmark.DataError], and so is
    a data set whose every pixel is ``ignore_index``); NaN or
    infinite logits stop the run with a
    [ModelOutputError][segrobust.benchmark.ModelOutputError] naming the batch.
    With ``out_dir`` the folder is locked for the run, and segrobust never
    deletes or overwrites files there that it did not write (see
    [OutputFolderError][segrobust.benchmark.OutputFolderError]).

    Args:
        model: segmentation model taking images in ``[0, 1]`` and returning
            logits ``(N, K, H, W)`` (or a tuple / ``{"out": ...}`` holding them).
            Its train/eval mode is restored afterwards; evaluation runs in eval mode.
        dataset: items ``{"image": (3, H, W) in [0, 1], "mask": (H, W) int}``
            (an optional ``"depth"`` ``(1, H, W)`` in metres is used by the rain)
            or pairs ``(image, mask)``; all items the same size.
        config: the settings, a [BenchmarkConfig][segrobust.benchmark.BenchmarkConfig]
            (default: ``BenchmarkConfig()``).
        mean, std: per-channel normalisation the model expects, for a model
            that normalises in the user's pipeline rather than inside itself:
            the model is wrapped in
            [SegmentationModel][segrobust.models.SegmentationModel], so images
            and attacks stay in ``[0, 1]``.
        **settings: fields of [BenchmarkConfig][segrobust.benchmark.BenchmarkConfig]
            that replace those of ``config``.

    Returns:
        [BenchmarkResults][segrobust.benchmark.BenchmarkResults] (the same on every rank); its
        ``files`` are the report files this call wrote (on rank 0, with ``out_dir``), by name.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 2, 1)
        >>> data = [(torch.rand(3, 8, 8), torch.randint(0, 2, (8, 8))) for _ in range(4)]
        >>> results = run_benchmark(model, data, attacks="naa", eps_list=[4 / 255], rain="none", steps=2, progress=False)
        >>> [row.label for row in results.rows]
        ['Clean', 'NAA ε=4/255', 'Worst case ε=4/255']
    """
    if config is not None and not isinstance(config, BenchmarkConfig):
        raise TypeError(f"config must be a BenchmarkConfig, got {type(config).__name__}")
    config = (config or BenchmarkConfig()).replace(**settings) if settings else (config or BenchmarkConfig())
    if mean is not None or std is not None:
        from segrobust.models import SegmentationModel

        model = SegmentationModel(model, mean=mean, std=std)
    plan = _plan(model, dataset, config)
    source, fingerprints = _load_data(plan)
    with _output(plan) as store:
        work = _run_units(plan, store, source, fingerprints)
        totals = _reduce(plan, work)
        results = _results(plan, totals, _rows(plan, totals), work.examples)
        if config.out_dir is not None and config.write_report and plan.rank == 0:
            results.save(config.out_dir)
        distributed.barrier()
    return results
