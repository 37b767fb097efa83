"""Benchmark a segmentation model on CamVid with the Python API: clean, rain, attacks, worst case.

    python examples/benchmark_camvid.py --model unet:resnet34@my_camvid_weights.pt --camvid /data/camvid
    python examples/benchmark_camvid.py --fast          # a few small images, seconds

The same as ``segrobust benchmark --dataset camvid --data-root ...``, written
out so you can change any step: the model (any ``nn.Module`` returning logits),
the data (any data set of ``{"image", "mask"}`` items), the attacks and their
arguments. Without CamVid (``--camvid`` or ``$SEGROBUST_CAMVID``) it falls back
to SyntheticStreets so the script always runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch.utils.data import Subset

from segrobust.benchmark import BenchmarkConfig, load_default_model, run_benchmark
from segrobust.datasets import CamVid, SyntheticStreets
from segrobust.models import load_model

DEFAULT_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="spec, SPEC@weights.pt, segrobust checkpoint or module:callable (default: the built-in model)"
    )
    parser.add_argument(
        "--camvid", default=os.environ.get("SEGROBUST_CAMVID", str(DEFAULT_CAMVID)), help="CamVid folder"
    )
    parser.add_argument("--out", default="benchmark-camvid", help="output folder")
    parser.add_argument("--fast", action="store_true", help="4 images at 48x64, one budget, 2 steps")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    args = parser.parse_args()

    size = (48, 64) if args.fast else (360, 480)
    root = Path(args.camvid)
    if (root / "val.txt").exists():
        data = CamVid(root, split="val", size=size)
        name = "CamVid val"
    else:
        print(f"CamVid not found at {root}; using SyntheticStreets instead")
        data = SyntheticStreets(n=16, size=size, split="val")
        name = "SyntheticStreets val"
    if args.fast:
        data = Subset(data, range(4))

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # The built-in model was trained on SyntheticStreets: expect low CamVid scores; bring your own with --model.
    model = load_model(args.model, device=device) if args.model else load_default_model(device)

    config = BenchmarkConfig(
        attacks="naa,segpgd,ama" if args.fast else "all",
        eps_list=["8/255"] if args.fast else ["2/255", "4/255", "8/255"],
        rain="light" if args.fast else "all",
        steps=2 if args.fast else 10,
        batch_size=4,
        out_dir=args.out,  # partial results, results.json, report.md and figures go here
        resume=args.resume,  # continue an interrupted run: finished batches are read back, not recomputed
        progress=not args.fast,
        metadata={"model_name": args.model or "built-in default", "dataset_name": name},
    )
    results = run_benchmark(model, data, config)
    print(results.table())
    worst = results.rows[-1]
    print(f"\n{name}: clean mIoU {100 * results.clean.miou:.1f} %, {worst.label}: {100 * worst.miou:.1f} %")
    print(f"report: {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
