"""Standard training vs PGD-AT vs EroSeg-AT on CamVid at equal epochs.

Each model is trained from scratch on CamVid train (reduced resolution, the
same schedule as ``attack_strength.py``) and evaluated on val: clean mIoU and
robust mIoU, the lowest mIoU over PGD (torchattacks), NAA, SegPGD, CosPGD and
EroSeg at eps 4/255 (``--eval-steps`` steps, alpha = 2.5·eps/steps). The
adversarial trainings use a ``--train-steps``-step inner attack at the same eps.

Usage:
    python benchmarks/adversarial_training.py          # writes benchmarks/results/adversarial_training.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import camvid, environment, trained_model, write_results
from attack_strength import attack_factory, evaluate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eps", type=float, default=4.0, help="train and eval budget, in 1/255 units")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--attacks", nargs="+", default=("PGD", "NAA", "SegPGD", "CosPGD", "EroSeg"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from segrobust.training import train_eroseg_at, train_pgd_at, train_standard

    eps = args.eps / 255
    at = {"eps": eps, "alpha": 2.5 * eps / args.train_steps, "steps": args.train_steps}
    recipes = {
        "standard": (train_standard, {}),
        "PGD-AT": (train_pgd_at, at),
        "EroSeg-AT": (train_eroseg_at, at),
    }
    val = camvid("val", tuple(args.size))
    start = time.time()
    rows = []
    for name, (recipe, kwargs) in recipes.items():
        key = {"standard": "standard", "PGD-AT": f"pgdat{args.eps:g}s{args.train_steps}",
               "EroSeg-AT": f"erosegat{args.eps:g}s{args.train_steps}"}[name]
        model, info = trained_model(key, args.arch, args.encoder, tuple(args.size), args.epochs, recipe, kwargs)
        row = {"training": name, "train_seconds": info.get("train_seconds"), "clean": evaluate(model, val)}
        per_attack = {}
        for attack in args.attacks:
            per_attack[attack] = evaluate(model, val, attack_factory(attack, model, eps, args.eval_steps))
            print(f"{name:10s} {attack:7s}: mIoU {per_attack[attack]['miou']:.4f}", flush=True)
        strongest = min(per_attack, key=lambda a: per_attack[a]["miou"])
        row.update(per_attack=per_attack, robust={"attack": strongest, **per_attack[strongest]})
        rows.append(row)
        print(f"{name:10s} clean mIoU {row['clean']['miou']:.4f}  robust mIoU {row['robust']['miou']:.4f} "
              f"({strongest})", flush=True)
    payload = {"command": "python benchmarks/adversarial_training.py " + " ".join(argv or sys.argv[1:]),
               "model": {"arch": args.arch, "encoder": args.encoder, "size": list(args.size), "epochs": args.epochs},
               "train_attack": at, "eval_eps": eps, "eval_steps": args.eval_steps, "rows": rows,
               "total_seconds": round(time.time() - start, 1), "environment": environment()}
    print(f"wrote {write_results('adversarial_training', payload)}")


if __name__ == "__main__":
    main()
