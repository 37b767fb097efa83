"""Cost of each segrobust attack relative to torchattacks.PGD on the same model and batch.

Per-step time is the marginal cost of a step, ``(t(2S) − t(S)) / S``, so fixed
costs (input checks, scoring the final iterate) do not hide in it; the whole
call at ``S`` steps is reported too. Timings of all attacks are interleaved and
the minimum over ``--repeats`` rounds is taken (background work only adds time). Peak memory is the peak resident
memory a fresh process adds while running the attack (CPU; large tensors are
mmapped so freed memory leaves the resident set; median of 3 processes), or
``torch.cuda.max_memory_allocated`` (GPU), relative to PGD.

``--clock cpu`` times each call by the CPU time of this process instead of the
wall clock: with ``--threads 1`` that is the attack's own work, which other
jobs on a shared machine slow down far less than they delay the wall clock
(CPU only).

Usage:
    python benchmarks/attack_cost.py                       # Unet-resnet18, 4x3x128x128
    python benchmarks/attack_cost.py --size 64 --repeats 3 --threads 2
    python benchmarks/attack_cost.py --clock cpu --threads 1 --attacks APGD NAA   # on a busy machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

TARGETS = {"NAA": 1.03, "AMA": 1.03, "SegPGD": 1.10, "CosPGD": 1.10, "EroSeg": 1.20, "APGD": 1.05}
MEMORY_TARGETS = {"APGD": 1.10}


def build(args):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet(args.encoder, encoder_weights=None, classes=11).to(args.device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    masks = torch.randint(0, 11, (args.batch, args.size, args.size), device=args.device)
    masks[:, : args.size // 8] = 255
    return model, images, masks


def make_attack(name, model, steps, eps=8 / 255, alpha=2 / 255):
    import torchattacks

    import segrobust.attacks as sa

    if name == "PGD":
        return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    if name == "APGD":  # adapts its own step size; cross-entropy, as PGD
        return sa.APGD(model, eps=eps, steps=steps, loss="ce", random_start=True)
    return getattr(sa, name)(model, eps=eps, alpha=alpha, steps=steps, random_start=True)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run_once(name, model, images, masks, steps, clock=time.perf_counter):
    attack = make_attack(name, model, steps)
    # stock PGD cannot take ignore labels (its CrossEntropyLoss ignores -100): give it the valid ids
    labels = masks.clamp(max=10) if name == "PGD" else masks
    if images.is_cuda:
        torch.cuda.synchronize()
    start = clock()
    attack(images, labels)
    if images.is_cuda:
        torch.cuda.synchronize()
    return clock() - start


def timing(args):
    model, images, masks = build(args)
    names = ["PGD", *args.attacks]
    for name in names:  # warm-up: allocator, kornia, autograd graphs
        run_once(name, model, images, masks, 2)
    whole = {n: [] for n in names}
    double = {n: [] for n in names}
    clock = CLOCKS[args.clock]
    for _ in range(args.repeats):
        for name in names:
            torch.manual_seed(0)
            whole[name].append(run_once(name, model, images, masks, args.steps, clock))
            torch.manual_seed(0)
            double[name].append(run_once(name, model, images, masks, 2 * args.steps, clock))
    # the minimum over repeats: background work only ever adds time, and the per-step slope is a
    # difference of two timings, so its noise is twice theirs
    per_step = {n: (min(double[n]) - min(whole[n])) / args.steps for n in names}
    call = {n: min(whole[n]) for n in names}
    return per_step, call


def peak_memory_child(args):
    """Runs in a fresh process: peak memory added by one attack call."""
    model, images, masks = build(args)
    name = args.child
    run_once(name, model, images, masks, 1)  # warm-up so allocator pools exist for everyone
    if images.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_once(name, model, images, masks, args.steps)
        print(json.dumps({"peak": torch.cuda.max_memory_allocated() - base}))
        return
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    run_once(name, model, images, masks, args.steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak": (peak - rss) * 1024}))


def peak_memory(args, name):
    cmd = [
        sys.executable,
        __file__,
        "--child",
        name,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--encoder",
        args.encoder,
        "--threads",
        str(args.threads),
    ]
    # Tensors above 64 KiB get their own mmap and go back to the OS when freed, so the peak resident
    # size follows live tensor memory instead of what glibc's arenas happen to keep.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    peaks = []
    for _ in range(3):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
        peaks.append(json.loads(out)["peak"])
    return statistics.median(peaks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", nargs="+", default=list(TARGETS))
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time, or this process's CPU time")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu times CPU work; use the wall clock (the default) on a GPU")
    torch.set_num_threads(args.threads)
    if args.child:
        return peak_memory_child(args)

    per_step, call = timing(args)
    memory = {} if args.no_memory else {n: peak_memory(args, n) for n in ["PGD", *args.attacks]}
    print(
        f"# attack cost vs torchattacks.PGD: smp Unet-{args.encoder}, batch {args.batch}x3x{args.size}x{args.size}, "
        f"{args.steps} steps, {args.device}, {args.threads} threads, {args.clock} clock, min of {args.repeats} rounds"
    )
    print("| attack | per-step ratio | target | whole-call ratio | peak-memory ratio | memory target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.attacks:
        mem = f"{memory[name] / memory['PGD']:.3f}" if memory else "-"
        mem_target = f"≤ {MEMORY_TARGETS[name]:.2f}" if name in MEMORY_TARGETS else "-"
        print(
            f"| {name} | {per_step[name] / per_step['PGD']:.3f} | ≤ {TARGETS.get(name, float('nan')):.2f} "
            f"| {call[name] / call['PGD']:.3f} | {mem} | {mem_target} |"
        )
    print(f"\nPGD: {per_step['PGD'] * 1000:.1f} ms per step, {call['PGD'] * 1000:.1f} ms per {args.steps}-step call")
    if os.environ.get("SEGROBUST_COST_JSON"):
        with open(os.environ["SEGROBUST_COST_JSON"], "w") as f:
            json.dump({"per_step": per_step, "call": call, "memory": memory, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
