"""PEARL in a few lines: put a derainer in front of a trained model, train it against rain + NAA.

Trains a small smp model on procedural streets, then trains a PReNet derainer
in front of it (PEARL with AMA targets; the segmenter stays frozen), and
compares mIoU clean / rainy / rainy + NAA for the model alone and for PEARL.

    python examples/pearl_defense.py          # a few minutes on a laptop CPU
    python examples/pearl_defense.py --fast   # seconds
"""

from __future__ import annotations

import argparse
import tempfile

import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.attacks import NAA
from segrobust.datasets import SyntheticStreets
from segrobust.defenses import RECIPES as DEFENSE_RECIPES
from segrobust.defenses import PReNet
from segrobust.rain import render_rain, sample_rain_params, scale_rain_ranges
from segrobust.training import RECIPES, StandardConfig, evaluate


def miou(model, loader, rain_ranges=None, attack=None) -> float:
    def add_rain(images: torch.Tensor) -> torch.Tensor:  # a fixed draw, so every model sees the same rain
        generator = torch.Generator().manual_seed(0)
        return render_rain(
            images, sample_rain_params(images.shape[0], images.shape[-2:], rain_ranges, generator=generator)
        )

    return evaluate(
        model, loader, num_classes=11, attack=attack, input_transform=add_rain if rain_ranges is not None else None
    )["miou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n, epochs, pearl_epochs = ((48, 64), 16, 1, 1) if args.fast else ((96, 128), 160, 4, 3)
    train_set = SyntheticStreets(n, size=size, seed=0)
    val = DataLoader(SyntheticStreets(8 if args.fast else 32, size=size, seed=0, split="val"), batch_size=8)
    rain = scale_rain_ranges("medium", size[0])

    segmenter = smp.Unet(
        "resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(64, 32, 16, 8), classes=11
    )
    config = StandardConfig(
        epochs=epochs, optimizer=torch.optim.Adam(segmenter.parameters(), 1e-3), num_classes=11, progress=False
    )
    RECIPES["standard"](segmenter, DataLoader(train_set, batch_size=8, shuffle=True), config)
    segmenter.eval()

    derainer = PReNet(stages=2 if args.fast else 6)
    with tempfile.TemporaryDirectory() as cache:
        pearl_config = DEFENSE_RECIPES["pearl"].config(
            derainer=derainer,
            ama=True,
            rain=rain,
            eps=4 / 255,
            steps=1 if args.fast else 3,
            ama_steps=2 if args.fast else 10,
            epochs=pearl_epochs,
            batch_size=8,
            num_classes=11,
            cache_dir=cache,
            progress=False,
        )
        pearl = DEFENSE_RECIPES["pearl"](segmenter, train_set, pearl_config).model
    pearl.eval()

    print(f"{'model':16s} {'clean':>6s} {'rainy':>6s} {'rainy+NAA':>9s}")
    for name, model in (("segmenter alone", segmenter), ("PEARL (+AMA)", pearl)):
        naa = NAA(model, eps=4 / 255, alpha=1 / 255, steps=2 if args.fast else 10)
        print(f"{name:16s} {miou(model, val):6.3f} {miou(model, val, rain):6.3f} {miou(model, val, rain, naa):9.3f}")


if __name__ == "__main__":
    main()
