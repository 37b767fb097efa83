"""``evaluate``: clean, rain and attacked accuracy of a segmentation model, resumable and distributed.

Work is cut into *units*: one condition (clean, a rain preset, an attack at
one ε) on one batch. Batch ``b`` always holds samples ``b·B … (b+1)·B − 1``
and every random draw of a unit is seeded from ``(seed, condition, ε, b)``
(rain: from the sample index), never from the process rank or from the
order of work. So:

- with ``out_dir`` each unit is written atomically when done, and a resumed
  run skips finished units and ends with exactly the numbers of an
  uninterrupted run;
- under ``torch.distributed`` rank ``r`` takes batches ``r, r + W, …``; the
  per-condition confusion matrices and per-image accuracies are summed over
  ranks, giving exactly the single-process numbers.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

from segrobust.benchmark import functional as BF
from segrobust.benchmark.registry import ATTACKS, resolve_attacks, resolve_rain_presets
from segrobust.benchmark.results import BenchmarkResults, ConditionResult
from segrobust.benchmark.storage import UnitStore, fingerprint
from segrobust.metrics.functional import (
    class_iou,
    mean_class_accuracy,
    mean_iou,
    per_image_pixel_accuracy,
    pixel_accuracy,
)
from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT
from segrobust.utils import model_mode_preserved, predicted_classes, segmentation_logits
from segrobust.validation import check_class_ids

__all__ = ["DEFAULT_EPS", "BenchmarkPlan", "Condition", "DataError", "build_conditions", "evaluate", "plan_evaluation", "run_plan"]

#: Default L∞ budgets: 2/255, 4/255 and 8/255.
DEFAULT_EPS: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)

#: Image height the rain presets' streak lengths are tuned for (CamVid, 360 px).
RAIN_REFERENCE_HEIGHT = PRESET_REFERENCE_HEIGHT


class DataError(ValueError):
    """A data set item that does not fit the model (found while running, not while planning)."""


@dataclass(frozen=True)
class Condition:
    """One evaluated condition: ``kind`` is ``clean``, ``rain``, ``attack`` or ``positive``."""

    key: str
    name: str
    kind: str
    eps: Optional[float] = None
    eps_index: Optional[int] = None

    @property
    def tag(self) -> str:
        """Unique, file-name-safe id, e.g. ``naa@eps8`` or ``rain-heavy``."""
        base = self.key.replace(":", "-")
        return base if self.eps is None else f"{base}@{BF.eps_tag(self.eps)}"


def build_conditions(attacks: Sequence[str], eps_list: Sequence[float], rain: Sequence[str]) -> list[Condition]:
    """Conditions in report order: clean, rain presets, attacks (each ε), positive attacks (each ε).

    Examples:
        >>> [c.tag for c in build_conditions(["naa", "ama"], [4 / 255], ["heavy"])]
        ['clean', 'rain-heavy', 'naa@eps4', 'ama@eps4']
    """
    conditions = [Condition("clean", "Clean", "clean")]
    conditions += [Condition(f"rain:{name}", f"Rain ({name.replace('_', ' ')})", "rain") for name in rain]
    for positive in (False, True):
        for key in attacks:
            entry = ATTACKS[key]
            if entry.positive != positive:
                continue
            for index, eps in enumerate(eps_list):
                kind = "positive" if positive else "attack"
                conditions.append(Condition(key, entry.display_name, kind, float(eps), index))
    return conditions


# ----------------------------------------------------------------------------- helpers
def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buffer = tensor.to(device)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def _as_pair(item: Any, index: int) -> dict[str, torch.Tensor]:
    if isinstance(item, Mapping):
        if "image" not in item or "mask" not in item:
            raise ValueError(f"dataset item {index} must have keys 'image' and 'mask', got {sorted(map(str, item))}")
        out = {"image": item["image"], "mask": item["mask"]}
        if isinstance(item.get("depth"), torch.Tensor):
            out["depth"] = item["depth"]
        return out
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return {"image": item[0], "mask": item[1]}
    raise TypeError(f"dataset item {index} must be a dict with 'image' and 'mask' or a pair (image, mask), got {type(item).__name__}")


def _collate(items: list[tuple[int, Any]]) -> dict[str, torch.Tensor]:
    pairs = [_as_pair(item, index) for index, item in items]
    batch = {"image": torch.stack([p["image"] for p in pairs]), "mask": torch.stack([p["mask"] for p in pairs]).long()}
    if all("depth" in p for p in pairs):
        batch["depth"] = torch.stack([p["depth"] for p in pairs])
    batch["index"] = torch.tensor([index for index, _ in items])
    return batch


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


def _versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers, read from package metadata (nothing is imported)."""
    from importlib import metadata

    import segrobust

    versions = {"segrobust": segrobust.__version__, "python": platform.python_version(), "torch": str(torch.__version__)}
    for name in ("torchvision", "segmentation-models-pytorch", "timm", "kornia", "torchattacks", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    versions["platform"] = platform.platform()
    return versions


def _rain_ranges(name: str, height: int, reference_height: Optional[int]) -> dict[str, Any]:
    """The preset's ranges, streak lengths scaled from ``reference_height`` to the image height."""
    from segrobust.rain import RAIN_PRESETS, scale_rain_ranges

    return scale_rain_ranges(name, height, reference_height) if reference_height else dict(RAIN_PRESETS[name])


def _rainy(
    images: torch.Tensor, depth: Optional[torch.Tensor], indices: torch.Tensor, preset: str, seed: int,
    reference_height: Optional[int],
) -> torch.Tensor:
    """Rain drawn per sample from a generator seeded by ``(seed, preset, sample index)``."""
    from segrobust.rain import render_rain, sample_rain_params

    size = (images.shape[-2], images.shape[-1])
    ranges = _rain_ranges(preset, size[0], reference_height)
    draws = []
    for index in indices.tolist():
        generator = torch.Generator().manual_seed(BF.unit_seed(seed, "rain", preset, int(index)))
        draws.append(sample_rain_params(1, size, ranges, generator=generator))
    params = {key: torch.cat([d[key] for d in draws]).to(images.device) for key in draws[0]}
    return render_rain(images, params, depth)


def _check_model_output(model: nn.Module, item: dict[str, torch.Tensor], device: torch.device) -> int:
    """Run the model once on sample 0: clear errors for wrong outputs; returns the number of classes."""
    image, mask = item["image"], item["mask"]
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.dtype.is_floating_point:
        raise ValueError(f"dataset images must be float tensors (C, H, W) in [0, 1], got {getattr(image, 'shape', type(image))}")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape != image.shape[1:]:
        raise ValueError(
            f"dataset masks must be (H, W) matching the image {tuple(image.shape[1:])}, got {tuple(getattr(mask, 'shape', ()))}"
        )
    with torch.no_grad():
        try:
            logits = segmentation_logits(model(image.unsqueeze(0).to(device)))
        except (RuntimeError, ValueError, TypeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"the model fails on an image of shape {tuple(image.shape)}: {first}") from None
    if logits.shape[-2:] != mask.shape:
        raise ValueError(
            f"model output {tuple(logits.shape)} does not match masks {tuple(mask.shape)}: "
            "the model must return logits (N, K, H, W) at the input resolution"
        )
    return int(logits.shape[1])


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def bar(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="batch", disable=not self.enabled, leave=True, dynamic_ncols=True, file=sys.stderr)


# ----------------------------------------------------------------------------- evaluate
def evaluate(
    model: nn.Module,
    dataset: Any,
    attacks: Union[str, Sequence[str], None] = None,
    eps_list: Sequence[Union[float, str]] = DEFAULT_EPS,
    *,
    rain: Union[str, Sequence[str], None] = None,
    steps: int = 10,
    alpha: Optional[float] = None,
    random_start: bool = True,
    batch_size: int = 8,
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    class_names: Optional[Sequence[str]] = None,
    device: Union[str, torch.device, None] = None,
    seed: int = 0,
    out_dir: Union[str, os.PathLike, None] = None,
    resume: bool = False,
    progress: bool = True,
    num_workers: int = 0,
    num_examples: int = 3,
    attack_kwargs: Optional[Mapping[str, Mapping[str, Any]]] = None,
    rain_reference_height: Optional[int] = RAIN_REFERENCE_HEIGHT,
    write_report: bool = True,
    config: Optional[Mapping[str, Any]] = None,
    cache_bytes: int = 2 * 1024**3,
) -> BenchmarkResults:
    """Evaluate ``model`` on ``dataset``: clean, under rain presets and under attacks at each ε, plus the worst case.

    The per-image worst case at each ε takes, for every image, the attack
    (among the adversarial ones; AMA is excluded since it helps the model)
    whose prediction has the lowest pixel accuracy, and accumulates that
    prediction into its own confusion matrix. mIoU always comes from a
    confusion matrix summed over the whole set.

    Args:
        model: segmentation model taking images in ``[0, 1]`` and returning
            logits ``(N, K, H, W)`` (or a tuple / ``{"out": ...}`` holding them).
            Its train/eval mode is restored afterwards; evaluation runs in eval mode.
        dataset: items ``{"image": (3, H, W) in [0, 1], "mask": (H, W) int}``
            (an optional ``"depth"`` ``(1, H, W)`` in metres is used by the rain)
            or pairs ``(image, mask)``; all items the same size.
        attacks: keys of :data:`~segrobust.benchmark.registry.ATTACKS`
            (``"naa"``, ``"segpgd"``, ``"cospgd"``, ``"eroseg"``, ``"ama"``, …),
            a comma-separated string, ``"all"`` (default: every available one) or ``"none"``.
        eps_list: L∞ budgets in ``(0, 1]`` (numbers or text like ``"8/255"``).
        rain: rain presets (``"light"``, ``"medium"``, ``"heavy"``, ``"fog_only"``),
            ``"all"`` (default) or ``"none"``.
        steps: attack iterations.
        alpha: attack step size; ``None`` uses ``2.5·ε/steps``.
        random_start: start each attack at a random point of the ε-ball.
        batch_size: images per batch (the unit of resume and of sharding).
        num_classes: classes of the model; inferred from its output when ``None``.
        ignore_index: mask value of pixels that do not count.
        class_names: names for the report (default: the dataset's, CamVid's for 11 classes, else numbers).
        device: where to run; defaults to the model's device (the model is never moved).
        seed: base of every random draw (rain, attack start points).
        out_dir: write per-batch partial results there (and, with
            ``write_report``, ``results.json``, ``report.md`` and the figures).
        resume: skip units already in ``out_dir`` (made with the same settings).
        progress: tqdm bars per condition (rank 0 only).
        num_workers: DataLoader workers.
        num_examples: images kept (from the first batch) for ``examples.png``.
        attack_kwargs: extra constructor arguments per attack key, e.g. ``{"eroseg": {"q0": 0.3}}``.
        rain_reference_height: the presets' streak lengths are in pixels for
            images of this height and are scaled to the data's height; ``None`` keeps them.
        write_report: with ``out_dir``, write the report files (rank 0).
        config: extra JSON-able settings recorded in ``results.json`` (e.g. the command line).
        cache_bytes: keep this process's batches in memory between conditions up to this size.

    Returns:
        :class:`~segrobust.benchmark.results.BenchmarkResults` (the same on every rank).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 2, 1)
        >>> data = [(torch.rand(3, 8, 8), torch.randint(0, 2, (8, 8))) for _ in range(4)]
        >>> results = evaluate(model, data, attacks="naa", eps_list=[4 / 255], rain="none", steps=2, progress=False)
        >>> [row.label for row in results.rows]
        ['Clean', 'NAA ε=4/255', 'Worst case ε=4/255']
    """
    return run_plan(plan_evaluation(**locals()))


@dataclass
class BenchmarkPlan:
    """Everything :func:`run_plan` needs, checked by :func:`plan_evaluation`."""

    model: nn.Module
    dataset: Any
    conditions: list[Condition]
    batches: list[list[int]]
    mine: list[int]
    settings: dict[str, Any]
    manifest: dict[str, Any]
    store: UnitStore
    device: torch.device
    num_classes: int
    class_names: list[str]
    eps_values: list[float]
    world: int
    rank: int
    steps: int
    alpha: Optional[float]
    random_start: bool
    ignore_index: int
    seed: int
    attack_kwargs: dict[str, dict[str, Any]]
    num_examples: int
    rain_reference_height: Optional[int]
    num_workers: int
    cache_bytes: int
    progress: bool
    out_dir: Union[str, os.PathLike, None]
    write_report: bool
    config: dict[str, Any]
    num_items: int


def plan_evaluation(
    model: nn.Module,
    dataset: Any,
    attacks: Union[str, Sequence[str], None] = None,
    eps_list: Sequence[Union[float, str]] = DEFAULT_EPS,
    *,
    rain: Union[str, Sequence[str], None] = None,
    steps: int = 10,
    alpha: Optional[float] = None,
    random_start: bool = True,
    batch_size: int = 8,
    num_classes: Optional[int] = None,
    ignore_index: int = 255,
    class_names: Optional[Sequence[str]] = None,
    device: Union[str, torch.device, None] = None,
    seed: int = 0,
    out_dir: Union[str, os.PathLike, None] = None,
    resume: bool = False,
    progress: bool = True,
    num_workers: int = 0,
    num_examples: int = 3,
    attack_kwargs: Optional[Mapping[str, Mapping[str, Any]]] = None,
    rain_reference_height: Optional[int] = RAIN_REFERENCE_HEIGHT,
    write_report: bool = True,
    config: Optional[Mapping[str, Any]] = None,
    cache_bytes: int = 2 * 1024**3,
) -> BenchmarkPlan:
    """Check every argument and prepare the output folder; :func:`run_plan` then does the work.

    Takes the arguments of :func:`evaluate`. Everything a user can get wrong
    (unknown attack, ε outside (0, 1], a model whose output does not fit the
    masks, ``resume`` into a folder made with other settings, bad attack
    arguments) raises ``ValueError`` / ``TypeError`` here, before any work.
    """
    # ------------------------------------------------------------- validation
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
    num_items = len(dataset)
    if num_items == 0:
        raise ValueError("dataset is empty")
    attack_keys = resolve_attacks(attacks)
    rain_presets = resolve_rain_presets(rain)
    if isinstance(eps_list, (str, float, int)):
        eps_list = [eps_list]
    eps_values = sorted({BF.parse_eps(eps) for eps in eps_list})
    if attack_keys and not eps_values:
        raise ValueError("eps_list is empty; give at least one budget in (0, 1]")
    for name, value, minimum in (("steps", steps, 1), ("batch_size", batch_size, 1), ("num_workers", num_workers, 0), ("num_examples", num_examples, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if alpha is not None:
        BF.parse_eps(alpha)
    attack_kwargs = {key: dict(value) for key, value in (attack_kwargs or {}).items()}
    for key in attack_kwargs:
        if key not in attack_keys:
            raise ValueError(f"attack_kwargs names {key!r}, which is not among the evaluated attacks {attack_keys}")
    parameters = list(model.parameters()) + list(model.buffers())
    model_device = parameters[0].device if parameters else torch.device("cpu")
    run_device = torch.device(device) if device is not None else model_device
    if parameters and run_device != model_device and not (run_device.type == model_device.type == "cuda" and run_device.index is None):
        raise ValueError(f"model is on {model_device} but device={run_device}; move it first with model.to({str(run_device)!r})")
    world, rank = _distributed()
    first = _as_pair(dataset[0], 0)
    with model_mode_preserved(model):
        model.eval()
        inferred = _check_model_output(model, first, run_device)
    image_size = tuple(first["image"].shape[-2:])
    for key in attack_keys:  # bad attack arguments fail now, not after the clean pass
        ATTACKS[key].build(model, eps=eps_values[0], alpha=alpha, steps=steps, random_start=random_start,
                           ignore_index=ignore_index, image_size=image_size, **attack_kwargs.get(key, {}))
    if num_classes is not None and num_classes != inferred:
        raise ValueError(f"num_classes={num_classes} but the model predicts {inferred} classes")
    num_classes = inferred
    check_class_ids(first["mask"], num_classes, ignore_index, "dataset masks")
    if class_names is None:
        class_names = getattr(dataset, "class_names", None) or getattr(dataset, "classes", None)
    if class_names is None and num_classes == 11:
        from segrobust.datasets.functional import CAMVID_CLASSES

        class_names = CAMVID_CLASSES
    class_names = [str(name) for name in (class_names or range(num_classes))][:num_classes]
    if len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]

    conditions = build_conditions(attack_keys, eps_values, rain_presets)
    batches = BF.batch_indices(num_items, batch_size)
    mine = list(range(rank, len(batches), world))
    settings = {
        "attacks": attack_keys,
        "rain": rain_presets,
        "eps": eps_values,
        "steps": steps,
        "alpha": alpha,
        "random_start": bool(random_start),
        "batch_size": batch_size,
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "seed": seed,
        "num_images": num_items,
        "image_size": list(first["image"].shape[-2:]),
        "attack_kwargs": attack_kwargs,
        "rain_reference_height": rain_reference_height,
        "num_examples": num_examples,
    }
    manifest = {
        **settings,
        "model": fingerprint(model),
        "data": fingerprint(first["image"]) + fingerprint(first["mask"]),
        "dataset_type": type(dataset).__name__,
    }
    store = UnitStore(out_dir, manifest, resume, is_main=rank == 0)
    store.check()  # every rank: a mismatch fails all of them alike, before any collective
    store.prepare()
    _barrier()

    return BenchmarkPlan(
        model=model, dataset=dataset, conditions=conditions, batches=batches, mine=mine, settings=settings,
        manifest=manifest, store=store, device=run_device, num_classes=num_classes, class_names=class_names,
        eps_values=eps_values, world=world, rank=rank, steps=steps, alpha=alpha, random_start=bool(random_start),
        ignore_index=ignore_index, seed=seed, attack_kwargs=attack_kwargs, num_examples=num_examples,
        rain_reference_height=rain_reference_height, num_workers=num_workers, cache_bytes=cache_bytes,
        progress=progress, out_dir=out_dir, write_report=write_report, config=dict(config or {}),
        num_items=num_items,
    )


def run_plan(plan: BenchmarkPlan) -> BenchmarkResults:
    """Do the work of a plan from :func:`plan_evaluation` (units, reduction over ranks, report files)."""
    model, dataset, conditions, batches, mine = plan.model, plan.dataset, plan.conditions, plan.batches, plan.mine
    settings, manifest, store, run_device = plan.settings, plan.manifest, plan.store, plan.device
    num_classes, class_names, eps_values, world, rank = plan.num_classes, plan.class_names, plan.eps_values, plan.world, plan.rank
    steps, alpha, random_start, ignore_index, seed = plan.steps, plan.alpha, plan.random_start, plan.ignore_index, plan.seed
    attack_kwargs, num_examples, rain_reference_height = plan.attack_kwargs, plan.num_examples, plan.rain_reference_height
    num_workers, cache_bytes, progress, out_dir = plan.num_workers, plan.cache_bytes, plan.progress, plan.out_dir
    write_report, config, num_items = plan.write_report, plan.config, plan.num_items

    # ------------------------------------------------------------- data
    loader_dataset = _Indexed(dataset)
    cache: dict[int, dict[str, torch.Tensor]] = {}
    cache_state = {"bytes": 0, "enabled": True}

    def load_batches(wanted: list[int]) -> Any:
        missing = [b for b in wanted if b not in cache]
        loader = None
        if missing:
            loader = iter(
                torch.utils.data.DataLoader(
                    loader_dataset, batch_sampler=[batches[b] for b in missing], num_workers=num_workers, collate_fn=_collate
                )
            )
        for b in wanted:
            if b in cache:
                yield b, cache[b]
                continue
            batch = next(loader)
            size = sum(t.numel() * t.element_size() for t in batch.values())
            if cache_state["enabled"] and cache_state["bytes"] + size <= cache_bytes:
                cache[b] = batch
                cache_state["bytes"] += size
            else:
                cache_state["enabled"] = False
            yield b, batch

    # ------------------------------------------------------------- units
    max_eps_index = len(eps_values) - 1
    progress_bars = _Progress(progress and rank == 0)
    local: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    seconds = torch.zeros(len(conditions), dtype=torch.float64)
    computed_images = torch.zeros(len(conditions), dtype=torch.float64)
    examples: dict[str, Any] = {}

    def run_unit(condition: Condition, attack: Optional[Callable[..., torch.Tensor]], b: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        images = batch["image"].to(run_device)
        masks = batch["mask"].to(run_device)
        try:
            check_class_ids(masks, num_classes, ignore_index, f"dataset masks (batch {b})")
        except ValueError as error:
            raise DataError(str(error)) from None
        shown = images
        if condition.kind == "clean":
            with torch.no_grad():
                logits = segmentation_logits(model(images))
        elif condition.kind == "rain":
            depth = batch.get("depth")
            with torch.no_grad():
                shown = _rainy(
                    images, None if depth is None else depth.to(run_device), batch["index"],
                    condition.key.split(":", 1)[1], seed, rain_reference_height,
                )
                logits = segmentation_logits(model(shown))
        else:
            devices = [run_device] if run_device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(BF.unit_seed(seed, condition.key, condition.eps_index, b))
                depth = batch.get("depth")
                if depth is not None and ATTACKS[condition.key].accepts_depth:
                    shown = attack(images, masks, depth=depth.to(run_device))
                else:
                    shown = attack(images, masks)
            with torch.no_grad():
                logits = segmentation_logits(model(shown))
        pred = predicted_classes(logits)
        unit: dict[str, Any] = {
            "indices": batch["index"].clone(),
            "confusion": BF.per_image_confusion(pred, masks, num_classes, ignore_index).cpu(),
            "accuracy": per_image_pixel_accuracy(pred, masks, ignore_index).double().cpu(),
        }
        keep = b == 0 and num_examples > 0 and (condition.eps_index in (None, max_eps_index))
        if keep:
            k = min(num_examples, images.shape[0])
            unit["example_image"] = shown[:k].detach().half().cpu()
            unit["example_pred"] = pred[:k].to(torch.uint8).cpu()
            if condition.kind == "clean":
                unit["example_mask"] = masks[:k].cpu()
        return unit

    with model_mode_preserved(model):
        model.eval()
        for c, condition in enumerate(conditions):
            pending = []
            for b in mine:
                unit = store.load(condition.tag, b)
                if unit is not None:
                    local[(c, b)] = unit
                else:
                    pending.append(b)
            attack = None
            if pending and condition.kind in ("attack", "positive"):
                kwargs = {"eps": condition.eps, "alpha": alpha, "steps": steps, "random_start": random_start, "ignore_index": ignore_index}
                image_size = tuple(plan.settings["image_size"])
                attack = ATTACKS[condition.key].build(model, image_size=image_size, **kwargs, **attack_kwargs.get(condition.key, {}))
            label = condition.name if condition.eps is None else f"{condition.name} ε={BF.format_eps(condition.eps)}"
            bar = progress_bars.bar(len(mine), label)
            bar.update(len(mine) - len(pending))
            for b, batch in load_batches(pending):
                started = time.perf_counter()
                unit = run_unit(condition, attack, b, batch)
                if run_device.type == "cuda":
                    torch.cuda.synchronize(run_device)
                seconds[c] += time.perf_counter() - started
                computed_images[c] += len(batches[b])
                store.save(condition.tag, b, unit)
                local[(c, b)] = unit
                bar.update(1)
            bar.close()
            if 0 in mine and "example_image" in local.get((c, 0), {}):
                examples[condition.tag] = {k: v for k, v in local[(c, 0)].items() if k.startswith("example_")}

    # ------------------------------------------------------------- reduce
    adversarial = [c for c, cond in enumerate(conditions) if cond.kind == "attack" and ATTACKS[cond.key].in_worst_case]
    confusion = torch.zeros(len(conditions), num_classes, num_classes, dtype=torch.int64)
    accuracy = torch.zeros(len(conditions), num_items, dtype=torch.float64)
    worst_confusion = torch.zeros(len(eps_values), num_classes, num_classes, dtype=torch.int64)
    worst_accuracy = torch.zeros(len(eps_values), num_items, dtype=torch.float64)
    worst_choice = torch.zeros(len(eps_values), num_items, dtype=torch.int64)
    for (c, _batch), unit in local.items():
        indices = unit["indices"]
        confusion[c] += unit["confusion"].sum(dim=0)
        accuracy[c, indices] = unit["accuracy"]
    for e in range(len(eps_values)):
        group = [c for c in adversarial if conditions[c].eps_index == e]
        if not group:
            continue
        for b in mine:
            accs = torch.stack([local[(c, b)]["accuracy"] for c in group])
            choice = BF.worst_case_selection(accs)
            cms = torch.stack([local[(c, b)]["confusion"] for c in group])  # (A, n, K, K)
            picked = cms[choice, torch.arange(cms.shape[1])]
            indices = local[(group[0], b)]["indices"]
            worst_confusion[e] += picked.sum(dim=0)
            worst_accuracy[e, indices] = accs[choice, torch.arange(accs.shape[1])]
            worst_choice[e, indices] = torch.tensor(group)[choice]
    confusion = _all_reduce(confusion)
    accuracy = _all_reduce(accuracy)
    worst_confusion = _all_reduce(worst_confusion)
    worst_accuracy = _all_reduce(worst_accuracy)
    worst_choice = _all_reduce(worst_choice)
    seconds = _all_reduce(seconds, "max")
    computed_images = _all_reduce(computed_images)

    # ------------------------------------------------------------- results
    def make_row(condition: Condition, cm: torch.Tensor, accs: torch.Tensor, secs: Optional[float], images: float) -> ConditionResult:
        speed = images / secs if secs and images else None
        return ConditionResult(
            key=condition.key,
            name=condition.name,
            kind=condition.kind,
            eps=condition.eps,
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

    rows = [
        make_row(cond, confusion[c], accuracy[c], float(seconds[c]), float(computed_images[c]))
        for c, cond in enumerate(conditions)
    ]
    for e, eps in enumerate(eps_values):
        group = [c for c in adversarial if conditions[c].eps_index == e]
        if not group:
            continue
        row = make_row(Condition("worst", "Worst case", "worst", eps, e), worst_confusion[e], worst_accuracy[e], None, 0)
        row.worst_attack = [conditions[int(c)].key for c in worst_choice[e]]
        rows.append(row)
    total_seconds = float(seconds.sum())
    clean_index = 0
    timing = {
        "world_size": world,
        "device": str(run_device),
        "threads_per_process": torch.get_num_threads(),
        "seconds": total_seconds,
        "clean_images_per_second": rows[clean_index].images_per_second,
        "attack_images_per_second": {
            cond.tag: rows[c].images_per_second for c, cond in enumerate(conditions) if cond.kind in ("attack", "positive")
        },
    }
    run_config = {**settings, "world_size": world, "device": str(run_device), "model_fingerprint": manifest["model"], **dict(config or {})}
    results = BenchmarkResults(
        rows=rows,
        class_names=list(class_names),
        num_images=num_items,
        config=run_config,
        versions=_versions(),
        timing=timing,
        examples=_examples_for_plot(examples, conditions, rows, eps_values) if examples else None,
    )
    if out_dir is not None and write_report and rank == 0:
        results.save(out_dir)
    _barrier()
    return results




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
        "adversarial": None,
    }
    for cond in conditions:
        if cond.kind == "rain" and cond.tag in examples:
            out["rain"][cond.name] = {
                "image": examples[cond.tag]["example_image"].float(),
                "pred": examples[cond.tag]["example_pred"].long(),
            }
    worst = [row for row in rows if row.kind == "worst" and row.eps is not None and math.isclose(row.eps, eps_values[-1])]
    candidates = [
        cond for cond in conditions
        if cond.kind == "attack" and ATTACKS[cond.key].in_worst_case and cond.eps_index == len(eps_values) - 1
    ]
    if not candidates:
        candidates = [cond for cond in conditions if cond.kind == "positive" and cond.eps_index == len(eps_values) - 1]
    if not candidates:
        return out
    k = out["image"].shape[0]
    chosen = []
    for i in range(k):
        key = worst[0].worst_attack[i] if worst else candidates[0].key
        chosen.append(next(cond for cond in candidates if cond.key == key))
    out["adversarial"] = {
        "eps": eps_values[-1],
        "attack": [cond.name for cond in chosen],
        "image": torch.stack([examples[cond.tag]["example_image"][i].float() for i, cond in enumerate(chosen)]),
        "pred": torch.stack([examples[cond.tag]["example_pred"][i].long() for i, cond in enumerate(chosen)]),
    }
    return out
