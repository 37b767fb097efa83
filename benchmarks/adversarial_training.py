"""Standard training vs PGD-AT vs EroSeg-AT on CamVid at equal epochs.

By default the three rows fine-tune the standard CamVid model of
``attack_strength.py`` for the same ``--epochs`` (clean, PGD-AT, EroSeg-AT),
which fits a 2-core CPU budget; ``--from-scratch`` trains each from scratch
instead (``--epochs`` each). Every model is evaluated on val: clean mIoU and
robust mIoU, the lowest mIoU over PGD (torchattacks), NAA, SegPGD, CosPGD and
EroSeg at ``--eval-eps`` (default: the training ``--eps``, 4/255;
``--eval-steps`` steps, alpha = 2.5·eps/steps), and the reliable ensemble at
the same eps (``--reliable-steps`` APGD iterations per loss, SEA radius
schedule; 0 skips it): greedy worst-case mIoU and pixel accuracy, and each
member's. The adversarial trainings use a ``--train-steps``-step inner attack
at ``--eps``. Each setting writes its own results file
(``adversarial_training[_scratch][_train{eps}][_eval{eps}].json``).

Usage:
    python benchmarks/adversarial_training.py          # writes benchmarks/results/adversarial_training.json
    python benchmarks/adversarial_training.py --only PGD-AT --merge   # one row, merged into that file
    python benchmarks/adversarial_training.py --eval-eps 8 --reliable-steps 100 --only PGD-AT --merge   # _eval8.json
    python benchmarks/adversarial_training.py --from-scratch --epochs 20 --only EroSeg-AT --merge  # _scratch.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import camvid, environment, run_recipe, trained_model, write_rows
from attack_strength import attack_factory, evaluate, reliable_ensemble

TRAININGS = ("standard", "PGD-AT", "EroSeg-AT")


def _fine_tune(recipe, base):
    """The recipe, starting from the base model's weights (with a 10x smaller learning rate)."""

    def run(model, loader, **kwargs):
        model.load_state_dict(base.state_dict())
        kwargs["optimizer"] = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
        return recipe(model, loader, **kwargs)

    return run


def results_name(args) -> str:
    """Each setting its own results file, so a from-scratch or 8/255 run never replaces the fine-tuning rows."""
    eval_eps = args.eps if args.eval_eps is None else args.eval_eps
    return (
        "adversarial_training"
        + ("_scratch" if args.from_scratch else "")
        + ("" if args.eps == 4 else f"_train{args.eps:g}")
        + ("" if eval_eps == 4 else f"_eval{eval_eps:g}")
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--base-epochs", type=int, default=20, help="epochs of the standard model fine-tuned from")
    parser.add_argument("--from-scratch", action="store_true")
    parser.add_argument("--eps", type=float, default=4.0, help="training budget, in 1/255 units")
    parser.add_argument("--eval-eps", type=float, help="evaluation budget, in 1/255 units (default: --eps)")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--attacks", nargs="+", default=("PGD", "NAA", "SegPGD", "CosPGD", "EroSeg"))
    parser.add_argument("--reliable-steps", type=int, default=100, help="APGD iterations per loss; 0: no ensemble")
    parser.add_argument("--only", nargs="+", choices=TRAININGS, default=TRAININGS, help="train and evaluate these")
    parser.add_argument("--merge", action="store_true", help="replace only these rows in the existing results file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if set(args.only) != set(TRAININGS) and not args.merge:
        parser.error("--only writes part of the table: add --merge to keep the other rows of the file")
    torch.set_num_threads(args.threads)
    eps = args.eps / 255
    eval_eps = (args.eps if args.eval_eps is None else args.eval_eps) / 255
    at = {"eps": eps, "alpha": 2.5 * eps / args.train_steps, "steps": args.train_steps}
    recipes = {
        "standard": (run_recipe("standard"), {}),
        "PGD-AT": (run_recipe("pgd_at"), at),
        "EroSeg-AT": (run_recipe("eroseg_at"), at),
    }
    val = camvid("val", tuple(args.size))
    start = time.time()
    base = None
    if not args.from_scratch:
        base, _ = trained_model(
            "standard", args.arch, args.encoder, tuple(args.size), args.base_epochs, run_recipe("standard")
        )
    payload = {
        "command": "python benchmarks/adversarial_training.py " + " ".join(argv or sys.argv[1:]),
        "model": {
            "arch": args.arch,
            "encoder": args.encoder,
            "size": list(args.size),
            "epochs": args.epochs,
            "fine_tuned_from": None if base is None else f"standard, {args.base_epochs} epochs",
        },
        "train_attack": at,
        "eval_eps": eval_eps,
        "eval_steps": args.eval_steps,
        "reliable_steps": args.reliable_steps,
        "rows": [],
        "environment": environment(),
    }
    for name, (recipe, kwargs) in recipes.items():
        if name not in args.only:
            continue
        key = {
            "standard": "standard",
            "PGD-AT": f"pgdat{args.eps:g}s{args.train_steps}",
            "EroSeg-AT": f"erosegat{args.eps:g}s{args.train_steps}",
        }[name]
        if base is not None:
            key = f"ft-{key}-from-e{args.base_epochs}"
            recipe = _fine_tune(recipe, base)
        model, info = trained_model(key, args.arch, args.encoder, tuple(args.size), args.epochs, recipe, kwargs)
        measured = evaluate_training(model, name, val, eval_eps, args)
        row = {"training": name, "train_seconds": info.get("train_seconds"), **measured}
        payload["rows"].append(row)
        payload["total_seconds"] = round(time.time() - start, 1)
        # Written as each row finishes, so a stopped run keeps the rows it finished.
        path = write_rows(results_name(args), payload, [row] if args.merge else None, key=lambda r: r["training"])
        print(f"wrote {path}")


def evaluate_training(model, name: str, val, eval_eps: float, args) -> dict:
    """Clean mIoU, each short attack, the strongest of them, and the reliable ensemble at ``eval_eps``."""
    row = {"clean": evaluate(model, val)}
    per_attack = {}
    for attack in args.attacks:
        per_attack[attack] = evaluate(model, val, attack_factory(attack, model, eval_eps, args.eval_steps))
        print(f"{name:10s} {attack:7s}: mIoU {per_attack[attack]['miou']:.4f}", flush=True)
    strongest = min(per_attack, key=lambda a: per_attack[a]["miou"])
    row.update(per_attack=per_attack, robust={"attack": strongest, **per_attack[strongest]})
    if args.reliable_steps:
        row["reliable"] = reliable_ensemble(model, val, eval_eps * 255, args.reliable_steps)
        print(f"{name:10s} reliable ensemble: mIoU {row['reliable']['miou']:.4f}", flush=True)
    print(f"{name:10s} clean mIoU {row['clean']['miou']:.4f}  robust mIoU {row['robust']['miou']:.4f} ({strongest})",
          flush=True)  # fmt: skip
    return row


if __name__ == "__main__":
    main()
