"""Train the built-in default model of ``segrobust benchmark`` and write it into the package.

    python scripts/train_default_model.py            # -> segrobust/assets/default_model.pt
    python scripts/train_default_model.py --out /tmp/model.pt --steps 100

The schedule is :data:`segrobust.benchmark.defaults.DEFAULT_SCHEDULE`
(SyntheticStreets train split at 96x128, AdamW, one-cycle learning rate);
the weights are stored in float16 (about 1.5 MB). The same function trains
and caches the model on a machine whose installation lacks the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from segrobust.benchmark.defaults import DEFAULT_SCHEDULE, default_dataset, train_default_model
from segrobust.metrics import ConfusionMatrix
from segrobust.models import load_model

ASSET = Path(__file__).resolve().parents[1] / "segrobust" / "assets" / "default_model.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSET, help=f"where to write the checkpoint (default {ASSET})")
    parser.add_argument("--steps", type=int, default=DEFAULT_SCHEDULE.steps, help="optimiser steps")
    parser.add_argument(
        "--train-images", type=int, default=DEFAULT_SCHEDULE.train_images, help="SyntheticStreets training scenes"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    schedule = dataclasses.replace(DEFAULT_SCHEDULE, steps=args.steps, train_images=args.train_images)
    started = time.perf_counter()
    path = train_default_model(args.out, schedule, progress=not args.no_progress)
    model = load_model(path)
    data = default_dataset()
    matrix = ConfusionMatrix(11)
    with torch.no_grad():
        for index in range(len(data)):
            item = data[index]
            matrix.update(model(item["image"].unsqueeze(0)), item["mask"].unsqueeze(0))
    scores = matrix.compute()
    size_mb = path.stat().st_size / 1e6
    print(
        f"wrote {path} ({size_mb:.2f} MB) in {time.perf_counter() - started:.0f} s; "
        f"held-out mIoU {scores.miou:.3f}, pixel accuracy {scores.pixel_accuracy:.3f} on {len(data)} images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
