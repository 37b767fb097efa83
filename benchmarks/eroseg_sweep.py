"""EroSeg defaults: a sweep of its arguments on CamVid val, then long runs against SegPGD and CosPGD.

The model is the attack-strength model (``attack_strength.py``: Linknet-resnet18,
96×128, 20 epochs of standard training, cached). Every run attacks the whole
val split (101 images) with ``alpha = 2.5·eps/steps``, random start, seed 0.

Stage ``search`` (10 steps), resumable (rows already in the results file are
not recomputed):

1. grid of ``q0`` × ``fooled_weight`` at 4/255;
2. while the best cell sits on an edge of the grid, one more value past that
   edge (``q0`` up to 1, ``fooled_weight`` down to 0);
3. coordinate search around the best cell, one argument at a time, keeping a
   change only when it lowers mIoU: ``kernel_size``, ``schedule``,
   ``confidence``;
4. the best settings at 4/255 (``--finalists``) at 2 and 8/255.

Selection rule: the finalist with the lowest mean val mIoU over 2, 4 and
8/255 at 10 steps is ``best1``, the next ``best2``.

Stage ``long`` runs ``--attacks`` (SegPGD, CosPGD, EroSeg-old, EroSeg-best1,
EroSeg-best2, or ``EroSeg:q0=0.85,fooled_weight=0.1`` for any setting) at ``--steps`` (default 100; ``--steps 10`` gives the baselines
at the search budget) and ``--eps``. Stages may run concurrently: rows are
merged into the results file under a lock.

Usage:
    python benchmarks/eroseg_sweep.py --stage search
    python benchmarks/eroseg_sweep.py --stage long --steps 10 --attacks SegPGD CosPGD EroSeg-old
    python benchmarks/eroseg_sweep.py --stage long --attacks SegPGD CosPGD EroSeg-best1 EroSeg-best2
    python benchmarks/eroseg_sweep.py --quick        # 8 val images, 2 steps, tiny grid; writes nothing
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import CACHE, RESULTS, camvid, environment, run_recipe, trained_model, write_results
from attack_strength import evaluate

NAME = "eroseg_sweep"
#: the EroSeg arguments this sweep varies, at the values of ALGORITHMS.md (the class defaults before the sweep)
OLD_DEFAULTS = {"q0": 0.2, "fooled_weight": 0.5, "kernel_size": 3, "schedule": "linear", "confidence": "true_prob"}
Q0_LADDER = (0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0)
FOOLED_WEIGHT_LADDER = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
NEIGHBOURS = {"kernel_size": (3, 5), "schedule": ("linear", "cosine"), "confidence": ("true_prob", "max_prob")}
SEED = 0


def label(setting: dict[str, Any]) -> str:
    return ("EroSeg q0={q0} fw={fooled_weight} k={kernel_size} {schedule} {confidence}").format(**setting)


class Store:
    """The results file, shared by concurrent runs of this script: every row is merged under a file lock."""

    def __init__(self, enabled: bool, command: str, header: dict[str, Any]):
        self.enabled, self.command, self.header = enabled, command, header
        self.path = RESULTS / f"{NAME}.json"
        self.rows: list[dict[str, Any]] = self._read()["rows"] if enabled else []

    def _read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {"rows": []}

    def _locked(self, mode: int):
        CACHE.mkdir(parents=True, exist_ok=True)
        lock = open(CACHE / f"{NAME}.lock", "w")
        fcntl.flock(lock, mode)
        return lock

    def find(self, name: str, eps: float, steps: int) -> dict[str, Any] | None:
        if self.enabled:  # another process may have added the row meanwhile; the lock keeps out half-written files
            with self._locked(fcntl.LOCK_SH):
                self.rows = self._read()["rows"]
        return next((r for r in self.rows if (r["attack"], r["eps"], r["steps"]) == (name, eps, steps)), None)

    def add(self, row: dict[str, Any]) -> None:
        key = (row["attack"], row["eps"], row["steps"])
        self.rows = [r for r in self.rows if (r["attack"], r["eps"], r["steps"]) != key] + [row]
        self._merge(
            lambda payload: payload.update(
                rows=[r for r in payload["rows"] if (r["attack"], r["eps"], r["steps"]) != key] + [row]
            )
        )

    def get(self, key: str) -> Any:
        if not self.enabled:
            return None
        with self._locked(fcntl.LOCK_SH):
            return self._read().get(key)

    def set(self, key: str, value: Any) -> None:
        self._merge(lambda payload: payload.update({key: value}))

    def _merge(self, change: Callable[[dict[str, Any]], None]) -> None:
        if not self.enabled:
            return
        with self._locked(fcntl.LOCK_EX):
            payload = {**self._read(), **self.header}
            change(payload)
            if self.command not in payload.setdefault("commands", []):
                payload["commands"].append(self.command)
            self.rows = payload["rows"]
            write_results(NAME, payload)


class Runner:
    """Runs (or looks up) one attack at one budget on the val set and records the row."""

    def __init__(self, model, val, store: Store, log: Callable[[str], None] = print):
        self.model, self.val, self.store, self.log = model, val, store, log

    def attack(self, name: str, setting: dict[str, Any] | None, eps: float, steps: int):
        import segrobust.attacks as sa

        alpha = 2.5 * eps / 255 / steps
        kwargs = dict(eps=eps / 255, alpha=alpha, steps=steps, random_start=True)
        if setting is None:
            return getattr(sa, name)(self.model, **kwargs)
        return sa.EroSeg(self.model, **kwargs, **setting)

    def run(self, name: str, setting: dict[str, Any] | None, eps: float, steps: int, stage: str) -> float:
        done = self.store.find(name, eps, steps)
        if done is not None:
            return done["miou"]
        start = time.time()
        scores = evaluate(self.model, self.val, self.attack(name, setting, eps, steps), seed=SEED)
        row = {
            "attack": name,
            "setting": setting,
            "eps": eps,
            "steps": steps,
            "stage": stage,
            **scores,
            "seconds": round(time.time() - start, 1),
        }
        self.store.add(row)
        self.log(
            f"{name:55s} eps {eps}/255 steps {steps:3d}: mIoU {scores['miou']:.4f}  "
            f"pixel acc {scores['pixel_accuracy']:.4f}  ({row['seconds']} s)"
        )
        return scores["miou"]

    def eroseg(self, setting: dict[str, Any], eps: float, steps: int, stage: str) -> float:
        return self.run(label(setting), setting, eps, steps, stage)


def _step_past_edge(ladder: tuple, tried: set, best: Any) -> Any | None:
    """The next ladder value beyond ``best`` when ``best`` is the lowest or highest value tried so far."""
    index = ladder.index(best)
    if best == min(tried) and index > 0:
        return ladder[index - 1]
    if best == max(tried) and index < len(ladder) - 1:
        return ladder[index + 1]
    return None


def search_q0_fooled_weight(runner: Runner, q0s, weights, steps: int) -> dict[str, Any]:
    """Stages 1 and 2: the grid at 4/255, then one step past whichever edge holds the best cell, repeated."""
    scores = {}
    for q0 in q0s:
        for weight in weights:
            scores[(q0, weight)] = runner.eroseg({**OLD_DEFAULTS, "q0": q0, "fooled_weight": weight}, 4, steps, "grid")
    while True:
        q0, weight = min(scores, key=scores.get)
        extra = [
            (step, weight) for step in [_step_past_edge(Q0_LADDER, {k[0] for k in scores}, q0)] if step is not None
        ]
        extra += [
            (q0, step)
            for step in [_step_past_edge(FOOLED_WEIGHT_LADDER, {k[1] for k in scores}, weight)]
            if step is not None
        ]
        extra = [cell for cell in extra if cell not in scores]
        if not extra:
            return {**OLD_DEFAULTS, "q0": q0, "fooled_weight": weight}
        for cell in extra:
            scores[cell] = runner.eroseg({**OLD_DEFAULTS, "q0": cell[0], "fooled_weight": cell[1]}, 4, steps, "edge")


def coordinate_search(runner: Runner, best: dict[str, Any], steps: int) -> dict[str, Any]:
    """Stage 3: each remaining argument in turn, keeping a value only if it lowers mIoU at 4/255."""
    best_score = runner.eroseg(best, 4, steps, "grid")
    for argument, values in NEIGHBOURS.items():
        for value in values:
            candidate = {**best, argument: value}
            score = runner.eroseg(candidate, 4, steps, "neighbours")
            if score < best_score:
                best, best_score = candidate, score
    return best


def select(runner: Runner, finalists: list[dict[str, Any]], eps_list, steps: int) -> list[dict[str, Any]]:
    """Stage 4: the finalists at every eps; returns them ordered by mean mIoU over ``eps_list`` (best first)."""
    means = [
        sum(runner.eroseg(setting, eps, steps, "finalists") for eps in eps_list) / len(eps_list)
        for setting in finalists
    ]
    return [finalists[i] for i in sorted(range(len(finalists)), key=means.__getitem__)]


def top_settings(store: Store, eps: float, steps: int, count: int) -> list[dict[str, Any]]:
    """The ``count`` EroSeg settings with the lowest mIoU at (eps, steps) among the recorded rows."""
    rows = sorted(
        (r for r in store.rows if r["setting"] is not None and r["eps"] == eps and r["steps"] == steps),
        key=lambda r: r["miou"],
    )
    return [r["setting"] for r in rows[:count]]


def stage_search(runner: Runner, store: Store, args) -> None:
    best = search_q0_fooled_weight(runner, args.q0, args.fooled_weight, args.search_steps)
    coordinate_search(runner, best, args.search_steps)
    finalists = top_settings(store, 4, args.search_steps, args.finalists)
    ranked = select(runner, finalists, args.eps, args.search_steps)
    store.set(
        "selection",
        {
            "rule": f"lowest mean val mIoU over eps {list(args.eps)}/255 at {args.search_steps} "
            "steps among the finalists",
            "best1": ranked[0],
            "best2": ranked[1],
            "ranking": [label(s) for s in ranked],
        },
    )
    runner.log(f"best1: {label(ranked[0])}\nbest2: {label(ranked[1])}")


def parse_setting(name: str) -> dict[str, Any]:
    """``EroSeg:q0=0.85,fooled_weight=0.1`` -> the old defaults with those arguments changed."""
    setting = dict(OLD_DEFAULTS)
    for item in name.split(":", 1)[1].split(","):
        key, _, value = item.partition("=")
        if key not in setting:
            raise SystemExit(f"--attacks {name}: unknown EroSeg argument {key!r}; expected one of {sorted(setting)}")
        setting[key] = type(setting[key])(value)
    return setting


def stage_long(runner: Runner, store: Store, args) -> None:
    selection = store.get("selection") or {}
    stage = "baselines" if args.steps == args.search_steps else "long"
    settings = {
        "EroSeg-old": OLD_DEFAULTS,
        "EroSeg-best1": selection.get("best1"),
        "EroSeg-best2": selection.get("best2"),
    }
    for eps in args.eps:
        for name in args.attacks:
            if name.startswith("EroSeg:"):
                runner.eroseg(parse_setting(name), eps, args.steps, stage)
            elif name in settings:
                if settings[name] is None:
                    raise SystemExit(f"{name}: run --stage search first (no selection in {store.path})")
                runner.eroseg(settings[name], eps, args.steps, stage)
            else:
                runner.run(name, None, eps, args.steps, stage)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("search", "long"), default="search")
    parser.add_argument("--arch", default="Linknet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=(4, 8, 2), help="in 1/255 units")
    parser.add_argument("--q0", type=float, nargs="+", default=(0.2, 0.35, 0.5, 0.7))
    parser.add_argument("--fooled-weight", type=float, nargs="+", default=(0.1, 0.25, 0.5))
    parser.add_argument("--search-steps", type=int, default=10)
    parser.add_argument("--finalists", type=int, default=3, help="best settings at 4/255 taken to every eps")
    parser.add_argument("--steps", type=int, default=100, help="steps of the long stage")
    parser.add_argument(
        "--attacks", nargs="+", default=("SegPGD", "CosPGD", "EroSeg-best1", "EroSeg-best2", "EroSeg-old")
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.eps = [int(eps) if float(eps).is_integer() else eps for eps in args.eps]  # row keys: 4, not 4.0
    torch.set_num_threads(args.threads)

    model, info = trained_model(
        "standard", args.arch, args.encoder, tuple(args.size), args.epochs, run_recipe("standard")
    )
    val = camvid("val", tuple(args.size))
    if args.quick:
        val = torch.utils.data.Subset(val, range(8))
        args.q0, args.fooled_weight, args.search_steps, args.steps, args.finalists = (0.2, 0.5), (0.1, 0.5), 2, 3, 2
    command = "python benchmarks/eroseg_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = {
        "model": {"arch": args.arch, "encoder": args.encoder, "size": list(args.size), **info},
        "clean": evaluate(model, val),
        "old_defaults": OLD_DEFAULTS,
        "environment": environment(),
    }
    store = Store(not args.quick, command, header)
    runner = Runner(model, val, store, log=lambda line: print(line, flush=True))
    start = time.time()
    (stage_search if args.stage == "search" else stage_long)(runner, store, args)
    print(f"{args.stage}: {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
