"""Attack strength on CamVid: mIoU and pixel accuracy under PGD, NAA, SegPGD, CosPGD and EroSeg.

Trains (or loads the cached) standard model on CamVid train at reduced
resolution, then attacks the whole val split at eps 2/255, 4/255, 8/255 with 10
and 20 steps (alpha = 2.5·eps/steps, random start, fixed seed). torchattacks'
stock PGD cannot take void labels, so it gets void pixels relabelled to class 0
(its numbers are reported on valid pixels like every other row).

With ``--reliable`` it runs the reliable evaluation instead: 100-step APGD
per loss (SEA radius schedule), the reliable ensemble (APGD with masked CE,
balanced masked CE and Jensen-Shannon; per-image worst case by pixel accuracy
and the greedy worst-case mIoU) and 100-step CosPGD, SegPGD and EroSeg (class defaults) with
alpha = 0.01 * eps / (8/255) (with --steps under 100: 2.5 * eps / steps),
each row with its wall time and the forward and backward passes per image
(counted by hooks on the model). The ensemble runs
without early stop, so its members are complete single APGD runs and give the
APGD rows of their losses. Rows are merged into the results file as each one
finishes.

Usage:
    python benchmarks/attack_strength.py                    # writes benchmarks/results/attack_strength.json
    python benchmarks/attack_strength.py --quick            # 16 val images, eps 4/255, 10 steps
    python benchmarks/attack_strength.py --reliable --eps 4 --append
    python benchmarks/attack_strength.py --reliable --eps 4 --rows APGD-ce CosPGD SegPGD --append
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import CACHE, NUM_CLASSES, camvid, environment, merge_rows, run_recipe, trained_model, write_results

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


#: Rows of ``--reliable``; the ensemble's run also yields the APGD rows of its three losses
RELIABLE_ROWS = (
    "APGD-ce",
    "APGD-masked_ce",
    "APGD-balanced_masked_ce",
    "APGD-js",
    "APGD-masked_spherical",
    "APGD-eroseg",
    "Ensemble",
    "CosPGD",
    "SegPGD",
    "EroSeg",
)


def reliable_alpha(eps: float, steps: int) -> float:
    """Step size of CosPGD, SegPGD and EroSeg in ``--reliable``.

    100 steps or more: the anchor 0.01 at eps 8/255 (SEA, CosPGD), scaled with
    eps; shorter runs: 2.5 * eps / steps, as in the short-attack table.
    """
    return 0.01 * eps / (8 / 255) if steps >= 100 else 2.5 * eps / steps


class PassCounter:
    """Counts images through the model's forward and (via a hook on its output) backward passes."""

    def __init__(self, model):
        self.model, self.forward, self.backward, self._handle = model, 0, 0, None

    def _count(self, module, inputs, output):
        n = output.shape[0]
        self.forward += n
        if output.requires_grad:
            output.register_hook(lambda grad: self._count_backward(n))

    def _count_backward(self, n):
        self.backward += n

    def __enter__(self):
        self._handle = self.model.register_forward_hook(self._count)
        return self

    def __exit__(self, *exc):
        self._handle.remove()


def scores_of(confusion: torch.Tensor) -> dict:
    """mIoU and pixel accuracy of per-image confusions ``(N, K, K)`` summed over the set."""
    from segrobust.metrics import mean_iou

    total = confusion.sum(0)
    return {"miou": mean_iou(total), "pixel_accuracy": float(total.diagonal().sum() / total.sum())}


