"""Reliable evaluation: how much a short attack overstates robustness, on a model you just trained.

Trains a small smp model on procedural streets, then attacks its validation
scenes at one budget with a short CosPGD (the kind of number papers often
report), one long APGD run, the reliable ensemble's ``default`` preset (masked
CE, then Jensen-Shannon warm-started from the worst case so far; ``quick``, its
smoke-test size, with ``--fast``) and an ensemble of your own members. For each
ensemble it prints the pixel accuracy and mIoU of the per-image worst case, the
greedy worst-case mIoU over the set, the iterations spent per image and which
member each image's worst case came from.

    python examples/reliable_evaluation.py          # tens of minutes on 2 CPU cores
    python examples/reliable_evaluation.py --fast   # a few seconds
"""

from __future__ import annotations

import argparse

import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.attacks import APGD, RELIABLE_PRESETS, CosPGD, EnsembleMember, ReliableEnsemble
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


def evaluate(name: str, ensemble: ReliableEnsemble, images: torch.Tensor, masks: torch.Tensor) -> None:
    """The ensemble's worst case per image, its greedy worst-case mIoU, its cost and where each worst case came from."""
    _, stats = ensemble(images, masks, return_stats=True)
    report(f"{name} (worst case)", stats.confusion[stats.choice, torch.arange(len(images))])
    greedy, picks = stats.greedy_miou()
    print(f"{'greedy worst-case mIoU':34s} {greedy:.3f}")
    # fewer than the members' total where early stop spared an image already at 0 % accuracy
    print(f"  iterations per image: {stats.iterations_per_image.tolist()}")
    print(f"  worst case per image from: {[stats.member_names[int(a)] for a in stats.choice]}")
    print(f"  greedy pick per image:     {[stats.member_names[int(a)] for a in picks]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--eps", type=float, default=4.0, help="budget in 1/255 units")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n_train, epochs, n_val = ((64, 96), 16, 1, 4) if args.fast else ((96, 128), 160, 4, 16)
    short, steps, preset = (2, 6, "quick") if args.fast else (10, 100, "default")
    model = trained_model(size, n_train, epochs)
    batch = next(iter(DataLoader(SyntheticStreets(n_val, size=size, seed=0, split="val"), batch_size=n_val)))
    images, masks, eps = batch["image"], batch["mask"], args.eps / 255

    report("clean", confusion_under(model, images, masks))
    cospgd = CosPGD(model, eps, 2.5 * eps / short, short)
    report(f"CosPGD, {short} steps", confusion_under(model, images, masks, cospgd))
    apgd = APGD(model, eps, None, steps, loss="ce", radius_schedule="sea")
    report(f"APGD ce, {steps} iterations", confusion_under(model, images, masks, apgd))

    # A named preset (segrobust list shows them all): the members and their iterations come with it.
    print(f"preset {preset!r}: {RELIABLE_PRESETS[preset].describe()}")
    evaluate("reliable ensemble", ReliableEnsemble(model, eps, preset=preset), images, masks)

    # Members of your own: any pixel loss, step rule and APGD option; a warm-started member begins
    # from the worst case the earlier members left, not from a random point.
    members = [
        EnsembleMember("masked_ce", steps, control="ce", handover="best"),
        EnsembleMember("tsallis", steps, step_rule="padam", warm_start=True),
        EnsembleMember("js", steps, control="ce", handover="best", warm_start=True),
    ]
    print("custom members: " + " → ".join(member.describe() for member in members))
    evaluate("custom ensemble", ReliableEnsemble(model, eps, members=members), images, masks)


if __name__ == "__main__":
    main()
