"""Reliable evaluation: how much a short attack overstates robustness, on a model you just trained.

Trains a small smp model on procedural streets, then attacks its validation
scenes at one budget with a short CosPGD (the kind of number papers often
report), single APGD runs, and the reliable ensemble (APGD with masked CE,
balanced masked CE and Jensen-Shannon, worst case per image). Prints pixel
accuracy and mIoU of each, the ensemble's greedy worst-case mIoU over the set,
which member each image's worst case came from, and the model passes spent.

    python examples/reliable_evaluation.py          # ~2 minutes on a laptop CPU
    python examples/reliable_evaluation.py --fast   # a few seconds
"""

from __future__ import annotations

import argparse

import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.attacks import APGD, CosPGD, ReliableEnsemble, greedy_worst_case_miou
from segrobust.datasets import SyntheticStreets
from segrobust.metrics import mean_iou, per_image_confusion
from segrobust.training import RECIPES, StandardConfig

NUM_CLASSES = 11


def trained_model(size: tuple[int, int], n_train: int, epochs: int) -> torch.nn.Module:
    train = DataLoader(SyntheticStreets(n_train, size=size, seed=0), batch_size=8, shuffle=True)
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(64, 32, 16, 8), classes=11)
    config = StandardConfig(
        epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), 1e-3), num_classes=NUM_CLASSES, progress=False
    )
    RECIPES["standard"](model, train, config)
    return model.eval()


def report(name: str, confusion: torch.Tensor) -> None:
    """One line: pixel accuracy and mIoU of per-image confusions ``(N, K, K)`` summed over the set."""
    total = confusion.sum(0)
    accuracy = float(total.diagonal().sum() / total.sum())
    print(f"{name:34s} pixel acc {accuracy:.3f}   mIoU {mean_iou(total):.3f}")


def confusion_under(model, images, masks, attack=None) -> torch.Tensor:
    adv = images if attack is None else attack(images, masks)
    with torch.no_grad():
        return per_image_confusion(model(adv), masks, NUM_CLASSES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--eps", type=float, default=4.0, help="budget in 1/255 units")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n_train, epochs, n_val = ((64, 96), 16, 1, 4) if args.fast else ((96, 128), 160, 4, 16)
    short, steps = (2, 6) if args.fast else (10, 100)
    model = trained_model(size, n_train, epochs)
    batch = next(iter(DataLoader(SyntheticStreets(n_val, size=size, seed=0, split="val"), batch_size=n_val)))
    images, masks, eps = batch["image"], batch["mask"], args.eps / 255

    report("clean", confusion_under(model, images, masks))
    cospgd = CosPGD(model, eps, 2.5 * eps / short, short)
    report(f"CosPGD, {short} steps", confusion_under(model, images, masks, cospgd))
    for loss in ("ce", "js"):
        apgd = APGD(model, eps, None, steps, loss=loss, radius_schedule="sea")
        report(f"APGD {loss}, {steps} iterations", confusion_under(model, images, masks, apgd))

    ensemble = ReliableEnsemble(model, eps=eps, steps=steps, early_stop=False)
    _, stats = ensemble(images, masks, return_stats=True)
    worst = stats.confusion[stats.choice, torch.arange(n_val)]
    report("reliable ensemble (worst case)", worst)
    greedy, picks = greedy_worst_case_miou(stats.confusion)
    print(f"{'greedy worst-case mIoU':34s} {greedy:.3f}")
    print("worst case per image from:", [stats.member_names[int(a)] for a in stats.choice])
    print("greedy pick per image:    ", [stats.member_names[int(a)] for a in picks])
    print(f"model passes per image (fwd + bwd): {stats.passes_per_image.float().mean():.0f}")


if __name__ == "__main__":
    main()
