"""Attack a model as it is evaluated: whole image, sliding window, multi-scale + flip.

Takes segrobust's default model (an smp Unet trained on procedural streets),
evaluates it three ways (the whole image at once; mmsegmentation's sliding
window; multi-scale + flip test-time augmentation on top) and attacks each with
NAA in two settings:

- **end to end**: the attack differentiates through the evaluation mode itself
  (`SlidingWindow` and `MultiScaleFlip` are differentiable wrappers);
- **transferred**: the attack is computed on the whole-image model and its
  images are then evaluated with the sliding window / test-time augmentation,
  which is what one gets by attacking a model without its evaluation mode.

A gap between the two columns shows how much evaluating an attack without the
model's inference procedure overstates robustness.

    python examples/evaluation_modes.py          # a few minutes on a laptop CPU
    python examples/evaluation_modes.py --fast   # a few seconds
"""

from __future__ import annotations

import argparse

import torch

from segrobust.attacks import NAA
from segrobust.benchmark import default_dataset, load_default_model
from segrobust.metrics import mean_iou, per_image_confusion
from segrobust.models import MultiScaleFlip, SegmentationModel, SlidingWindow

NUM_CLASSES = 11


def miou(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    with torch.no_grad():
        return mean_iou(per_image_confusion(model(images), masks, NUM_CLASSES).sum(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--eps", type=float, default=4.0, help="budget in 1/255 units")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, crop, stride, n, steps = (
        ((96, 128), (64, 96), (32, 48), 2, 2) if args.fast else ((192, 256), (96, 128), (48, 64), 16, 10)
    )
    whole = SegmentationModel(load_default_model(progress=False), num_classes=NUM_CLASSES)
    modes = {
        "whole image": whole,
        f"sliding window {crop[0]}x{crop[1]}": SlidingWindow(whole, crop, stride),
        "sliding window + multi-scale/flip": MultiScaleFlip(SlidingWindow(whole, crop, stride), (0.75, 1.0), flip=True),
    }
    data = default_dataset(n, size=size)
    images = torch.stack([data[i]["image"] for i in range(n)])
    masks = torch.stack([data[i]["mask"] for i in range(n)])
    eps = args.eps / 255
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
