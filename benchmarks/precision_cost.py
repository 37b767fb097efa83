"""Step time and peak memory of NAA and APGD in float32, under bf16 autocast, compiled and in channels_last.

Issue 25 item 4: what does each precision option of segrobust (``amp=``,
``torch.compile``, ``ChannelsLast``; ``--amp``, ``--compile``,
``--channels-last`` on the command line) save per attack step? The setting is
a Cityscapes-sized evaluation: an smp Unet-ResNet50 (19 classes, random
weights) on 8 images of 512×1024; the target on a GPU is a bf16 step at most
0.6 × the float32 step.

Per-step time is the marginal cost of a step, ``(t(2S) − t(S)) / S``, so fixed
costs (input checks, scoring the final iterate) do not hide in it; the
variants are timed in turn, round after round, and the minimum over
``--repeats`` rounds is taken (background work only adds time). Every variant
is called once before timing, so ``torch.compile``'s compilation (for the
gradient pass and the no-gradient scoring) is not in the step time; it is
reported on its own (``first call``). Peak memory is
``torch.cuda.max_memory_allocated`` during one ``S``-step call, above what was
allocated before it (CUDA only; on a CPU it is not measured). Each call's
result is checked against the ε promise, ‖x_adv − x‖∞ ≤ ε and x_adv ∈ [0, 1].

A variant is ``fp32`` or ``+``-joined options: ``bf16`` / ``fp16`` (the
attack's ``amp=``), ``compile`` (``torch.compile(model)``), ``channels_last``
(weights and inputs in channels_last), e.g. ``bf16+channels_last+compile``.

Usage:
    python benchmarks/precision_cost.py --device cuda                      # Unet-r50, 8x3x512x1024
    python benchmarks/precision_cost.py --device cuda --variants fp32 bf16 bf16+channels_last+compile
    python benchmarks/precision_cost.py --size 64 128 --batch 2 --encoder resnet18 --steps 2   # CPU smoke test
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any, Optional

import torch
from torch import nn

ATTACKS = ("NAA", "APGD")
VARIANTS = ("fp32", "bf16", "compile", "channels_last")
OPTIONS = ("bf16", "fp16", "compile", "channels_last")
#: bf16 step / fp32 step on a GPU.
TARGET = 0.6
EPS = 8 / 255


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), type=_variant)
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="S: a call of S and one of 2S steps per round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if "fp32" not in args.variants:
        args.variants.insert(0, "fp32")  # the reference of every ratio
    return args


def _variant(text: str) -> str:
    parts = text.lower().split("+")
    if text.lower() == "fp32" or (parts and all(part in OPTIONS for part in parts)):
        if {"bf16", "fp16"} <= set(parts):
            raise argparse.ArgumentTypeError("bf16 and fp16 are alternatives")
        return text.lower()
    raise argparse.ArgumentTypeError(f"a variant is fp32 or +-joined options of {', '.join(OPTIONS)}, got {text!r}")


def build(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The float32 model in eval mode, images in [0, 1] and masks with an ignored band, on ``args.device``."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Unet(args.encoder, encoder_weights=None, classes=args.classes).to(args.device).eval()
    height, width = args.size
    images = torch.rand(args.batch, 3, height, width, device=args.device)
    masks = torch.randint(0, args.classes, (args.batch, height, width), device=args.device)
    masks[:, : height // 8] = 255
    return model, images, masks


def variant_model(variant: str, model: nn.Module) -> tuple[nn.Module, Optional[str]]:
    """The model as ``variant`` runs it, and the attack's ``amp=``."""
    from segrobust.models import ChannelsLast

    options = set(variant.split("+"))
    model = copy.deepcopy(model)  # channels_last converts weights in place; compiled modules keep their caches
    if "channels_last" in options:
        model = ChannelsLast(model.to(memory_format=torch.channels_last))
    if "compile" in options:
        model = torch.compile(model)
    return model, next((name for name in ("bf16", "fp16") if name in options), None)


