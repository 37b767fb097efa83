"""Attack a model as it is evaluated: whole image, sliding window, multi-scale + flip.

Trains a small smp model on procedural streets, then evaluates it three ways
(the whole image at once; mmsegmentation's sliding window; multi-scale + flip
test-time augmentation on top) and attacks each with NAA in two settings:

- **end to end**: the attack differentiates through the evaluation mode itself
  (`SlidingWindow` and `MultiScaleFlip` are differentiable wrappers);
- **transferred**: the attack is computed on the whole-image model and its
  images are then evaluated with the sliding window / test-time augmentation,
  which is what one gets by attacking a model without its evaluation mode.

A gap between the two rows shows how much evaluating an attack without the
model's inference procedure overstates (or understates) robustness.

    python examples/evaluation_modes.py          # ~2 minutes on a laptop CPU
    python examples/evaluation_modes.py --fast   # a few seconds
"""

from __future__ import annotations

import argparse

import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.attacks import NAA
from segrobust.datasets import SyntheticStreets
from segrobust.metrics import mean_iou, per_image_confusion
from segrobust.models import MultiScaleFlip, SegmentationModel, SlidingWindow
from segrobust.training import train_standard

NUM_CLASSES = 11


def trained_model(size: tuple[int, int], n_train: int, epochs: int) -> torch.nn.Module:
    train = DataLoader(SyntheticStreets(n_train, size=size, seed=0), batch_size=8, shuffle=True)
    net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(64, 32, 16, 8), classes=11)
    train_standard(
        net,
        train,
        epochs=epochs,
        optimizer=torch.optim.Adam(net.parameters(), 1e-3),
        num_classes=NUM_CLASSES,
        trainer_kwargs={"progress": False},
    )
    return SegmentationModel(net.eval(), num_classes=NUM_CLASSES)


def miou(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    with torch.no_grad():
        return mean_iou(per_image_confusion(model(images), masks, NUM_CLASSES).sum(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--eps", type=float, default=4.0, help="budget in 1/255 units")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n_train, epochs, n_val, steps = ((64, 96), 16, 1, 4, 2) if args.fast else ((128, 192), 160, 4, 16, 10)
    whole = trained_model(size, n_train, epochs)
    crop, stride = (size[0] // 2 + 16, size[1] // 2 + 16), (size[0] // 4, size[1] // 4)
    modes = {
        "whole image": whole,
        f"sliding window {crop[0]}x{crop[1]}": SlidingWindow(whole, crop, stride),
        "sliding window + multi-scale/flip": MultiScaleFlip(SlidingWindow(whole, crop, stride), (0.75, 1.0), flip=True),
    }
    batch = next(iter(DataLoader(SyntheticStreets(n_val, size=size, seed=0, split="val"), batch_size=n_val)))
    images, masks, eps = batch["image"], batch["mask"], args.eps / 255
    transferred = NAA(whole, eps=eps, alpha=eps / 4, steps=steps)(images, masks)

    print(f"{'evaluation mode':36s} {'clean':>6s} {'NAA end to end':>15s} {'NAA transferred':>16s}")
    for name, model in modes.items():
        end_to_end = NAA(model, eps=eps, alpha=eps / 4, steps=steps)(images, masks)
        print(
            f"{name:36s} {miou(model, images, masks):6.3f} {miou(model, end_to_end, masks):15.3f} "
            f"{miou(model, transferred, masks):16.3f}"
        )


if __name__ == "__main__":
    main()
