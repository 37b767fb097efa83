"""segrobust in IBM ART: wrap a segmentation model as an ART estimator, attack it with ART's
tools and segrobust's attacks, and adversarially train it with ART's trainer.

Steps:

1. build an smp Unet (``encoder_weights=None``) and wrap it in
   :class:`segrobust.art.PyTorchSegmenter` (standardisation inside the estimator);
2. train it with ``estimator.fit`` on :class:`segrobust.datasets.SyntheticStreets`
   (procedural street scenes with CamVid labels);
3. attack it with ART's ``FastGradientMethod``, :class:`segrobust.art.SegmentationPGD`
   (ART's PGD with random init on masks) and segrobust's NAA, SegPGD, CosPGD and
   EroSeg through ``segrobust.art``, and "help" it with AMA; print mIoU for each;
4. fine-tune it with :class:`segrobust.art.SegmentationAdversarialTrainerMadryPGD`
   and attack it again.

Usage::

    python examples/art_quickstart.py            # 96x128 scenes, about 9 minutes on one CPU thread
    python examples/art_quickstart.py --fast     # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from segrobust.metrics import ConfusionMatrix

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load(n: int, size: tuple[int, int], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, H, W)`` float32 in [0, 1] and masks ``(n, H, W)`` int64, as ART wants them."""
    from segrobust.datasets import SyntheticStreets

    data = SyntheticStreets(n=n, size=size, seed=0, split=split)
    items = [data[i] for i in range(n)]
    images = np.stack([item["image"].numpy() for item in items]).astype(np.float32)
    masks = np.stack([item["mask"].numpy() for item in items]).astype(np.int64)
    return images, masks


def miou(estimator, images: np.ndarray, masks: np.ndarray) -> float:
    matrix = ConfusionMatrix(estimator.nb_classes, ignore_index=estimator.ignore_index)
    matrix.update(torch.from_numpy(estimator.predict(images, batch_size=8)), torch.from_numpy(masks))
    return matrix.compute().miou


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--eps", type=float, default=4 / 255)
    args = parser.parse_args()

    import segmentation_models_pytorch as smp
    from art.attacks.evasion import FastGradientMethod

    import segrobust.art as sart

    if args.fast:
        size, n_train, n_test, epochs, steps, depth, decoder = (32, 48), 8, 4, 2, 2, 3, (32, 16, 8)
    else:
        size, n_train, n_test, epochs, steps, depth, decoder = (96, 128), 96, 16, 15, 10, 5, (256, 128, 64, 32, 16)
    epochs = args.epochs or epochs
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (ART's attacks draw from the global generator)

    x_train, y_train = load(n_train, size, "train")
    x_test, y_test = load(n_test, size, "val")

    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=depth, decoder_channels=decoder, classes=11)
    estimator = sart.PyTorchSegmenter(
        model,
        input_shape=(3, *size),
        nb_classes=11,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        ignore_index=255,
        clip_values=(0.0, 1.0),
        preprocessing=(MEAN, STD),  # standardisation lives in the estimator: attacks see [0, 1] images
    )
    start = time.perf_counter()
    estimator.fit(x_train, y_train, batch_size=8, nb_epochs=epochs)
    print(f"trained {epochs} epochs on {n_train} scenes {size} in {time.perf_counter() - start:.1f} s")

    eps = args.eps
    attacks = {
        "ART FastGradientMethod": FastGradientMethod(estimator, norm=np.inf, eps=eps, batch_size=8),
        "segrobust.art.SegmentationPGD": sart.SegmentationPGD(
            estimator, eps=eps, eps_step=eps / 4, max_iter=steps, num_random_init=1, verbose=False
        ),
        "segrobust.art.NAA": sart.NAA(estimator, eps=eps, alpha=eps / 4, steps=steps),
        "segrobust.art.SegPGD": sart.SegPGD(estimator, eps=eps, alpha=eps / 4, steps=steps),
        "segrobust.art.CosPGD": sart.CosPGD(estimator, eps=eps, alpha=eps / 4, steps=steps),
        "segrobust.art.EroSeg": sart.EroSeg(estimator, eps=eps, alpha=eps / 4, steps=steps),
        "segrobust.art.AMA (helps)": sart.AMA(estimator, eps=eps, alpha=eps / 4, steps=steps),
    }

    def report(title: str) -> None:
        print(f"\n{title}: eps = {eps * 255:.1f}/255")
        print(f"{'attack':<34}{'mIoU':>8}")
        print(f"{'clean':<34}{miou(estimator, x_test, y_test):>8.3f}")
        for name, attack in attacks.items():
            torch.manual_seed(0)
            np.random.seed(0)  # noqa: NPY002 (ART's attacks draw from the global generator)
            adversarial = attack.generate(x_test, y_test)
            assert np.abs(adversarial - x_test).max() <= eps + 1e-6
            print(f"{name:<34}{miou(estimator, adversarial, y_test):>8.3f}")

    report("normally trained")

    trainer = sart.SegmentationAdversarialTrainerMadryPGD(
        estimator, nb_epochs=max(1, epochs // 3), batch_size=8, eps=eps, eps_step=eps / 4, max_iter=max(2, steps // 2)
    )
    start = time.perf_counter()
    trainer.fit(x_train, y_train)
    print(f"\nMadry PGD adversarial fine-tuning: {time.perf_counter() - start:.1f} s")
    report("after adversarial fine-tuning")


if __name__ == "__main__":
    main()
