"""PEARL on CamVid: segmenter alone vs NAT vs PEARL vs PEARL+AMA under rain and attacks.

The segmenter is the standard CamVid model of ``attack_strength.py`` (trained or
loaded from the cache). NAT fine-tunes a copy of it for ``--epochs`` epochs on
rainy images with NAA; PEARL and PEARL+AMA train a PReNet derainer in front of
the frozen segmenter for the same number of epochs. Rain: the ``--rain``
preset with streak lengths scaled to the image height, a fixed draw per image.

Columns (val split, mIoU): clean / rainy / rainy + NAA / rainy + EroSeg (eps,
10 steps) / rain attack (RainAttack over the same preset's ranges, 10 steps) /
rainy + the reliable ensemble at eps (``--reliable-steps`` APGD iterations per
loss; greedy worst-case mIoU; on the first ``--reliable-images`` val images,
with the rainy mIoU of the same images beside it; ``--reliable-steps 0`` skips it).
On all of val the column is ``reliable``, on a part ``reliable_first{N}``.

``--models`` and ``--conditions`` run some rows and columns only; ``--merge``
then writes them into the results file field by field (parallel runs may share it).

``--transfer`` adds the robustness-transfer reading: PEARL and PEARL+AMA
derainers trained in front of the frozen NAT segmenter (rows "NAT + PEARL",
"NAT + PEARL+AMA").

Usage:
    python benchmarks/pearl.py                    # writes benchmarks/results/pearl.json
    python benchmarks/pearl.py --derainer unet    # writes benchmarks/results/pearl_unet.json
    python benchmarks/pearl.py --derainer unet --epochs 10    # writes benchmarks/results/pearl_unet_e10.json
    python benchmarks/pearl.py --derainer unet --transfer     # writes benchmarks/results/pearl_unet_transfer.json
    python benchmarks/pearl.py --derainer unet --transfer --models NAT --conditions --merge   # one row's ensemble
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import (
    CACHE,
    NUM_CLASSES,
    camvid,
    environment,
    random_flip,
    run_recipe,
    trained_model,
    write_rows,
)

CONDITIONS = ("clean", "rainy", "rainy + NAA", "rainy + EroSeg", "rain attack")


def rainy_images(images: torch.Tensor, ranges, seed: int) -> torch.Tensor:
    from segrobust.rain import render_rain, sample_rain_params

    generator = torch.Generator().manual_seed(seed)
    params = sample_rain_params(images.shape[0], images.shape[-2:], ranges, generator=generator)
    return render_rain(images, params)


def evaluate(model, dataset, ranges, condition: str, eps: float, steps: int = 10, batch_size: int = 16):
    from segrobust.attacks import NAA, EroSeg, RainAttack
    from segrobust.metrics import ConfusionMatrix

    cm = ConfusionMatrix(NUM_CLASSES)
    torch.manual_seed(0)
    for b, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        images, masks = batch["image"], batch["mask"]
        if condition == "clean":
            x = images
        elif condition == "rain attack":
            x = RainAttack(model, ranges=ranges, steps=steps)(images, masks)
        else:
            x = rainy_images(images, ranges, seed=1000 + b)
            if condition == "rainy + NAA":
                x = NAA(model, eps=eps, alpha=2.5 * eps / steps, steps=steps)(x, masks)
            elif condition == "rainy + EroSeg":
                x = EroSeg(model, eps=eps, alpha=2.5 * eps / steps, steps=steps)(x, masks)
        with torch.no_grad():
            cm.update(model(x), masks)
    return cm.compute().miou


def reliable_miou(model, dataset, ranges, eps: float, steps: int, batch_size: int = 16) -> dict:
    """Rainy images (the same draws as ``evaluate``) under the reliable ensemble: greedy worst-case mIoU."""
    from segrobust.attacks import ReliableEnsemble, greedy_worst_case_miou
    from segrobust.attacks.ensemble import SEA_LOSSES  # the documented rows ran SEA's three losses
    from segrobust.metrics import mean_iou, per_image_confusion

    ensemble = ReliableEnsemble(model, eps=eps, steps=steps, early_stop=False, losses=SEA_LOSSES)
    rainy, attacked = [], []
    torch.manual_seed(0)
    for b, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
        x = rainy_images(batch["image"], ranges, seed=1000 + b)
        with torch.no_grad():
            rainy.append(per_image_confusion(model(x), batch["mask"], NUM_CLASSES))
        attacked.append(ensemble(x, batch["mask"], return_stats=True)[1].confusion)
    worst, _ = greedy_worst_case_miou(torch.cat(attacked, 1))
    return {"rainy": mean_iou(torch.cat(rainy).sum(0)), "reliable": worst, "images": len(dataset)}


def trained_pearl(segmenter, ama: bool, tag: str, train_set, ranges, eps: float, args):
    """A PEARL model: a derainer trained (or loaded from the cache) in front of the frozen ``segmenter``."""
    from segrobust.defenses import PEARL, RECIPES, build_derainer

    size = tuple(args.size)
    path = (
        CACHE / f"pearl{'-ama' if ama else ''}{tag}_{args.derainer}_{args.rain}_{size[0]}x{size[1]}_e{args.epochs}.pt"
    )
    torch.manual_seed(0)  # the derainer's initial weights do not depend on which rows ran before it
    derainer = build_derainer(args.derainer)
    if path.exists():
        derainer.load_state_dict(torch.load(path, weights_only=True))
        pearl = PEARL(segmenter, derainer)
    else:
        config = RECIPES["pearl"].config(
            derainer=derainer,
            ama=ama,
            transform=random_flip,
            rain=ranges,
            eps=eps,
            steps=args.train_steps,
            epochs=args.epochs,
            cache_dir=CACHE,
            num_classes=NUM_CLASSES,
            progress=False,
            checkpoint_dir=CACHE / f"{path.stem}_ckpt",
            resume=True,
            trainer_kwargs={"logger": lambda r: print(r, flush=True)},
        )
        pearl = RECIPES["pearl"](copy.deepcopy(segmenter), train_set, config).model
        torch.save(derainer.state_dict(), path)
    # Derainer training time from the trainer's own history (kept in its checkpoint, also for cached runs).
    checkpoint = CACHE / f"{path.stem}_ckpt" / "last.pt"
    seconds = None
    if checkpoint.exists():
        history = torch.load(checkpoint, map_location="cpu", weights_only=False)["history"]
        seconds = round(sum(record["time"] for record in history), 1)
    return pearl.eval(), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--base-epochs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3, help="NAT fine-tuning and derainer training epochs")
    parser.add_argument("--eps", type=float, default=4.0, help="in 1/255 units")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument(
        "--nat-lr",
        type=float,
        default=1e-4,
        help="NAT fine-tuning learning rate (as the PGD-AT fine-tuning of adversarial_training.py)",
    )
    parser.add_argument("--rain", default="medium")
    parser.add_argument("--derainer", default="prenet")
    parser.add_argument("--transfer", action="store_true", help="also PEARL / PEARL+AMA on the NAT segmenter")
    parser.add_argument("--reliable-steps", type=int, default=100, help="APGD iterations per loss; 0: no ensemble")
    parser.add_argument("--reliable-images", type=int, default=None, help="ensemble on the first N val images")
    parser.add_argument("--models", nargs="+", help="rows to evaluate (default: all)")
    parser.add_argument("--conditions", nargs="*", choices=CONDITIONS, default=CONDITIONS, help="10-step columns")
    parser.add_argument("--merge", action="store_true", help="write the rows into the results file field by field")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 val images, results not written")
    args = parser.parse_args(argv)
    if (args.models or set(args.conditions) != set(CONDITIONS)) and not (args.merge or args.quick):
        parser.error("--models and --conditions write part of a table: add --merge to keep the rest of the file")
    torch.set_num_threads(args.threads)
    from segrobust.rain import scale_rain_ranges

    size = tuple(args.size)
    eps = args.eps / 255
    ranges = scale_rain_ranges(args.rain, size[0])
    start = time.time()
    segmenter, _ = trained_model("standard", args.arch, args.encoder, size, args.base_epochs, run_recipe("standard"))
    train_set, val = camvid("train", size), camvid("val", size)
    if args.quick:
        train_set, val = torch.utils.data.Subset(train_set, range(16)), torch.utils.data.Subset(val, range(8))
    models = {"segmenter alone": segmenter}
    train_seconds = {"segmenter alone": None}

    def nat_recipe(model, loader, **kw):
        model.load_state_dict(segmenter.state_dict())  # NAT fine-tunes the standard model
        kw["optimizer"] = torch.optim.Adam(model.parameters(), lr=args.nat_lr, weight_decay=1e-4)
        return run_recipe("nat")(model, loader, rain=ranges, eps=eps, steps=args.train_steps, **kw)

    nat_key = f"nat{args.eps:g}s{args.train_steps}-lr{args.nat_lr:g}-{args.rain}-from-e{args.base_epochs}"
    # (name, AMA, on the NAT segmenter): the derainer rows of this run.
    pearls = [("PEARL", False, False), ("PEARL+AMA", True, False)]
    if args.transfer:
        pearls += [("NAT + PEARL", False, True), ("NAT + PEARL+AMA", True, True)]
    rows_of_run = ["segmenter alone", "NAT", *(name for name, _, _ in pearls)]
    unknown = sorted(set(args.models or ()) - set(rows_of_run))
    if unknown:
        raise SystemExit(f"--models: {unknown} are not rows of this run ({rows_of_run})")
    wanted = args.models or rows_of_run
    # Only the models the rows need are trained, so parallel runs can split the rows.
    needs_nat = {"NAT"} | {name for name, _, on_nat in pearls if on_nat}
    if needs_nat & set(wanted):
        nat, nat_info = trained_model(nat_key, args.arch, args.encoder, size, args.epochs, nat_recipe)
        models["NAT"] = nat
        train_seconds["NAT"] = nat_info.get("train_seconds")
    for name, ama, on_nat in pearls:
        if name not in wanted:
            continue
        base, tag = (models["NAT"], f"-on-{nat_key}") if on_nat else (segmenter, "")
        tag += "-quick" if args.quick else ""  # a smoke run's derainers never stand in for real ones
        models[name], train_seconds[name] = trained_pearl(base, ama, tag, train_set, ranges, eps, args)

    command = "python benchmarks/pearl.py " + shlex.join(argv or sys.argv[1:])
    settings = {**vars(args), "rain_ranges": {k: list(v) if isinstance(v, tuple) else v for k, v in ranges.items()}}
    rows = []
    for name in wanted:
        measured = evaluate_row(models[name], name, val, ranges, eps, args)
        rows.append({"model": name, "train_seconds": train_seconds[name], **measured})
        if not args.quick:  # written as each row finishes, so a stopped run keeps the rows it finished
            payload = {"command": command, "settings": settings, "conditions": list(CONDITIONS), "rows": rows,
                       "total_seconds": round(time.time() - start, 1), "environment": environment()}  # fmt: skip
            print(f"wrote {write_rows(results_name(args), payload, rows[-1:] if args.merge else None, by_model)}")


def by_model(row: dict) -> str:
    return row["model"]


def evaluate_row(model, name: str, val, ranges, eps: float, args) -> dict:
    """The 10-step columns of ``--conditions`` and the reliable ensemble of one model."""
    row = {}
    for condition in args.conditions:
        row[condition] = evaluate(model, val, ranges, condition, eps)
        print(f"{name:16s} {condition:15s} mIoU {row[condition]:.4f}", flush=True)
    if args.reliable_steps:
        count = min(args.reliable_images or len(val), len(val))
        column = "reliable" if count == len(val) else f"reliable_first{count}"
        row[column] = reliable_miou(model, torch.utils.data.Subset(val, range(count)), ranges, eps, args.reliable_steps)
        print(f"{name:16s} rainy + reliable ensemble {row[column]}", flush=True)
    return row


def results_name(args) -> str:
    """Other derainers and epoch counts get their own results file, so the runs can sit side by side."""
    return (
        "pearl"
        + ("" if args.derainer == "prenet" else f"_{args.derainer}")
        + ("" if args.epochs == 3 else f"_e{args.epochs}")
        + ("_transfer" if args.transfer else "")
    )


if __name__ == "__main__":
    main()
