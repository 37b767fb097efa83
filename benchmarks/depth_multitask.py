"""Depth multi-task defence: single-task vs multi-task at equal epochs, on CamVid and where depth can learn.

``--world`` picks the experiment:

* ``camvid``: single-task is the standard CamVid model of ``attack_strength.py``;
  multi-task wraps the same architecture in ``DepthMultiTask`` and trains
  segmentation and self-supervised depth (a PoseNet: CamVid gives no poses)
  on the CamVid train triplets (frames 1 s apart), for the same epochs, from
  scratch.
* ``synthetic``: ``SyntheticStreetTriplets`` (frames 0.1 s apart, exact poses
  and rendered depth). Single-task learns segmentation from the current
  frames; multi-task also sees their neighbours, once with the known poses and
  once with a PoseNet. Evaluated on the held-apart ``test`` split, with the
  median-scaled abs-rel error of each depth branch against the rendered depth.
* ``transfer``: the synthetic single-task and multi-task (known poses) models
  fine-tuned on CamVid train (multi-task keeps its depth branch and learns on
  the CamVid triplets with a PoseNet), evaluated on CamVid val.

Every model is evaluated as a plain segmentation model: clean, Gaussian noise
(σ = 0.02, 0.05, 0.1, fixed seed, clipped to [0, 1]), NAA and EroSeg at 1/255,
2/255, 4/255 (10 steps, alpha = 2.5·eps/10), the ImageNet-C corruptions
(``--corruptions``, ``--severities``; run through ``run_benchmark``: mean mIoU,
ratio to clean, per family and corruption), and the reliable ensemble at
4/255 (``--reliable-steps`` APGD iterations per loss; greedy worst-case mIoU).
``--conditions`` picks the noise and attack columns. Each row is merged into
the results file as it finishes.

Usage:
    python benchmarks/depth_multitask.py --world camvid       # writes benchmarks/results/depth_multitask.json
    python benchmarks/depth_multitask.py --world synthetic    # writes benchmarks/results/depth_synthetic.json
    python benchmarks/depth_multitask.py --world transfer     # writes benchmarks/results/depth_transfer.json
    python benchmarks/depth_multitask.py --world synthetic --models single known   # some rows, merged in
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import (
    CACHE,
    DEFAULT_CAMVID,
    NUM_CLASSES,
    Mapped,
    build_model,
    camvid,
    environment,
    merge_rows,
    model_key,
    run_recipe,
    trained_model,
)
from attack_strength import reliable_ensemble

CONDITIONS = (
    "clean",
    "noise 0.02",
    "noise 0.05",
    "noise 0.1",
    "NAA 1/255",
    "NAA 2/255",
    "NAA 4/255",
    "EroSeg 1/255",
    "EroSeg 2/255",
    "EroSeg 4/255",
)
#: the depth range of every multi-task model here (the synthetic world's far plane is 100 m)
DEPTH_RANGE = {"min_depth": 0.1, "max_depth": 100.0, "initial_depth": 10.0}
RESULT_NAMES = {"camvid": "depth_multitask", "synthetic": "depth_synthetic", "transfer": "depth_transfer"}


def flip_triplet(item: dict) -> dict:
    """Horizontal flip of all three frames and the mask with probability 0.5 (only for unknown poses)."""
    if torch.rand(()) < 0.5:
        item["frames"] = item["frames"].flip(-1)
        item["mask"] = item["mask"].flip(-1)
    return item


def without_poses(item: dict) -> dict:
    """The triplet without its known poses, so the depth loss learns them with a PoseNet."""
    item.pop("poses", None)
    return item


@dataclass(frozen=True)
class Variant:
    """One row: a cache name, a recipe, and (multi-task) where its whole DepthMultiTask is kept."""

    label: str
    name: str
    recipe: Callable[..., Any]
    train: Dataset | None = None
    multitask_path: Path | None = None


def existing(path: Path) -> Path:
    if not path.exists():
        raise SystemExit(f"{path} is missing: run --world synthetic with the same settings first")
    return path


def depth_recipe(triplets: Dataset, save_to: Path, init: Path | None = None) -> Callable[..., Any]:
    """Joint segmentation + depth training on ``triplets`` (known poses if they carry them, else a PoseNet).

    Keeps the whole multi-task model at ``save_to``; starts from the one at ``init`` when given.
    """

    def run(model, loader, **kw):
        from segrobust.defenses import RECIPES, DepthMultiTask

        start = model
        if init is not None:
            start = DepthMultiTask(model, **DEPTH_RANGE)
            start.load_state_dict(torch.load(existing(init), weights_only=True))
        # the trainer settings trained_model gives; the depth recipe builds its own optimizer and poly schedule
        trainer = {
            key: kw[key] for key in ("checkpoint_dir", "resume", "progress", "seed", "trainer_kwargs") if key in kw
        }
        config = RECIPES["depth"].config(
            epochs=kw["epochs"], batch_size=8, lr=1e-3, **trainer, **({} if init is not None else DEPTH_RANGE)
        )
        result = RECIPES["depth"](start, triplets, config)
        multitask, history = result.model, result.history
        tmp = save_to.with_suffix(".tmp")
        torch.save(multitask.state_dict(), tmp)
        os.replace(tmp, save_to)
        model.load_state_dict(multitask.segmentation_model().state_dict())
        return history

    return run


def from_weights(path: Path, recipe: Callable[..., Any]) -> Callable[..., Any]:
    """``recipe`` starting from the segmentation weights at ``path``."""

    def run(model, loader, **kw):
        model.load_state_dict(torch.load(existing(path), weights_only=True))
        return recipe(model, loader, **kw)

    return run


def synthetic_data(args) -> tuple[Dataset, Dataset]:
    from segrobust.datasets import SyntheticStreetTriplets

    size = tuple(args.size)
    train = SyntheticStreetTriplets(args.synthetic_train, size=size, seed=0, split="train", cache=True)
    test = SyntheticStreetTriplets(args.synthetic_test, size=size, seed=0, split="test", cache=True)
    return train, test


def multitask_variant(label: str, name: str, triplets: Dataset, kept: Path, init: Path | None = None) -> Variant:
    """A multi-task row: trained by :func:`depth_recipe` on ``triplets``, its whole model kept at ``kept``."""
    return Variant(label, name, depth_recipe(triplets, kept, init=init), multitask_path=kept)


def variants(args) -> dict[str, Variant]:
    """The rows of ``args.world``, keyed by their ``--models`` name."""
    from segrobust.datasets import CamVidTriplets
    from segrobust.defenses.depth import TripletSegmentationView

    size = tuple(args.size)
    seeded = lambda name: name if args.seed is None else f"{name}-seed{args.seed}"  # as trained_model names it  # noqa: E731
    key = lambda name, epochs=args.epochs: model_key(seeded(name), args.arch, args.encoder, size, epochs)  # noqa: E731
    kept = lambda name, epochs=args.epochs: CACHE / f"{key(name, epochs)}_multitask.pt"  # noqa: E731
    camvid_triplets = lambda: CamVidTriplets(DEFAULT_CAMVID, "train", size=size, cache=True)  # noqa: E731
    if args.world == "camvid":
        triplets = Mapped(camvid_triplets(), flip_triplet)
        return {
            "single": Variant("single-task", "standard", run_recipe("standard")),
            "posenet": multitask_variant("multi-task (PoseNet)", "depthmt", triplets, kept("depthmt")),
        }
    tag = f"synthetic{args.synthetic_train}"
    if args.world == "synthetic":
        train, _ = synthetic_data(args)
        known, posenet = f"{tag}-known", f"{tag}-posenet"
        return {
            "single": Variant("single-task", f"{tag}-single", run_recipe("standard"), TripletSegmentationView(train)),
            "known": multitask_variant("multi-task (known poses)", known, train, kept(known)),
            "posenet": multitask_variant("multi-task (PoseNet)", posenet, Mapped(train, without_poses), kept(posenet)),
        }
    triplets = Mapped(camvid_triplets(), lambda item: flip_triplet(without_poses(item)))
    single, known = f"ft-{tag}-single-from-e{args.epochs}", f"ft-{tag}-known-from-e{args.epochs}"
    return {
        "single": Variant(
            "single-task (synthetic, then CamVid)",
            single,
            from_weights(CACHE / f"{key(f'{tag}-single')}.pt", run_recipe("standard")),
        ),
        "known": multitask_variant(
            "multi-task (synthetic with known poses, then CamVid)",
            known,
            triplets,
            kept(known, args.transfer_epochs),
            init=kept(f"{tag}-known"),
        ),
    }


def evaluate(model, dataset, condition: str, batch_size: int = 16) -> float:
    """mIoU of ``model`` on ``dataset`` under one of :data:`CONDITIONS` (fixed seeds)."""
    from segrobust.attacks import NAA, EroSeg
    from segrobust.metrics import ConfusionMatrix

    cm = ConfusionMatrix(NUM_CLASSES)
    torch.manual_seed(0)
    for b, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        images, masks = batch["image"], batch["mask"]
        kind, _, value = condition.partition(" ")
        if kind == "noise":
            g = torch.Generator().manual_seed(100 + b)
            images = (images + float(value) * torch.randn(images.shape, generator=g)).clamp(0, 1)
        elif kind in ("NAA", "EroSeg"):
            eps = float(value.split("/")[0]) / 255
            cls = NAA if kind == "NAA" else EroSeg
            images = cls(model, eps=eps, alpha=2.5 * eps / 10, steps=10)(images, masks)
        with torch.no_grad():
            cm.update(model(images), masks)
    return cm.compute().miou


def depth_error(args, state: Path | None, test: Dataset) -> float:
    """Median-scaled abs-rel depth error on the test triplets' current frames; untrained branch when ``state`` is None."""
    from segrobust.defenses import DepthMultiTask
    from segrobust.defenses.depth import median_scaled_abs_rel

    torch.manual_seed(0)
    model = DepthMultiTask(build_model(args.arch, args.encoder), **DEPTH_RANGE)
    if state is not None:
        if not state.exists():
            raise SystemExit(f"{state} is missing: delete the cached segmentation weights beside it and rerun")
        model.load_state_dict(torch.load(state, weights_only=True))
    model.eval()
    predicted, true = [], []
    with torch.no_grad():
        for batch in DataLoader(test, batch_size=16, shuffle=False):
            predicted.append(model.predict_depth(batch["frames"][:, 1]))
            true.append(batch["depth"])
    return float(median_scaled_abs_rel(torch.cat(predicted), torch.cat(true)))


