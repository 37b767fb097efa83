"""segrobust's reliable presets against SEA's own code on the same model and CamVid images.

The library side is ``ReliableEnsemble(model, eps, preset=NAME)`` exactly as the
benchmark runs it (SEA's class weights computed from CamVid train masks for the
members that ask for them). The SEA side imports ``semseg/attacker.py`` of
``nmndeep/Robust-Segmentation`` (ECCV 2024) from a folder you give with
``--sea-code`` (clone it to a temporary folder; nothing of it is part of
segrobust) and runs its published protocol: ``apgd_largereps`` with
``mask-ce-bal``, ``mask-ce-avg`` and ``js-avg``, 300 iterations each, random
start, early stop, CE tracking. With ``--sea-void-fix`` one line is added to a
temporary copy of that file: its initial accuracy counts void pixels as wrong
while its loop counts them as right, so on data with void pixels its first
best-point choice is skewed; the fix counts them as right in both places.

Both sides are scored the same way: per image the member with the lowest pixel
accuracy; the greedy worst-case mIoU over all members' per-image confusion
matrices; CPU seconds (``time.process_time``, one thread) and iterations per image.

Usage:
    python benchmarks/reliable_vs_sea.py --model standard --eps 4 --presets default
    python benchmarks/reliable_vs_sea.py --model standard --eps 4 --sea-code /tmp/Robust-Segmentation --sea-void-fix
    python benchmarks/reliable_vs_sea.py --plot docs/images/reliable_vs_sea.png   # greedy mIoU vs iterations
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _camvid import CACHE, NUM_CLASSES, RESULTS, build_model, camvid, environment, merge_rows

from segrobust.attacks import ReliableEnsemble, greedy_worst_case_miou
from segrobust.losses import sea_class_weights
from segrobust.metrics.functional import confusion_matrix

#: cached CamVid models (trained by benchmarks/attack_strength.py and adversarial_training.py)
MODELS = {
    "standard": "standard_Linknet-resnet18_96x128_e20",
    "pgdat": "ft-pgdat4s3-from-e20_Linknet-resnet18_96x128_e3",
}
SIZE = (96, 128)
VOID = 255
SEA_LOSSES = ("mask-ce-bal", "mask-ce-avg", "js-avg")
SEA_VOID_LINE = "    acc = acc.float().view(bs, -1).mean(-1)\n    acc_steps[0] = acc + 0\n"


def load_model(name: str) -> torch.nn.Module:
    model = build_model("Linknet", "resnet18")
    model.load_state_dict(torch.load(CACHE / f"{MODELS[name]}.pt", map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def load_images(split: str, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = camvid(split, SIZE)
    items = [data[i] for i in range(0, len(data), stride)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["mask"] for it in items]).long()


def per_image_confusion(predictions: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.stack([confusion_matrix(p[None], m[None], NUM_CLASSES, VOID) for p, m in zip(predictions, masks)])


def summary(confusions: torch.Tensor) -> dict[str, float]:
    """Greedy worst-case mIoU and the pooled pixel accuracy of the per-image worst members ``(A, N, K, K)``."""
    greedy, _ = greedy_worst_case_miou(confusions)
    correct = confusions.diagonal(dim1=-2, dim2=-1).sum(-1).double()
    accuracy = correct / confusions.sum((-2, -1)).clamp_min(1)
    worst = accuracy.argmin(0)
    chosen = confusions[worst, torch.arange(confusions.shape[1])]
    pooled = float(chosen.diagonal(dim1=-2, dim2=-1).sum() / chosen.sum())
    return {"greedy_miou": round(greedy, 5), "pixel_accuracy": round(pooled, 5)}


def run_preset(model, images, masks, eps, spec, weights, batch) -> dict[str, Any]:
    """``spec``: a preset name, or ``NAME:STEPS`` to give each of its members STEPS iterations."""
    preset, _, steps = spec.partition(":")
    attack = ReliableEnsemble(model, eps, steps=int(steps) if steps else None, preset=preset, class_weights=weights)
    parts, iterations, start = [], [], time.process_time()
    for s in range(0, len(images), batch):
        _, stats = attack(images[s : s + batch], masks[s : s + batch], return_stats=True)
        parts.append(stats.confusion)
        iterations.append(stats.iterations_per_image)
    confusions = torch.cat(parts, dim=1)
    members = {name: summary(confusions[a : a + 1]) for a, name in enumerate(attack.member_names)}
    return {
        "method": f"segrobust preset {preset}" + (f", {steps} iterations per member" if steps else ""),
        **summary(confusions),
        "iterations_per_image": float(torch.cat(iterations).float().mean()),
        "cpu_s": round(time.process_time() - start, 1),
        "members": members,
    }


def sea_module(folder: Path, void_fix: bool):
    source = folder / "semseg" / "attacker.py"
    if not source.is_file():
        raise SystemExit(f"--sea-code: {source} not found (clone nmndeep/Robust-Segmentation there)")
    text = source.read_text()
    if void_fix:
        if SEA_VOID_LINE not in text:
            raise SystemExit("--sea-void-fix: the expected lines are not in this version of attacker.py")
        fixed = "    acc[y == ignore_index] = True\n" + SEA_VOID_LINE
        text = text.replace(SEA_VOID_LINE, fixed, 1)
    copy = Path(tempfile.mkdtemp()) / "sea_attacker.py"
    copy.write_text(text)
    sys.path.insert(0, str(folder))  # its own imports (autoattack helpers) resolve from the clone
    spec = importlib.util.spec_from_file_location("sea_attacker", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_sea(model, images, masks, eps, weights, batch, module, iterations) -> dict[str, Any]:
    confusions, start = [], time.process_time()
    for loss in SEA_LOSSES:
        parts = []
        for s in range(0, len(images), batch):
            x, y = images[s : s + batch], masks[s : s + batch].clone()
            y[y == VOID] = -1  # SEA's ignore index
            adv, _, _ = module.apgd_largereps(
                model, x, y, weights, norm="Linf", eps=eps, n_iter=iterations, loss=loss, track_loss="ce-avg",
                use_rs=True, early_stop=True, verbose=False, log_path=None, num_classes=NUM_CLASSES,
            )  # fmt: skip
            if float((adv - x).abs().max()) > eps + 1e-6:
                raise RuntimeError(f"SEA {loss} left the eps ball")
            with torch.no_grad():
                parts.append(per_image_confusion(model(adv).argmax(1), masks[s : s + batch]))
        confusions.append(torch.cat(parts))
    confusions = torch.stack(confusions)
    members = {loss: summary(confusions[a : a + 1]) for a, loss in enumerate(SEA_LOSSES)}
    return {
        "method": f"SEA own code, 3 x {iterations}",
        **summary(confusions),
        "iterations_per_image": 3 * iterations,
        "cpu_s": round(time.process_time() - start, 1),
        "members": members,
    }


def plot(path: Path) -> None:
    """Greedy worst-case mIoU against iterations per image: one panel per model and eps with a budget sweep
    (three or more rows), one line per method."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads((RESULTS / "reliable_vs_sea.json").read_text())["rows"]
    counts: dict = {}
    for r in rows:
        counts[(r["model"], r["eps_255"])] = counts.get((r["model"], r["eps_255"]), 0) + 1
    panels = sorted(panel for panel, count in counts.items() if count >= 3)  # a budget sweep ran there
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for axis, (model, eps) in zip(axes[0], panels):
        for family, marker in (("segrobust preset default", "o"), ("SEA own code", "s")):
            points = sorted(
                (r["iterations_per_image"], r["greedy_miou"])
                for r in rows
                if (r["model"], r["eps_255"]) == (model, eps) and r["method"].startswith(family)
            )
            if points:
                axis.plot(*zip(*points), marker=marker, label=family.replace("segrobust preset ", "segrobust "))
        axis.set(title=f"{model}, ε = {eps:g}/255", xlabel="iterations per image", ylabel="greedy worst-case mIoU")
        axis.set_xscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="standard")
    parser.add_argument("--eps", type=float, default=4.0, help="in 1/255")
    parser.add_argument("--split", default="val")
    parser.add_argument("--stride", type=int, default=3, help="every STRIDE-th image of the split")
    parser.add_argument("--presets", nargs="*", default=["default"], help="NAME or NAME:STEPS (STEPS per member)")
    parser.add_argument("--sea-code", type=Path, help="a clone of nmndeep/Robust-Segmentation")
    parser.add_argument("--sea-void-fix", action="store_true")
    parser.add_argument(
        "--sea-iterations", type=int, nargs="+", default=[300], help="per loss; several: a budget sweep"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, help="only draw the figure of the stored rows to this PNG")
    args = parser.parse_args()
    if args.plot is not None:
        return plot(args.plot)
    torch.set_num_threads(1)
    model = load_model(args.model)
    images, masks = load_images(args.split, args.stride)
    weights = sea_class_weights(load_images("train", 1)[1], NUM_CLASSES, VOID)
    eps = args.eps / 255
    with torch.no_grad():
        clean = summary(per_image_confusion(model(images).argmax(1), masks)[None])
    base = {"model": args.model, "eps_255": args.eps, "split": args.split, "stride": args.stride,
            "images": len(images), "seed": args.seed, "clean_miou": clean["greedy_miou"]}  # fmt: skip
    jobs = [(p, lambda p=p: run_preset(model, images, masks, eps, p, weights, args.batch)) for p in args.presets]
    if args.sea_code is not None:
        module = sea_module(args.sea_code, args.sea_void_fix)
        for n in args.sea_iterations:
            tag = f"SEA{'+voidfix' if args.sea_void_fix else ''}" + (f":{n}" if n != 300 else "")
            jobs.append((tag, lambda n=n: run_sea(model, images, masks, eps, weights, args.batch, module, n)))
    command = "python benchmarks/reliable_vs_sea.py " + shlex.join(sys.argv[1:])
    for name, job in jobs:
        torch.manual_seed(args.seed)
        row = {**base, "name": name, **job()}
        print(f"{name}: greedy mIoU {row['greedy_miou']:.4f} acc {row['pixel_accuracy']:.4f} "
              f"iterations/image {row['iterations_per_image']:.0f} cpu {row['cpu_s']:.0f}s", flush=True)  # fmt: skip
        key_fields = ("model", "eps_255", "split", "stride", "seed", "name")
        merge_rows(
            "reliable_vs_sea",
            [row],
            command,
            {"environment": environment()},
            key=lambda r: tuple(r.get(k) for k in key_fields),
        )


if __name__ == "__main__":
    main()
