"""Print the Markdown tables of docs/benchmarks.md from benchmarks/results/*.json.

python benchmarks/render_tables.py [NAME ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def attack_strength(r: dict) -> str:
    reliable = [row for row in r["rows"] if row.get("protocol") == "reliable"]
    r = {**r, "rows": [row for row in r["rows"] if row.get("protocol") != "reliable"]}
    if not r["rows"]:
        return reliable_table(reliable)
    m = r["model"]
    lines = [
        f"smp {m['arch']}-{m['encoder']} trained from scratch on CamVid train at {m['size'][0]}×{m['size'][1]} "
        f"({m.get('epochs')} epochs); CamVid val, {len(r['rows'])} attack runs, "
        f"{sum(row.get('seconds', 0) for row in r['rows']) / 60:.0f} min of attacks on "
        f"{r['environment']['threads']} CPU thread(s). "
        f"Clean: mIoU {r['clean']['miou']:.3f}, pixel accuracy {r['clean']['pixel_accuracy']:.3f}.",
        "",
        "| steps | eps | " + " | ".join(sorted({row["attack"] for row in r["rows"]}, key=_order)) + " |",
        "| --- | --- |" + " --- |" * len({row["attack"] for row in r["rows"]}),
    ]
    attacks = sorted({row["attack"] for row in r["rows"]}, key=_order)
    for steps in sorted({row["steps"] for row in r["rows"]}):
        for eps in sorted({row["eps"] for row in r["rows"]}):
            cells = []
            for a in attacks:
                row = next((x for x in r["rows"] if x["attack"] == a and x["eps"] == eps and x["steps"] == steps), None)
                cells.append("-" if row is None else f"{row['miou']:.3f} / {row['pixel_accuracy']:.3f}")
            lines.append(f"| {steps} | {eps:g}/255 | " + " | ".join(cells) + " |")
    lines += ["", "Cells: mIoU / pixel accuracy (lower is a stronger attack)."]
    return "\n".join(lines) + ("\n\n" + reliable_table(reliable) if reliable else "")


RELIABLE_ORDER = [
    "APGD-ce",
    "APGD-masked_ce",
    "APGD-balanced_masked_ce",
    "APGD-js",
    "APGD-eroseg",
    "CosPGD",
    "SegPGD",
    "EroSeg",
    "Ensemble",
]


def reliable_table(rows: list[dict]) -> str:
    """The rows of ``attack_strength.py --reliable``: one line per attack and eps."""
    lines = [
        "| eps | attack | steps | step size | images | mIoU | pixel acc. | wall time (CPU time) | fwd + bwd per image |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def key(row):
        return row["eps"], row["steps"], RELIABLE_ORDER.index(row["attack"]) if row["attack"] in RELIABLE_ORDER else 99

    for row in sorted(rows, key=key):
        if row["attack"] == "Ensemble":
            name, step = "**worst case of the ensemble**", "APGD"
        else:
            name = row["attack"] + (" (ensemble member)" if row.get("from_ensemble") else "")
            step = f"{row['alpha']:.4g} ({row['alpha'] * 255:.3g}/255)" if "alpha" in row else "APGD (SEA radii)"
        cpu = f" ({row['cpu_seconds'] / 60:.1f} min)" if "cpu_seconds" in row else ""
        lines.append(
            f"| {row['eps']:g}/255 | {name} | {row['steps']} | {step} | {row['images']} | {row['miou']:.3f} | "
            f"{row['pixel_accuracy']:.3f} | {row['seconds'] / 60:.1f} min{cpu} | "
            f"{row['forward_per_image']:g} + {row['backward_per_image']:g} |"
        )
    subsets = sorted({row["subset"] for row in rows if "subset" in row})
    return "\n".join(lines + [f"\nPartial rows: {subset}." for subset in subsets])


def _order(name: str) -> int:
    order = ["PGD", "NAA", "SegPGD", "CosPGD", "EroSeg", "EroSeg-tuned"]
    return order.index(name) if name in order else len(order)


def adversarial_training(r: dict) -> str:
    attacks = sorted(r["rows"][0]["per_attack"], key=_order)
    reliable = any("reliable" in row for row in r["rows"])
    lines = [
        f"CamVid val; robust = lowest mIoU over the attacks at {r['eval_eps'] * 255:g}/255, {r['eval_steps']} steps; "
        f"adversarial training with a {r['train_attack']['steps']}-step attack at the same eps, "
        f"{r['model']['epochs']} epochs each"
        + (
            f", fine-tuned from the {r['model']['fine_tuned_from']} model."
            if r["model"].get("fine_tuned_from")
            else ", from scratch."
        ),
        "",
        "| training | clean mIoU | "
        + ("reliable ensemble mIoU / acc. | " if reliable else "")
        + "robust mIoU (short attack) | "
        + " | ".join(attacks)
        + " | train time |",
        "| --- | --- | --- |" + " --- |" * (len(attacks) + reliable) + " --- |",
    ]
    for row in r["rows"]:
        cells = [f"{row['per_attack'][a]['miou']:.3f}" for a in attacks]
        if reliable:
            ens = row.get("reliable")
            cells.insert(0, f"**{ens['miou']:.3f}** / {ens['pixel_accuracy']:.3f}" if ens else "not run")
        lines.append(
            f"| {row['training']} | {row['clean']['miou']:.3f} | "
            + (cells.pop(0) + " | " if reliable else "")
            + f"{row['robust']['miou']:.3f} ({row['robust']['attack']}) | "
            + " | ".join(cells)
            + f" | {row['train_seconds'] or 0:.0f} s |"
        )
    return "\n".join(lines)


def _reliable_cell(value: dict | None) -> str:
    """A reliable-ensemble column: greedy worst-case mIoU / accuracy (or, on rainy images, beside their rainy mIoU)."""
    if value is None:
        return "-"
    if "miou" in value:
        return f"**{value['miou']:.3f}** / {value['pixel_accuracy']:.3f}"
    return f"**{value['reliable']:.3f}** (rainy {value['rainy']:.3f}, {value['images']} images)"


def conditions_table(r: dict) -> str:
    """One row per model: the conditions' mIoU, then the reliable-ensemble and depth-error columns that exist."""
    timed = any(row.get("train_seconds") for row in r["rows"])
    reliable = sorted({key for row in r["rows"] for key in row if key.startswith("reliable")})
    depth = any("depth_abs_rel" in row for row in r["rows"])
    header = [*r["conditions"], *reliable, *(["depth abs-rel"] if depth else []), *(["train time"] if timed else [])]
    lines = ["| model | " + " | ".join(header) + " |", "| --- |" + " --- |" * len(header)]
    for row in r["rows"]:
        cells = [f"{row[c]:.3f}" if c in row else "-" for c in r["conditions"]]
        cells += [_reliable_cell(row.get(column)) for column in reliable]
        if depth:
            cells.append(f"{row['depth_abs_rel']:.3f}" if "depth_abs_rel" in row else "-")
        if timed:
            cells.append(f"{row['train_seconds']:.0f} s" if row.get("train_seconds") else "-")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


RENDERERS = {
    "attack_strength": attack_strength,
    "adversarial_training": adversarial_training,
    "pearl": conditions_table,
    "pearl_unet": conditions_table,
    "pearl_unet_e10": conditions_table,
    "depth_multitask": conditions_table,
    "depth_synthetic": conditions_table,
    "depth_transfer": conditions_table,
}


def main() -> None:
    names = sys.argv[1:] or [p.stem for p in sorted(RESULTS.glob("*.json"))]
    for name in names:
        path = RESULTS / f"{name}.json"
        renderer = RENDERERS.get(name) or RENDERERS.get(name.rsplit("_", 1)[0])  # earlier files: name_<date>
        if renderer is None or not path.exists():
            continue
        result = json.loads(path.read_text())
        commands = [result["command"].strip(), *result.get("appended_commands", [])]
        listing = "\n".join(f"`{c.strip()}`" for c in commands)
        print(f"### {name}\n\n{listing}\n\n{renderer(result)}\n")


if __name__ == "__main__":
    main()