class Clock:
    """Wall and CPU seconds spent inside ``with clock:`` blocks."""

    def __init__(self):
        self.seconds, self.cpu_seconds = 0.0, 0.0

    def __enter__(self):
        self._start = time.time(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds += time.time() - self._start[0]
        self.cpu_seconds += time.process_time() - self._start[1]


def run_single(name, model, loader, eps, steps) -> dict:
    """One APGD (SEA radius schedule), CosPGD, SegPGD or EroSeg run over the loader: per-image confusions and costs."""
    import segrobust.attacks as sa
    from segrobust.metrics import per_image_confusion

    if name.startswith("APGD-"):
        attack, extra = (
            sa.APGD(model, eps / 255, None, steps, loss=name[5:], radius_schedule="sea"),
            {"radius_schedule": "sea"},
        )
    else:
        alpha = reliable_alpha(eps / 255, steps)
        attack, extra = (
            getattr(sa, name)(model, eps=eps / 255, alpha=alpha, steps=steps, random_start=True),
            {"alpha": alpha},
        )
    counter, clock, confusions = PassCounter(model), Clock(), []
    torch.manual_seed(0)
    for batch in loader:
        with counter, clock:
            adv = attack(batch["image"], batch["mask"])
        with torch.no_grad():
            logits = model(adv)
        confusions.append(per_image_confusion(logits, batch["mask"], logits.shape[1]))
    return {
        "name": name,
        "confusion": torch.cat(confusions),
        "forward": counter.forward,
        "backward": counter.backward,
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
        "extra": extra,
    }


def run_ensemble(model, loader, eps, steps) -> dict:
    """The reliable ensemble without early stop: per member and image confusions, choices and costs."""
    from segrobust.attacks import ReliableEnsemble
    from segrobust.attacks.ensemble import SEA_LOSSES  # the documented rows ran SEA's three losses

    ensemble = ReliableEnsemble(model, eps=eps / 255, steps=steps, early_stop=False, losses=SEA_LOSSES)
    counter, clock, parts = PassCounter(model), Clock(), []
    torch.manual_seed(0)
    for batch in loader:
        with counter, clock:
            _adv, stats = ensemble(batch["image"], batch["mask"], return_stats=True)
        parts.append(stats)
    forward = torch.cat([st.forward_passes for st in parts], 1).sum(1)
    backward = torch.cat([st.backward_passes for st in parts], 1).sum(1)
    if (counter.forward, counter.backward) != (int(forward.sum()), int(backward.sum())):
        print(
            f"warning: hooks counted {counter.forward}/{counter.backward} passes, the ensemble "
            f"{int(forward.sum())}/{int(backward.sum())}",
            flush=True,
        )
    return {
        "name": "Ensemble",
        "members": parts[0].member_names,
        "member_confusion": torch.cat([st.confusion for st in parts], 1),
        "choice": torch.cat([st.choice for st in parts]),
        "member_forward": forward.tolist(),
        "member_backward": backward.tolist(),
        "member_seconds": [sum(st.member_seconds[a] for st in parts) for a in range(len(ensemble.members))],
        "member_cpu_seconds": [sum(st.member_cpu_seconds[a] for st in parts) for a in range(len(ensemble.members))],
        "forward": counter.forward,
        "backward": counter.backward,
        "seconds": clock.seconds,
        "cpu_seconds": clock.cpu_seconds,
    }


def combine(parts: list[dict]) -> dict:
    """The results of consecutive image shards as one run: tensors concatenated, costs summed."""
    whole = dict(parts[0])
    for key, value in parts[0].items():
        if key in ("confusion", "choice"):
            whole[key] = torch.cat([p[key] for p in parts])
        elif key == "member_confusion":
            whole[key] = torch.cat([p[key] for p in parts], 1)
        elif key.startswith("member_") and key != "members":
            whole[key] = [sum(p[key][a] for p in parts) for a in range(len(value))]
        elif key in ("forward", "backward", "seconds", "cpu_seconds"):
            whole[key] = sum(p[key] for p in parts)
    whole["shards"] = len(parts)
    return whole


def reliable_row(name, eps, steps, confusion, seconds, cpu_seconds, forward, backward, **extra) -> dict:
    n = confusion.shape[0]
    return {
        "attack": name,
        "eps": eps,
        "steps": steps,
        "protocol": "reliable",
        **scores_of(confusion),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "forward_per_image": round(forward / n, 2),
        "backward_per_image": round(backward / n, 2),
        "images": n,
        **extra,
    }


def rows_of(run: dict, eps, steps) -> list[dict]:
    """Result rows of a (combined) run; the ensemble gives its row and one complete APGD row per member."""
    from segrobust.attacks import greedy_worst_case_miou
    from segrobust.metrics import mean_iou

    shards = {"shards": run.get("shards", 1)}
    if run["name"] != "Ensemble":
        return [
            reliable_row(
                run["name"],
                eps,
                steps,
                run["confusion"],
                run["seconds"],
                run["cpu_seconds"],
                run["forward"],
                run["backward"],
                **run["extra"],
                **shards,
            )
        ]
    confusion, choice = run["member_confusion"], run["choice"]
    rows = [
        reliable_row(
            f"APGD-{name}",
            eps,
            steps,
            confusion[a],
            run["member_seconds"][a],
            run["member_cpu_seconds"][a],
            run["member_forward"][a],
            run["member_backward"][a],
            radius_schedule="sea",
            from_ensemble=True,
            **shards,
        )
        for a, name in enumerate(run["members"])
    ]
    worst = confusion[choice, torch.arange(confusion.shape[1])]
    row = reliable_row(
        "Ensemble",
        eps,
        steps,
        worst,
        run["seconds"],
        run["cpu_seconds"],
        run["forward"],
        run["backward"],
        members=run["members"],
        early_stop=False,
        miou_of_accuracy_worst_case=mean_iou(worst.sum(0)),
        chosen_member_counts=torch.bincount(choice, minlength=len(run["members"])).tolist(),
        **shards,
    )
    row["miou"] = greedy_worst_case_miou(confusion)[0]  # the greedy worst case over per-image confusions
    return [row, *rows]


def row_key(row: dict) -> tuple:
    """Rows of the short-attack table and of ``--reliable`` (``protocol``) never replace each other."""
    return row["attack"], row["eps"], row["steps"], row.get("protocol")


def merge_results(rows: list[dict], command: str, base: dict) -> Path:
    """Replace the rows with the same key (:func:`row_key`) in the results file and add the others."""
    return merge_rows("attack_strength", rows, command, base, row_key)


def reliable_ensemble(model, val, eps: float, steps: int, batch_size: int = 16) -> dict:
    """The reliable ensemble's row (greedy worst-case mIoU, ``eps`` in 1/255) and its members' rows on ``val``."""
    loader = torch.utils.data.DataLoader(val, batch_size=batch_size, shuffle=False)
    ensemble, *members = rows_of(run_ensemble(model, loader, eps, steps), eps, steps)
    return {**ensemble, "member_rows": members}


def shard_images(count: int, shard: tuple[int, int]) -> list[int]:
    """The image indices of shard ``k`` of ``n``: consecutive, as even as possible."""
    k, n = shard
    return torch.arange(count).tensor_split(n)[k - 1].tolist()


def shard_path(name, eps, steps, k, n, model_key) -> Path:
    return CACHE / "reliable_shards" / model_key / f"{name}_eps{eps:g}_steps{steps}_shard{k}of{n}.pt"


def shard_store(name, eps, steps, shard, run, model_key) -> list[dict] | None:
    """Keep this shard's run; return all shards' runs in order once every one is there."""
    path = lambda k: shard_path(name, eps, steps, k, shard[1], model_key)  # noqa: E731
    path(1).parent.mkdir(parents=True, exist_ok=True)
    torch.save(run, path(shard[0]))
    if not all(path(k).exists() for k in range(1, shard[1] + 1)):
        return None
    return [torch.load(path(k), weights_only=False) for k in range(1, shard[1] + 1)]


def reliable(model, val, args, command: str, base: dict) -> None:
    """The reliable evaluation: each requested row at each eps, merged into the results as it finishes.

    With ``--shard k/n`` this process attacks only the k-th of n consecutive
    parts of val and keeps its per-image results in the benchmark cache; the
    process that completes the last part combines them into the rows.
    """
    write = len(val) == len(camvid("val", tuple(args.size)))
    if args.shard[1] > 1:
        val = torch.utils.data.Subset(val, shard_images(len(val), args.shard))
        command = command.replace(f"--shard {args.shard[0]}/", "--shard K/") + f"  # K = 1..{args.shard[1]}"
    loader = torch.utils.data.DataLoader(val, batch_size=args.batch_size, shuffle=False)
    for steps in args.steps:
        for eps in args.eps:
            todo = [r for r in RELIABLE_ROWS if r in args.rows]
            if "Ensemble" in todo:  # its members are the APGD runs of their losses
                todo = ["Ensemble"] + [
                    r for r in todo if r not in ("Ensemble", "APGD-masked_ce", "APGD-balanced_masked_ce", "APGD-js")
                ]
            for name in todo:
                run = (
                    run_ensemble(model, loader, eps, steps)
                    if name == "Ensemble"
                    else run_single(name, model, loader, eps, steps)
                )
                print(
                    f"{name} eps {eps:g}/255 steps {steps} shard {args.shard[0]}/{args.shard[1]}: "
                    f"{run['seconds']:.0f} s ({run['cpu_seconds']:.0f} s CPU)",
                    flush=True,
                )
                parts = [run]
                if write and args.shard[1] > 1:
                    parts = shard_store(name, eps, steps, args.shard, run, base["model"].get("key", "model"))
                    if parts is None:
                        continue
                rows = rows_of(combine(parts), eps, steps)
                for row in rows:
                    print(
                        f"{row['attack']:24s} eps {eps:g}/255 steps {steps}: mIoU {row['miou']:.4f}  pixel acc "
                        f"{row['pixel_accuracy']:.4f}  ({row['seconds']} s, {row['forward_per_image']:g} fwd + "
                        f"{row['backward_per_image']:g} bwd per image)",
                        flush=True,
                    )
                if write:
                    print(
                        f"wrote {merge_results([{**r, 'command': command} for r in rows], command, base)}", flush=True
                    )


def leading_shards(name, eps, steps, n, model_key) -> int:
    """How many of the shards 1, 2, ... of ``n`` are finished, counting from the first."""
    missing = (k for k in range(1, n + 1) if not shard_path(name, eps, steps, k, n, model_key).exists())
    return next(missing, n + 1) - 1


def combine_available(args, command: str, base: dict) -> None:
    """Rows from the leading shards (1..m of ``--shard``'s N) that every requested row has finished.

    For a run stopped before all shards were done: the rows cover the same
    first val images and say so in ``subset``.
    """
    key, n = base["model"].get("key", "model"), args.shard[1]
    for steps in args.steps:
        for eps in args.eps:
            m = min(leading_shards(name, eps, steps, n, key) for name in args.rows)
            if m == 0:
                print(f"eps {eps:g}/255 steps {steps}: no leading shard finished by every row", flush=True)
                continue
            rows = []
            for name in args.rows:
                parts = [
                    torch.load(shard_path(name, eps, steps, k, n, key), weights_only=False) for k in range(1, m + 1)
                ]
                rows += rows_of(combine(parts), eps, steps)
            subset = {} if m == n else {"subset": f"first {rows[0]['images']} val images ({m} of {n} shards)"}
            rows = [{**row, **subset, "command": command} for row in rows]
            for row in rows:
                print(
                    f"{row['attack']:24s} eps {eps:g}/255 steps {steps}: mIoU {row['miou']:.4f}  pixel acc "
                    f"{row['pixel_accuracy']:.4f}  {row.get('subset', 'all val')}",
                    flush=True,
                )
            print(f"wrote {merge_results(rows, command, base)}", flush=True)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"need 1 <= K <= N, got {text!r}")
    return k, n


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=(2, 4, 8), help="in 1/255 units")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="default: 10 20 (--reliable: 100)")
    parser.add_argument("--attacks", nargs="+", default=("PGD", "NAA", "SegPGD", "CosPGD", "EroSeg"))
    parser.add_argument(
        "--reliable",
        action="store_true",
        help="the reliable evaluation (rows: --rows); "
        "merges its rows into the results file as they finish, keeping the others",
    )
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=RELIABLE_ROWS,
        default=RELIABLE_ROWS,
        help="rows of --reliable (the Ensemble row also gives its members' APGD rows)",
    )
    parser.add_argument("--images", type=int, default=None, help="only the first N val images (writes nothing)")
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=(1, 1),
        metavar="K/N",
        help="--reliable on the K-th of N consecutive parts of val (run all N; the last combines)",
    )
    parser.add_argument(
        "--combine-available",
        action="store_true",
        help="--reliable: attack nothing; write the rows of the leading shards (of --shard K/N's N) "
        "that every requested row has finished",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--append", action="store_true", help="add these rows to the existing results file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.images is not None and args.images < 1:
        parser.error(f"--images must be at least 1, got {args.images}")
    args.eps = [int(e) if float(e).is_integer() else e for e in args.eps]
    if args.steps is None:
        args.steps = (100,) if args.reliable else (10, 20)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.time()
    model, info = trained_model(
        "standard", args.arch, args.encoder, tuple(args.size), args.epochs, run_recipe("standard")
    )
    val = camvid("val", tuple(args.size))
    if args.quick:
        val = torch.utils.data.Subset(val, range(16))
        args.eps, args.steps = (4,), (10,)
    if args.images is not None:
        val = torch.utils.data.Subset(val, range(min(args.images, len(val))))
    results = {"clean": None}
    if not (args.reliable and args.combine_available):  # combining attacks nothing
        results["clean"] = evaluate(model, val, batch_size=args.batch_size)
        print(
            f"clean: mIoU {results['clean']['miou']:.4f}  pixel acc {results['clean']['pixel_accuracy']:.4f}",
            flush=True,
        )
    command = "python benchmarks/attack_strength.py " + " ".join(argv if argv is not None else sys.argv[1:])
    base = {
        "command": command,
        "model": {"arch": args.arch, "encoder": args.encoder, "size": list(args.size), **info},
        "clean": results["clean"],
        "environment": environment(),
    }
    if args.reliable and args.combine_available:
        combine_available(args, command, base)
    elif args.reliable:
        reliable(model, val, args, command, base)
        return
    rows = []
    for steps in args.steps:
        for eps in args.eps:
            for name in args.attacks:
                t = time.time()
                scores = evaluate(model, val, attack_factory(name, model, eps / 255, steps), batch_size=args.batch_size)
                rows.append(
                    {"attack": name, "eps": eps, "steps": steps, **scores, "seconds": round(time.time() - t, 1)}
                )
                print(
                    f"{name:7s} eps {eps}/255 steps {steps:2d}: mIoU {scores['miou']:.4f}  "
                    f"pixel acc {scores['pixel_accuracy']:.4f}  ({rows[-1]['seconds']} s)",
                    flush=True,
                )
    if args.quick or args.images is not None:
        return
    if args.append:
        print(f"wrote {merge_results(rows, command, base)}")
    else:
        payload = {**base, "rows": rows, "total_seconds": round(time.time() - start, 1)}
        print(f"wrote {write_results('attack_strength', payload)}")


if __name__ == "__main__":
    main()
