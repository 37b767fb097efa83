"""Quick start: train a small smp model on procedural streets, attack it with NAA, measure mIoU.

python examples/quickstart_attack.py          # ~1 minute on a laptop CPU
python examples/quickstart_attack.py --fast   # a few seconds
"""

from __future__ import annotations

import argparse

import segmentation_models_pytorch as smp
import torch
from torch.utils.data import DataLoader

from segrobust.attacks import AMA, NAA
from segrobust.datasets import SyntheticStreets
from segrobust.training import RECIPES, StandardConfig, evaluate


def miou(model, loader, attack=None) -> float:
    return evaluate(model, loader, num_classes=11, attack=attack)["miou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, for tests")
    args = parser.parse_args()
    torch.manual_seed(0)
    size, n_train, epochs = ((64, 96), 16, 1) if args.fast else ((96, 128), 160, 4)
    train = DataLoader(SyntheticStreets(n_train, size=size, seed=0), batch_size=8, shuffle=True)
    val = DataLoader(SyntheticStreets(8 if args.fast else 32, size=size, seed=0, split="val"), batch_size=8)

    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=4, decoder_channels=(64, 32, 16, 8), classes=11)
    config = StandardConfig(
        epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), 1e-3), num_classes=11, progress=False
    )
    RECIPES["standard"](model, train, config)
    model.eval()

    naa = NAA(model, eps=4 / 255, alpha=1 / 255, steps=2 if args.fast else 10)
    ama = AMA(model, eps=4 / 255, alpha=1 / 255, steps=2 if args.fast else 10)
    print(f"clean       mIoU {miou(model, val):.3f}")
    print(f"NAA 4/255   mIoU {miou(model, val, naa):.3f}")
    print(f"AMA 4/255   mIoU {miou(model, val, ama):.3f}   (a 'positive' image: higher is expected)")


if __name__ == "__main__":
    main()
