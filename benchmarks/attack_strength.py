"""Attack strength on CamVid: mIoU and pixel accuracy under PGD, NAA, SegPGD, CosPGD and EroSeg.

Trains (or loads the cached) standard model on CamVid train at reduced
resolution, then attacks the whole val split at eps 2/255, 4/255, 8/255 with 10
and 20 steps (alpha = 2.5·eps/steps, random start, fixed seed). torchattacks'
stock PGD cannot take void labels, so it gets void pixels relabelled to class 0
(its numbers are reported on valid pixels like every other row).

Usage:
    python benchmarks/attack_strength.py                    # writes benchmarks/results/attack_strength.json
    python benchmarks/attack_strength.py --quick            # 16 val images, eps 4/255, 10 steps
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import NUM_CLASSES, camvid, environment, trained_model, write_results

#: EroSeg with the two arguments tuned on a third of CamVid val at 4/255, 10 steps (see docs/benchmarks.md)
EROSEG_TUNED = {"q0": 0.5, "fooled_weight": 0.1}


def attack_factory(name: str, model, eps: float, steps: int):
    import torchattacks

    import segrobust.attacks as sa

    alpha = 2.5 * eps / steps
    if name == "PGD":
        stock = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        return lambda x, y: stock(x, torch.where(y == 255, torch.zeros_like(y), y))
    if name == "EroSeg-tuned":
        return sa.EroSeg(model, eps=eps, alpha=alpha, steps=steps, random_start=True, **EROSEG_TUNED)
    return getattr(sa, name)(model, eps=eps, alpha=alpha, steps=steps, random_start=True)


def evaluate(model, dataset, attack=None, batch_size=16, seed=0):
    from segrobust.metrics import ConfusionMatrix

    cm = ConfusionMatrix(NUM_CLASSES)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    torch.manual_seed(seed)
    for batch in loader:
        images, masks = batch["image"], batch["mask"]
        if attack is not None:
            images = attack(images, masks)
        with torch.no_grad():
            cm.update(model(images), masks)
    scores = cm.compute()
    return {"miou": scores.miou, "pixel_accuracy": scores.pixel_accuracy}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=(2, 4, 8), help="in 1/255 units")
    parser.add_argument("--steps", type=int, nargs="+", default=(10, 20))
    parser.add_argument("--attacks", nargs="+", default=("PGD", "NAA", "SegPGD", "CosPGD", "EroSeg"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--append", action="store_true", help="add these rows to the existing results file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from segrobust.training import train_standard

    start = time.time()
    model, info = trained_model("standard", args.arch, args.encoder, tuple(args.size), args.epochs, train_standard)
    val = camvid("val", tuple(args.size))
    if args.quick:
        val = torch.utils.data.Subset(val, range(16))
        args.eps, args.steps = (4,), (10,)
    results = {"clean": evaluate(model, val)}
    print(f"clean: mIoU {results['clean']['miou']:.4f}  pixel acc {results['clean']['pixel_accuracy']:.4f}", flush=True)
    rows = []
    for steps in args.steps:
        for eps in args.eps:
            for name in args.attacks:
                t = time.time()
                scores = evaluate(model, val, attack_factory(name, model, eps / 255, steps))
                rows.append(
                    {"attack": name, "eps": eps, "steps": steps, **scores, "seconds": round(time.time() - t, 1)}
                )
                print(
                    f"{name:7s} eps {eps}/255 steps {steps:2d}: mIoU {scores['miou']:.4f}  "
                    f"pixel acc {scores['pixel_accuracy']:.4f}  ({rows[-1]['seconds']} s)",
                    flush=True,
                )
    payload = {
        "command": "python benchmarks/attack_strength.py " + " ".join(argv or sys.argv[1:]),
        "model": {"arch": args.arch, "encoder": args.encoder, "size": list(args.size), **info},
        "clean": results["clean"],
        "rows": rows,
        "total_seconds": round(time.time() - start, 1),
        "environment": environment(),
    }
    if args.append:
        import json

        from _camvid import RESULTS

        previous = json.loads((RESULTS / "attack_strength.json").read_text())
        keys = {(r["attack"], r["eps"], r["steps"]) for r in rows}
        previous["rows"] = [r for r in previous["rows"] if (r["attack"], r["eps"], r["steps"]) not in keys] + rows
        previous["appended_commands"] = [*previous.get("appended_commands", []), payload["command"]]
        payload = previous
    if not args.quick:
        print(f"wrote {write_results('attack_strength', payload)}")


if __name__ == "__main__":
    main()