def corruption_scores(model, dataset, corruptions: str, severities: str) -> dict[str, Any]:
    """The ImageNet-C corruptions through ``run_benchmark`` (a user's numbers): mean mIoU, its ratio to clean, per family."""
    from segrobust.benchmark import run_benchmark

    results = run_benchmark(model, dataset, attacks="none", rain="none", corruptions=corruptions, num_classes=NUM_CLASSES,
                            severities=severities, batch_size=16, seed=0, progress=False)  # fmt: skip
    summary = results.corruption_summary()
    per_condition = {row.label: row.miou for row in results.rows if row.kind == "corruption"}
    return {
        "mean_miou": summary["mean_miou"],
        "relative_robustness": summary["relative_robustness"],
        "worst_family": summary["worst_family"],
        "families": {name: family["mean"] for name, family in summary["families"].items()},
        "per_corruption": {name: entry["mean"] for name, entry in summary["corruptions"].items()},
        "per_condition": per_condition,
    }


def evaluate_row(args, variant: Variant, model, val: Dataset, test_triplets: Dataset | None) -> dict:
    row: dict[str, Any] = {"model": variant.label}
    for condition in args.conditions:
        row[condition] = evaluate(model, val, condition)
        print(f"{variant.label:30s} {condition:13s} mIoU {row[condition]:.4f}", flush=True)
    if test_triplets is not None and variant.multitask_path is not None:
        row["depth_abs_rel"] = depth_error(args, variant.multitask_path, test_triplets)
        print(f"{variant.label:30s} depth abs-rel {row['depth_abs_rel']:.4f}", flush=True)
    if args.corruptions != "none":
        row["corruptions"] = corruption_scores(model, val, args.corruptions, args.severities)
        print(f"{variant.label:30s} corruptions: mean mIoU {row['corruptions']['mean_miou']:.4f}", flush=True)
    if args.reliable_steps:
        row["reliable 4/255"] = reliable_ensemble(model, val, 4.0, args.reliable_steps)
        print(f"{variant.label:30s} reliable 4/255 mIoU {row['reliable 4/255']['miou']:.4f}", flush=True)
    return row


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=sorted(RESULT_NAMES), default="camvid")
    parser.add_argument("--models", nargs="+", help="rows to run (default: all of the world's); merged into the file")
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (synthetic: of the synthetic models)")
    parser.add_argument("--transfer-epochs", type=int, default=10, help="fine-tuning epochs on CamVid (transfer)")
    parser.add_argument("--synthetic-train", type=int, default=400, help="synthetic training triplets")
    parser.add_argument("--synthetic-test", type=int, default=64, help="held-apart synthetic test triplets")
    parser.add_argument(
        "--conditions", nargs="*", choices=CONDITIONS, default=CONDITIONS, help="noise and 10-step columns"
    )
    parser.add_argument("--corruptions", default="all", help="ImageNet-C corruptions (run_benchmark's names), or none")
    parser.add_argument("--severities", default="1,2,3,4,5", help="corruption severities")
    parser.add_argument("--reliable-steps", type=int, default=100, help="APGD iterations per loss; 0: no ensemble")
    parser.add_argument("--seed", type=int, help="training seed (initial weights and trainer); rows named by it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 evaluation images, results not written")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from segrobust.defenses.depth import TripletSegmentationView

    start = time.time()
    rows_of_world = variants(args)
    chosen = args.models or list(rows_of_world)
    unknown = sorted(set(chosen) - set(rows_of_world))
    if unknown:
        raise SystemExit(f"--models: {unknown} are not rows of --world {args.world} ({sorted(rows_of_world)})")
    test_triplets = synthetic_data(args)[1] if args.world == "synthetic" else None
    val = TripletSegmentationView(test_triplets) if test_triplets is not None else camvid("val", tuple(args.size))
    if args.quick:
        val = torch.utils.data.Subset(val, range(8))
        test_triplets = test_triplets and torch.utils.data.Subset(test_triplets, range(8))
    command = "python benchmarks/depth_multitask.py " + shlex.join(argv or sys.argv[1:])
    base = {"settings": vars(args), "conditions": list(args.conditions), "environment": environment()}

    def write(row: dict) -> None:
        """Merge one finished row into the results file, so a stopped run keeps the rows it finished."""
        if not args.quick:
            base["total_seconds"] = round(time.time() - start, 1)
            print(f"wrote {merge_rows(RESULT_NAMES[args.world], [row], command, base, key=lambda r: r['key'])}")

    for name in chosen:
        variant = rows_of_world[name]
        epochs = args.transfer_epochs if args.world == "transfer" else args.epochs
        size = tuple(args.size)
        model, info = trained_model(variant.name, args.arch, args.encoder, size, epochs, variant.recipe,
                                    train=variant.train, seed=args.seed)  # fmt: skip
        row = {"key": name, **evaluate_row(args, variant, model.eval(), val, test_triplets)}
        if args.seed is not None:
            row.update(key=f"{name}-seed{args.seed}", model=f"{row['model']}, seed {args.seed}", seed=args.seed)
        write({**row, "train_seconds": info.get("train_seconds"), "images": len(val)})
    if test_triplets is not None and not args.models:
        write({"key": "untrained", "model": "untrained depth branch",
               "depth_abs_rel": depth_error(args, None, test_triplets)})  # fmt: skip


if __name__ == "__main__":
    main()
