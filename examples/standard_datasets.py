"""Benchmark a model on a standard data set on your disk: Cityscapes, RainCityscapes, VOC, ADE20K or CamVid.

Loads the split with `build_dataset` (the data set's own layout, ids mapped
to train ids, void pixels to 255), prints what it found, and runs the
benchmark on it: clean, a short CosPGD and the reliable ensemble at one
budget. Pass the smp model you trained (`--weights`, a state_dict) for
meaningful numbers; without it the model is untrained and the run only shows
the pipeline.

    python examples/standard_datasets.py --dataset cityscapes --root /data/cityscapes --size 256 512 \\
        --arch Unet --encoder resnet34 --weights my_cityscapes_unet.pt
    python examples/standard_datasets.py --fast   # writes a tiny Cityscapes-layout tree to a temporary folder

Cityscapes expects ``root/leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
``root/gtFine/<split>/<city>/*_gtFine_labelIds.png``; the other layouts are in
the docs (Data sets).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from PIL import Image

from segrobust.benchmark import run_benchmark
from segrobust.datasets import build_dataset

#: Cityscapes label ids of the tiny tree: road, sidewalk, building, ..., and void ids (0, 1) on the border
_CITYSCAPES_IDS = np.array([0, 7, 8, 11, 17, 21, 23, 24, 26, 1])


def tiny_cityscapes(root: Path, frames: int = 2, size: tuple[int, int] = (32, 64)) -> Path:
    """A Cityscapes ``val`` split of ``frames`` random frames in the exact layout (for ``--fast``)."""
    rng = np.random.default_rng(0)
    for k in range(frames):
        city, stem = "frankfurt", f"frankfurt_{k:06d}_000019"
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        labels = np.repeat(_CITYSCAPES_IDS, size[1] // len(_CITYSCAPES_IDS) + 1)[: size[1]]
        for folder, name, array in (
            ("leftImg8bit", f"{stem}_leftImg8bit.png", image),
            ("gtFine", f"{stem}_gtFine_labelIds.png", np.tile(np.roll(labels, k), (size[0], 1)).astype(np.uint8)),
        ):
            path = root / folder / "val" / city / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cityscapes", help="cityscapes, rain-cityscapes, voc, ade20k, camvid")
    parser.add_argument("--root", help="the data set's folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--arch", default="Unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--weights", help="state_dict of the smp model (arch, encoder, the data set's classes)")
    parser.add_argument("--eps", type=float, default=4.0, help="budget in 1/255 units")
    parser.add_argument("--num-images", type=int, default=None, help="only the first N images")
    parser.add_argument("--fast", action="store_true", help="a tiny generated tree and a few iterations, for tests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        if args.fast:
            args.dataset, args.root, args.size = "cityscapes", tiny_cityscapes(Path(scratch) / "cityscapes"), (32, 64)
        dataset = build_dataset(args.dataset, root=args.root, split=args.split, size=tuple(args.size))
        if args.num_images:
            dataset = torch.utils.data.Subset(dataset, range(min(args.num_images, len(dataset))))
        classes = getattr(getattr(dataset, "dataset", dataset), "class_names", None)
        print(f"{args.dataset} {args.split}: {len(dataset)} images at {tuple(args.size)}, {len(classes)} classes")
        torch.manual_seed(0)
        model = smp.create_model(args.arch, encoder_name=args.encoder, encoder_weights=None, classes=len(classes))
        if args.weights:
            model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
        else:
            print("no --weights: the model is untrained, so the numbers below only show the pipeline")
        results = run_benchmark(
            model.eval(),
            dataset,
            attacks="cospgd,reliable",
            eps_list=[args.eps / 255],
            rain="none",
            steps=3 if args.fast else 10,
            reliable_steps=4 if args.fast else 100,
            batch_size=2 if args.fast else 8,
            progress=False,
        )
    print(results.table())
    print(results.headline())


if __name__ == "__main__":
    main()
