"""Depth multi-task defence on CamVid: single-task vs multi-task at equal epochs.

Single-task is the standard CamVid model of ``attack_strength.py``; multi-task
wraps the same architecture in ``DepthMultiTask`` and trains segmentation and
self-supervised depth (a PoseNet, CamVid has no poses) jointly on CamVid train
triplets for the same number of epochs, from scratch. Both are evaluated as
plain segmentation models on val: clean, Gaussian noise (σ = 0.02, 0.05, 0.1,
fixed seed), and NAA and EroSeg at 1/255, 2/255, 4/255 (10 steps).

Usage:
    python benchmarks/depth_multitask.py          # writes benchmarks/results/depth_multitask.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import DEFAULT_CAMVID, NUM_CLASSES, camvid, environment, trained_model, write_results


class FlipTriplets(Dataset):
    """Horizontal flip of all three frames and the mask with probability 0.5."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = dict(self.dataset[index])
        if torch.rand(()) < 0.5:
            item["frames"] = item["frames"].flip(-1)
            item["mask"] = item["mask"].flip(-1)
        return item


def evaluate(model, dataset, condition: str, batch_size: int = 16) -> float:
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: 8 val images, results not written")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from segrobust.datasets import CamVidTriplets
    from segrobust.defenses import train_depth_multitask
    from segrobust.training import train_standard

    size = tuple(args.size)
    start = time.time()
    single, _ = trained_model("standard", args.arch, args.encoder, size, args.epochs, train_standard)

    def multitask_recipe(model, loader, **kw):
        kw.pop("optimizer", None)
        kw.pop("scheduler", None)
        triplets = FlipTriplets(CamVidTriplets(DEFAULT_CAMVID, "train", size=size, cache=True))
        trainer_kwargs = kw.pop("trainer_kwargs", {})
        multitask, history = train_depth_multitask(
            model, triplets, epochs=kw.pop("epochs"), batch_size=8, lr=1e-3, trainer_kwargs=trainer_kwargs, **kw
        )
        model.load_state_dict(multitask.segmentation_model().state_dict())
        return history

    multi, _ = trained_model("depthmt", args.arch, args.encoder, size, args.epochs, multitask_recipe)
    val = camvid("val", size)
    if args.quick:
        val = torch.utils.data.Subset(val, range(8))
    conditions = [
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
    ]
    rows = []
    for name, model in (("single-task", single), ("multi-task (depth)", multi)):
        row = {"model": name}
        for condition in conditions:
            row[condition] = evaluate(model.eval(), val, condition)
            print(f"{name:20s} {condition:13s} mIoU {row[condition]:.4f}", flush=True)
        rows.append(row)
    payload = {
        "command": "python benchmarks/depth_multitask.py " + " ".join(argv or sys.argv[1:]),
        "settings": vars(args),
        "conditions": conditions,
        "rows": rows,
        "total_seconds": round(time.time() - start, 1),
        "environment": environment(),
    }
    if args.quick:
        return
    print(f"wrote {write_results('depth_multitask', payload)}")


if __name__ == "__main__":
    main()