def make_attack(name: str, model: nn.Module, steps: int, amp: Optional[str]) -> Any:
    import segrobust.attacks as sa

    if name == "APGD":
        return sa.APGD(model, eps=EPS, steps=steps, random_start=True, amp=amp)
    return sa.NAA(model, eps=EPS, alpha=2 / 255, steps=steps, random_start=True, amp=amp)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(attack: Any, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Seconds of one attack call; its result checked against the ε promise."""
    torch.manual_seed(0)
    _sync(images.device)
    started = time.perf_counter()
    adversarial = attack(images, masks)
    _sync(images.device)
    seconds = time.perf_counter() - started
    distance = (adversarial.double() - images.double()).abs().max().item()
    if distance > EPS or adversarial.min() < 0 or adversarial.max() > 1:
        raise AssertionError(f"the ε promise failed: ‖x_adv − x‖∞ = {distance} > {EPS}")
    return seconds


def peak_memory(attack: Any, images: torch.Tensor, masks: torch.Tensor) -> Optional[int]:
    """Bytes allocated at the peak of one call above those allocated before it (CUDA), else ``None``."""
    if images.device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(images.device)
    base = torch.cuda.memory_allocated(images.device)
    run_once(attack, images, masks)
    return torch.cuda.max_memory_allocated(images.device) - base


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per attack and variant: first-call, per-step and S-step seconds, peak memory, ratios to fp32."""
    model, images, masks = build(args)
    runs = {}
    for variant in args.variants:
        wrapped, amp = variant_model(variant, model)
        for name in args.attacks:
            short, long = (make_attack(name, wrapped, steps, amp) for steps in (args.steps, 2 * args.steps))
            first = run_once(make_attack(name, wrapped, 1, amp), images, masks)  # compiles, warms the allocator
            runs[name, variant] = {"attacks": (short, long), "first": first, "short": [], "long": []}
    for _ in range(args.repeats):
        for run in runs.values():
            short, long = run["attacks"]
            run["short"].append(run_once(short, images, masks))
            run["long"].append(run_once(long, images, masks))
    rows = []
    for (name, variant), run in runs.items():
        rows.append(
            {
                "attack": name,
                "variant": variant,
                "first_call_s": run["first"],
                "step_s": (min(run["long"]) - min(run["short"])) / args.steps,
                "call_s": min(run["short"]),
                "peak_bytes": peak_memory(run["attacks"][0], images, masks),
            }
        )
    return add_ratios(rows)


def add_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``step_ratio`` and ``memory_ratio``: each row's value over its attack's fp32 row."""
    reference = {row["attack"]: row for row in rows if row["variant"] == "fp32"}
    for row in rows:
        fp32 = reference[row["attack"]]
        measured = row["step_s"] > 0 and fp32["step_s"] > 0  # a marginal time <= 0 is noise, not a speed
        row["step_ratio"] = row["step_s"] / fp32["step_s"] if measured else None
        both = row["peak_bytes"] is not None and fp32["peak_bytes"]
        row["memory_ratio"] = row["peak_bytes"] / fp32["peak_bytes"] if both else None
    return rows


def _number(value: Optional[float], form: str) -> str:
    return "-" if value is None else format(value, form)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    height, width = args.size
    lines = [
        f"# attack step cost by precision option: smp Unet-{args.encoder}, {args.classes} classes, batch "
        f"{args.batch}x3x{height}x{width}, S={args.steps} steps, {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, min of {args.repeats} rounds",
        "| attack | variant | step (ms) | step / fp32 | S-step call (s) | first call (s) | peak memory (MiB) "
        "| memory / fp32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        peak = None if row["peak_bytes"] is None else row["peak_bytes"] / 2**20
        lines.append(
            f"| {row['attack']} | {row['variant']} | {1000 * row['step_s']:.1f} | {_number(row['step_ratio'], '.3f')} "
            f"| {row['call_s']:.2f} | {row['first_call_s']:.2f} | {_number(peak, '.0f')} "
            f"| {_number(row['memory_ratio'], '.3f')} |"
        )
    if any(row["step_s"] <= 0 for row in rows):
        lines.append(
            "\nA step time <= 0 is noise (a 2S-step call timed faster than an S-step one): raise --steps or --repeats."
        )
    bf16 = [row for row in rows if row["variant"] == "bf16"]
    if bf16:
        ratios = ", ".join(f"{row['attack']} {_number(row['step_ratio'], '.2f')}" for row in bf16)
        known = [row["step_ratio"] for row in bf16 if row["step_ratio"] is not None]
        verdict = "unmeasured" if len(known) < len(bf16) else "met" if max(known) <= TARGET else "not met"
        where = (
            ""
            if args.device.startswith("cuda")
            else " (the target is a GPU's; on a CPU without bf16 units bf16 is slower)"
        )
        lines.append(f"\nbf16 step / fp32 step: {ratios}; target ≤ {TARGET}: {verdict}{where}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = measure(args)
    print(report(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "args": vars(args), "torch": str(torch.__version__)}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
