"""Overhead of the ART interface: ``segrobust.art.NAA(...).generate`` (numpy in and out)
against ``segrobust.attacks.NAA`` (torch) on the same model and batch.

Both run the same torch implementation; the ART path adds the numpy↔torch
conversions, ART's parameter handling and the estimator's forward wrapper. The
two are timed alternately in the same process (``repeats`` rounds after one
warm-up each, seeded identically) and the medians compared. Target: ratio ≤ 1.10.

Both wall-clock time and process CPU time are measured. On a machine shared
with other jobs the wall-clock ratio is noisy (both sides wait for cores); the
CPU-time ratio, the work this process did, is the stable one there. On a GPU
only the wall-clock time means anything.

Usage:
    python benchmarks/art_cost.py                      # Unet-resnet18, 4x3x128x128, 10 steps
    python benchmarks/art_cost.py --size 64 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

TARGET_RATIO = 1.10


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def art_overhead(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    steps: int = 10,
    repeats: int = 3,
    eps: float = 8 / 255,
    alpha: float = 2 / 255,
) -> dict[str, float]:
    """Median time of ``segrobust.art.NAA.generate`` vs ``segrobust.attacks.NAA`` and their ratio.

    ``images`` ``(N, C, H, W)`` in ``[0, 1]`` and ``masks`` ``(N, H, W)`` on the
    model's device. The numpy copies the ART path takes are made once, before
    timing (a user of ART already holds numpy arrays); converting them to
    tensors and the result back to numpy is inside the timed call.

    Returns ``{"torch_s", "art_s", "ratio"}`` (wall clock), ``{"torch_cpu_s",
    "art_cpu_s", "ratio_cpu"}`` (process CPU time) and ``{"steps", "repeats",
    "target_ratio"}``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Conv2d(3, 4, 3, padding=1)
        >>> result = art_overhead(model, torch.rand(2, 3, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long), steps=2, repeats=1)
        >>> sorted(result)[:4]
        ['art_cpu_s', 'art_s', 'ratio', 'ratio_cpu']
    """
    from segrobust.art import NAA as ArtNAA
    from segrobust.art import PyTorchSegmenter
    from segrobust.attacks import NAA

    device = images.device
    estimator = PyTorchSegmenter(model, input_shape=tuple(images.shape[1:]))
    images_np = images.detach().cpu().numpy().astype(np.float32)
    masks_np = masks.detach().cpu().numpy()
    torch_attack = NAA(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    art_attack = ArtNAA(estimator, eps=eps, alpha=alpha, steps=steps, random_start=True, batch_size=images.shape[0])

    def timed(call) -> tuple[float, float]:
        torch.manual_seed(0)
        _synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        _synchronize(device)
        return time.perf_counter() - wall, time.process_time() - cpu

    def run_torch() -> tuple[float, float]:
        return timed(lambda: torch_attack(images, masks))

    def run_art() -> tuple[float, float]:
        return timed(lambda: art_attack.generate(images_np, masks_np))

    run_torch(), run_art()  # warm-up: allocator, autograd graphs, cudnn choices
    torch_times, art_times = [], []
    for round_index in range(repeats):
        # alternate which goes first so drifting machine load does not favour one side
        order = (run_torch, run_art) if round_index % 2 == 0 else (run_art, run_torch)
        for run in order:
            (torch_times if run is run_torch else art_times).append(run())
    torch_s = statistics.median(t[0] for t in torch_times)
    art_s = statistics.median(t[0] for t in art_times)
    torch_cpu = statistics.median(t[1] for t in torch_times)
    art_cpu = statistics.median(t[1] for t in art_times)
    return {
        "torch_s": torch_s,
        "art_s": art_s,
        "ratio": art_s / torch_s,
        "torch_cpu_s": torch_cpu,
        "art_cpu_s": art_cpu,
        "ratio_cpu": art_cpu / torch_cpu,
        "steps": float(steps),
        "repeats": float(repeats),
        "target_ratio": TARGET_RATIO,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet(args.encoder, encoder_weights=None, classes=11).to(args.device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    masks = torch.randint(0, 11, (args.batch, args.size, args.size), device=args.device)
    masks[:, : args.size // 8] = 255
    result = art_overhead(model, images, masks, steps=args.steps, repeats=args.repeats)
    print(
        f"Unet-{args.encoder}, {args.batch}x3x{args.size}x{args.size}, NAA {args.steps} steps, "
        f"median of {args.repeats} interleaved rounds, {args.device}, {torch.get_num_threads()} threads"
    )
    print(f"{'path':<36}{'wall s':>10}{'CPU s':>10}")
    print(f"{'segrobust.attacks.NAA (torch)':<36}{result['torch_s']:>10.3f}{result['torch_cpu_s']:>10.3f}")
    print(f"{'segrobust.art.NAA.generate (numpy)':<36}{result['art_s']:>10.3f}{result['art_cpu_s']:>10.3f}")
    print(f"{'ratio art / torch':<36}{result['ratio']:>10.3f}{result['ratio_cpu']:>10.3f}   (target ≤ {TARGET_RATIO})")


if __name__ == "__main__":
    main()
