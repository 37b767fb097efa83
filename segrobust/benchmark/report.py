"""The files of a benchmark run: ``results.json``, ``report.md`` and the figures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Union

from segrobust.benchmark.functional import format_eps
from segrobust.benchmark.plots import plot_examples, plot_miou_vs_eps, plot_rain_examples
from segrobust.benchmark.results import BenchmarkResults
from segrobust.benchmark.storage import OutputFolder
from segrobust.fileio import atomic_write_text

__all__ = ["render_markdown", "write_report"]


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def render_markdown(results: BenchmarkResults, figures: Union[dict[str, str], None] = None) -> str:
    """``report.md``: settings, the summary table, the worst case, figures, per-class IoU, versions."""
    figures = figures or {}
    config = results.config
    clean = results.clean
    lines = ["# segrobust robustness report", ""]
    described = [
        ("Model", config.get("model_name")),
        ("Defence", config.get("defense")),
        ("Data", f"{config.get('dataset_name', 'data')}: {results.num_images} images of {'×'.join(map(str, config.get('image_size', [])))} px"),
        ("Attacks", f"{', '.join(config.get('attacks', [])) or 'none'}; ε ∈ {{{', '.join(format_eps(e) for e in config.get('eps', []))}}}, "
         f"{config.get('steps')} steps, α = {'2.5·ε/steps' if config.get('alpha') is None else config.get('alpha')}, "
         f"random start: {config.get('random_start')}"),
        ("Rain presets", ", ".join(config.get("rain", [])) or "none"),
        ("Seed", config.get("seed")),
        ("Processes", f"{config.get('world_size', 1)} on {config.get('device', '?')}"),
    ]
    lines += [f"- **{name}**: {value}" for name, value in described if value not in (None, "")]
    lines += ["", "## Summary", "", results.table("markdown"), ""]
    worst = [row for row in results.rows if row.kind == "worst"]
    if worst:
        strongest = worst[-1]
        counts: dict[str, int] = {}
        for key in strongest.worst_attack or []:
            counts[key] = counts.get(key, 0) + 1
        share = ", ".join(f"{key} {n}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines += [
            f"Per-image worst case at ε = {format_eps(strongest.eps)}: mIoU {_pct(clean.miou)} % → {_pct(strongest.miou)} % "
            f"(pixel accuracy {_pct(clean.pixel_accuracy)} % → {_pct(strongest.pixel_accuracy)} %). "
            f"Strongest attack per image: {share}.",
            "",
        ]
    positive = [row for row in results.rows if row.kind == "positive"]
    if positive:
        lines += [
            "AMA (positive) descends the loss: it shows how much a small change *helps* the model and is "
            "not part of the worst case.",
            "",
        ]
    for title, key in (("mIoU against ε", "miou_vs_eps"), ("Adversarial examples", "examples"), ("Rain examples", "rain_examples")):
        if key in figures:
            lines += [f"## {title}", "", f"![{title}]({figures[key]})", ""]
    if "examples" in figures:
        lines.insert(
            lines.index(f"![Adversarial examples]({figures['examples']})") + 1,
            "\nColumns: image, its prediction, the adversarial image of the strongest attack for that image at the "
            "largest ε, the perturbation scaled so ±ε spans black to white, the prediction on it, the ground truth.",
        )
    rain = sorted((row for row in results.rows if row.kind == "rain"), key=lambda row: row.miou)
    chosen = [clean, *rain[:1], *worst[-1:]]  # clean, the hardest rain, the strongest worst case
    lines += ["## Per-class IoU (%)", "", "| Class | " + " | ".join(row.label for row in chosen) + " |", "|---|" + "---:|" * len(chosen)]
    for c, name in enumerate(results.class_names):
        lines.append(f"| {name} | " + " | ".join(_pct(row.iou[c]) for row in chosen) + " |")
    lines += ["", "## Throughput", ""]
    timing = results.timing
    if timing.get("clean_images_per_second"):
        lines.append(f"- clean evaluation: {timing['clean_images_per_second']:.1f} images/s")
    for tag, speed in (timing.get("attack_images_per_second") or {}).items():
        if speed:
            lines.append(f"- {tag}: {speed:.2f} images/s")
    lines.append(
        f"- {timing.get('world_size', 1)} process(es), {timing.get('threads_per_process', '?')} thread(s) each, "
        f"{timing.get('seconds', 0):.1f} s of computation in this run (resumed batches excluded)"
    )
    lines += ["", "## Configuration", "", "```json", json.dumps(config, indent=2, sort_keys=True, default=str), "```", ""]
    lines += ["## Versions", "", "| Package | Version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in results.versions.items()]
    lines += ["", "Every number is in `results.json`.", ""]
    return "\n".join(lines)


def write_report(results: BenchmarkResults, out_dir: Union[str, os.PathLike]) -> dict[str, Path]:
    """Write ``results.json``, ``miou_vs_eps.png``, ``examples.png`` (and ``rain_examples.png``), ``report.md``.

    Files of these names that segrobust did not write (or that were changed
    since) are never overwritten: the call raises
    [OutputFolderError][segrobust.benchmark.OutputFolderError] before writing
    anything. The files written are recorded (name and SHA-256) in
    ``out_dir/.segrobust-benchmark.json``. Returns the paths written, by name.
    """
    folder = OutputFolder(out_dir)
    folder.check_report_files()
    out = folder.path
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    try:
        written["results"] = results.save_json(out / "results.json")
        _write_figures_and_markdown(results, out, written)
    finally:
        folder.record(written.values())
    return written


def _write_figures_and_markdown(results: BenchmarkResults, out: Path, written: dict[str, Path]) -> None:
    figures: dict[str, str] = {}
    for key, plot in (("miou_vs_eps", plot_miou_vs_eps), ("examples", plot_examples), ("rain_examples", plot_rain_examples)):
        target = out / f"{key}.png"
        path = plot(results, target)
        if path is not None:
            written[key] = path
            figures[key] = path.name
    written["report"] = atomic_write_text(out / "report.md", render_markdown(results, figures))
