"""Compare NAA, SegPGD, CosPGD and EroSeg (and AMA) on one model, and draw what they do.

Trains a small smp model on procedural streets (or uses --checkpoint), attacks
the validation scenes at one budget, prints mIoU and pixel accuracy per attack,
and writes a figure: image, adversarial image, amplified perturbation,
prediction and ground truth for each attack, in CamVid colours.

    python examples/compare_attacks.py --out docs/images/attacks_gallery.png
    python examples/compare_attacks.py --fast --out /tmp/attacks.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.attacks import AMA, NAA, CosPGD, EroSeg, SegPGD
from segrobust.datasets import SyntheticStreets, colorize
from segrobust.metrics import ConfusionMatrix
from segrobust.training import RECIPES, StandardConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--eps", type=float, default=4.0, help="budget in 1/255 units")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="attacks_gallery.png")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n_train, epochs, steps = ((64, 96), 16, 1, 2) if args.fast else ((96, 128), 200, 6, args.steps)
    train = DataLoader(SyntheticStreets(n_train, size=size, seed=0), batch_size=8, shuffle=True)
    val = SyntheticStreets(8 if args.fast else 32, size=size, seed=0, split="val")
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(64, 32, 16, 8), classes=11)
    config = StandardConfig(
        epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), 1e-3), num_classes=11, progress=False
    )
    RECIPES["standard"](model, train, config)
    model.eval()

    eps = args.eps / 255
    attacks = {
        name: cls(model, eps=eps, alpha=2.5 * eps / steps, steps=steps)
        for name, cls in [("NAA", NAA), ("SegPGD", SegPGD), ("CosPGD", CosPGD), ("EroSeg", EroSeg), ("AMA", AMA)]
    }
    batch = next(iter(DataLoader(val, batch_size=len(val))))
    images, masks = batch["image"], batch["mask"]
    shown = 0
    rows = [("clean", images)]
    print(f"{'attack':8s} {'mIoU':>6s} {'pixel acc':>9s}")
    for name, attack in [("clean", None), *attacks.items()]:
        torch.manual_seed(0)
        adv = images if attack is None else attack(images, masks)
        cm = ConfusionMatrix(11)
        with torch.no_grad():
            cm.update(model(adv), masks)
        scores = cm.compute()
        print(f"{name:8s} {scores.miou:6.3f} {scores.pixel_accuracy:9.3f}")
        if attack is not None:
            rows.append((name, adv))

    columns = ["image", "perturbation ×(0.5/ε)", "prediction", "ground truth"]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.4 * len(columns), 1.8 * len(rows)))
    with torch.no_grad():
        for r, (name, adv) in enumerate(rows):
            pred = model(adv[shown : shown + 1]).argmax(1)[0]
            delta = (adv[shown] - images[shown]) * (0.5 / eps) + 0.5
            panels = [
                adv[shown].permute(1, 2, 0),
                delta.clamp(0, 1).permute(1, 2, 0),
                colorize(pred),
                colorize(masks[shown]),
            ]
            for c, panel in enumerate(panels):
                ax = axes[r, c]
                ax.imshow(panel.numpy() if hasattr(panel, "numpy") else panel)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(columns[c], fontsize=9)
                if c == 0:
                    ax.set_ylabel(name, fontsize=9)
    fig.suptitle(f"L∞ ε = {args.eps:g}/255, {steps} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
