"""run_benchmark with corruptions on tiny data; run alone or under torchrun by tests/test_benchmark_corruptions.py.

``python tests/_corruption_bench_worker.py OUT_DIR`` writes OUT_DIR/results.json.
"""

from __future__ import annotations

import sys

import torch
from conftest import NUM_CLASSES, TinySegNet, make_blobs

from segrobust import distributed
from segrobust.benchmark import run_benchmark

CORRUPTIONS = "gaussian_noise,glass_blur,fog,jpeg_compression,rain"
SEVERITIES = (1, 5)


def tiny_setup() -> tuple[torch.nn.Module, list]:
    torch.manual_seed(0)
    model = TinySegNet(NUM_CLASSES).eval()
    images, masks = make_blobs(6, size=32, seed=3)
    return model, [(images[i], masks[i]) for i in range(len(images))]


def main(out_dir: str) -> None:
    distributed.init_distributed("gloo")
    model, data = tiny_setup()
    run_benchmark(
        model,
        data,
        attacks="none",
        rain="none",
        corruptions=CORRUPTIONS,
        severities=SEVERITIES,
        batch_size=2,
        progress=False,
        out_dir=out_dir,
        num_examples=1,
    )


if __name__ == "__main__":
    main(sys.argv[1])
