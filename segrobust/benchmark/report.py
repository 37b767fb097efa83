"""The files of a benchmark run: ``results.json``, ``report.md`` and the figures."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from segrobust.benchmark.functional import format_eps, reliable_setting
from segrobust.benchmark.plots import (
    plot_convergence,
    plot_corruption_examples,
    plot_corruptions,
    plot_examples,
    plot_miou_vs_eps,
    plot_rain_examples,
    plot_robustness_card,
)
from segrobust.benchmark.storage import REPORT_FILES, OutputFolder
from segrobust.fileio import atomic_write_text

if TYPE_CHECKING:  # annotations only: results.py imports this module to save itself
    from segrobust.benchmark.results import BenchmarkResults

__all__ = ["render_markdown", "write_report"]


def _pct(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def render_markdown(results: BenchmarkResults, figures: Union[dict[str, str], None] = None) -> str:
    """``report.md``: settings, the robustness card, robustness under the reliable evaluation, corruptions,
    the summary table, the worst case, the gradient-masking checks, figures, per-class IoU, versions."""
    figures = figures or {}
    lines = ["# segrobust robustness report", "", *_settings_section(results), ""]
    lines += _card_section(results, figures)
    lines += [*_reliable_section(results), *_corruption_section(results)]
    lines += ["## Summary", "", results.table("markdown"), ""]
    lines += _worst_case_section(results)
    lines += _masking_section(results)
    lines += _figures_section(figures)
    lines += _per_class_section(results)
    lines += _throughput_and_versions_section(results)
    return "\n".join(lines)


def _settings_section(results: BenchmarkResults) -> list[str]:
    """One bullet per setting of the run."""
    config = results.config
    described = [
        ("Model", config.get("model_name")),
        ("Defence", config.get("defense")),
        (
            "Data",
            f"{config.get('dataset_name', 'data')}: {results.num_images} images of {'×'.join(map(str, config.get('image_size', [])))} px",
        ),
        (
            "Attacks",
            f"{', '.join(config.get('attacks', [])) or 'none'}; ε ∈ {{{', '.join(format_eps(e) for e in config.get('eps', []))}}}, "
            f"{config.get('steps')} steps, α = {'2.5·ε/steps' if config.get('alpha') is None else config.get('alpha')}, "
            f"random start: {config.get('random_start')}"
            + (
                f"; reliable evaluation: {reliable_setting(config)}"
                if config.get("reliable_members") or config.get("reliable_steps")
                else ""
            ),
        ),
        ("Rain presets", ", ".join(config.get("rain", [])) or "none"),
        (
            "Corruptions",
            f"{', '.join(config['corruptions'])}; severities {', '.join(map(str, config.get('severities', [])))}"
            if config.get("corruptions")
            else None,
        ),
        ("Seed", config.get("seed")),
        ("Processes", f"{config.get('world_size', 1)} on {config.get('device', '?')}"),
    ]
    return [f"- **{name}**: {value}" for name, value in described if value not in (None, "")]


def _card_section(results: BenchmarkResults, figures: dict[str, str]) -> list[str]:
    """The robustness card: one line per entry, with what the number is; a condition not run says so."""
    lines = ["## Robustness card", "", "| Condition | mIoU % | Share of clean | What it is |", "|---|---:|---:|---|"]
    for entry in results.robustness_card():
        share = "–" if entry["relative"] is None else f"{100 * entry['relative']:.0f} %"
        lines.append(f"| {entry['label']} | {_pct(entry['miou'])} | {share} | {entry['detail']} |")
    lines.append("")
    if "robustness_card" in figures:
        lines += [f"![Robustness card]({figures['robustness_card']})", ""]
    return lines


def _corruption_section(results: BenchmarkResults) -> list[str]:
    """Mean corruption mIoU and its ratio to clean, per family and per corruption × severity."""
    summary = results.corruption_summary()
    if not summary["corruptions"]:
        return []
    levels = summary["severities"]
    relative = summary["relative_robustness"]
    lines = [
        "## Corruptions",
        "",
        f"Mean corruption mIoU over {len(summary['corruptions'])} ImageNet-C corruptions × severities "
        f"{', '.join(map(str, levels))}: {_pct(summary['mean_miou'])} % (clean {_pct(summary['clean'])} %); relative "
        f"robustness (mean / clean) {'–' if relative is None else format(relative, '.3f')}. "
        f"Worst family: {summary['worst_family']}. Rain is reported beside it, not averaged in.",
        "",
        "| Corruption | Family | " + " | ".join(f"s{s}" for s in levels) + " | Mean |",
        "|---|---|" + "---:|" * (len(levels) + 1),
    ]
    for entry in summary["corruptions"].values():
        cells = [_pct(entry["by_severity"].get(s, math.nan)) for s in levels]
        lines.append(f"| {entry['name']} | {entry['family']} | " + " | ".join(cells) + f" | {_pct(entry['mean'])} |")
    for family, data in summary["families"].items():
        cells = [_pct(data["by_severity"].get(s, math.nan)) for s in levels]
        lines.append(f"| **{family}** (mean) | | " + " | ".join(cells) + f" | {_pct(data['mean'])} |")
    rain = summary["rain"]
    if rain["by_severity"]:
        cells = [_pct(rain["by_severity"].get(s, math.nan)) for s in levels]
        lines.append("| **rain** (presets) | rain | " + " | ".join(cells) + f" | {_pct(rain['mean'])} |")
    lines += ["", "mIoU in %; rain's severities 1–3 are its presets light, medium and heavy.", ""]
    return lines


def _worst_case_section(results: BenchmarkResults) -> list[str]:
    """The per-image worst case at the largest ε, and what AMA's row means."""
    clean = results.clean
    lines: list[str] = []
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
    return lines


def _figures_section(figures: dict[str, str]) -> list[str]:
    """The figures written next to the report, each with what it shows."""
    lines: list[str] = []
    for title, key in (
        ("mIoU against ε", "miou_vs_eps"),
        ("Convergence of the reliable ensemble", "convergence"),
        ("Adversarial examples", "examples"),
        ("Rain examples", "rain_examples"),
        ("mIoU per corruption family and severity", "corruptions"),
        ("Corruption examples", "corruption_examples"),
    ):
        if key in figures:
            lines += [f"## {title}", "", f"![{title}]({figures[key]})", ""]
    if "convergence" in figures:
        lines.insert(
            lines.index(f"![Convergence of the reliable ensemble]({figures['convergence']})") + 1,
            "\nMean pixel accuracy against iteration for each loss of the reliable ensemble, one panel per ε (over "
            "the images each loss attacked). The shaded iterations run at a radius above ε (SEA's schedule); a curve "
            "still falling at the last iteration means more iterations (`--reliable-steps`) would lower it further.",
        )
    if "examples" in figures:
        lines.insert(
            lines.index(f"![Adversarial examples]({figures['examples']})") + 1,
            "\nColumns: image, its prediction, the adversarial image of the strongest attack for that image at the "
            "largest ε, the perturbation scaled so ±ε spans black to white, the prediction on it, the ground truth.",
        )
    return lines


def _per_class_section(results: BenchmarkResults) -> list[str]:
    """Per-class IoU for clean, the hardest rain, the reliable ensemble and the worst case at the largest ε."""
    clean = results.clean
    worst = [row for row in results.rows if row.kind == "worst"]
    rain = sorted((row for row in results.rows if row.kind == "rain"), key=lambda row: row.miou)
    reliable = [row for row in results.rows if row.key == "reliable"]
    chosen = [clean, *rain[:1], *reliable[-1:], *worst[-1:]]  # clean, the hardest rain, the largest ε
    lines = [
        "## Per-class IoU (%)",
        "",
        "| Class | " + " | ".join(row.label for row in chosen) + " |",
        "|---|" + "---:|" * len(chosen),
    ]
    for c, name in enumerate(results.class_names):
        lines.append(f"| {name} | " + " | ".join(_pct(row.iou[c]) for row in chosen) + " |")
    return lines


def _throughput_and_versions_section(results: BenchmarkResults) -> list[str]:
    """Throughput, the full configuration and the package versions."""
    config = results.config
    lines: list[str] = []
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
    lines += [
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
    lines += ["## Versions", "", "| Package | Version |", "|---|---|"]
    lines += [f"| {name} | {version} |" for name, version in results.versions.items()]
    lines += ["", "Every number is in `results.json`.", ""]
    return lines


def _reliable_section(results: BenchmarkResults) -> list[str]:
    """Robustness stated under the reliable evaluation, the short attacks beside it (or why the numbers are upper bounds)."""
    headline = results.headline()
    if not headline:
        return []
    lines = ["## Robustness (reliable evaluation)", ""]
    reliable = [row for row in results.rows if row.key == "reliable"]
    if not reliable:
        return [*lines, headline, ""]
    lines += [
        "| ε | mIoU % (greedy worst case) | Pixel acc. % | Passes / image | All attacks, per-image worst case: mIoU % |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in reliable:
        worst = [w for w in results.rows if w.kind == "worst" and w.eps is not None and abs(w.eps - row.eps) < 1e-9]
        passes = (row.ensemble or {}).get("mean_passes_per_image")
        lines.append(
            f"| {format_eps(row.eps)} | {_pct(row.miou)} | {_pct(row.pixel_accuracy)} | "
            f"{'–' if passes is None else f'{passes:.0f}'} | {_pct(worst[0].miou) if worst else '–'} |"
        )
    lines += [
        "",
        f"The reliable evaluation ({reliable_setting(results.config)}) runs its members one after another "
        f"({'; '.join(results.config.get('reliable_members') or (reliable[0].ensemble or {}).get('members', []))}); "
        "each image keeps the member result with the "
        "lowest pixel accuracy (the pixel accuracy above), and the mIoU is the greedy worst case over the whole set: "
        "images in order, each taking the member result that makes the running mIoU lowest. Its rows "
        "(`Reliable · <member>`) give each member alone; passes are forward plus backward passes of the model per "
        "image, all members together. The short attacks are reported beside it; the per-image 'Worst case' row takes "
        "the reliable ensemble's image as one candidate among them.",
        "",
    ]
    return lines


def _image_list(indices: list, limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f", … ({len(indices)} in all)" if len(indices) > limit else "")


def _masking_section(results: BenchmarkResults) -> list[str]:
    """Counts and images of the gradient-masking flags and of the ε-monotonicity violations."""
    checks = results.checks or {}
    flags, monotonicity = checks.get("apgd_flags", []), checks.get("eps_monotonicity", {})
    if not flags and not monotonicity:
        return []
    lines = ["## Gradient-masking checks", ""]
    if flags:
        lines += [
            "Per APGD member of the reliable ensemble (image indices in data-set order): a loss that never rose, an "
            "all-zero input gradient, a NaN or infinite gradient. Any of them means the attack could not search "
            "that image, and its number there is no robustness measurement.",
            "",
            "| ε | Loss | Attacked | Loss never rose | Zero gradient | Non-finite gradient |",
            "|---|---|---:|---|---|---|",
        ]
        for entry in flags:
            cells = [
                f"{len(entry[flag])}" + (f" ({_image_list(entry[flag])})" if entry[flag] else "")
                for flag in ("loss_never_rose", "zero_gradient", "nonfinite_gradient")
            ]
            lines.append(
                f"| {format_eps(entry['eps'])} | {entry['member']} | {entry.get('images_attacked')} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    if monotonicity:
        lines += [
            "ε monotonicity: a larger ε allows every perturbation of a smaller one, so a higher accuracy at a larger "
            "ε means the attack fell short there (too few iterations, or masked gradients).",
            "",
            "| Attack | Whole set: ε pairs where accuracy or mIoU rose | Images whose accuracy rose |",
            "|---|---|---|",
        ]
        for entry in monotonicity.values():
            overall = ", ".join(f"{a}→{b}" for a, b in (item["eps"] for item in entry["overall"])) or "none"
            images = sorted(entry["images"], key=int)
            lines.append(
                f"| {entry['name']} | {overall} | {len(images)}"
                + (f" ({_image_list(images)})" if images else "")
                + " |"
            )
        lines.append("")
    return lines


def write_report(results: BenchmarkResults, out_dir: Union[str, os.PathLike]) -> dict[str, Path]:
    """Write ``results.json``, ``miou_vs_eps.png``, ``robustness_card.png``, ``examples.png`` (and ``convergence.png``,
    ``rain_examples.png``, ``corruptions.png``, ``corruption_examples.png``), ``report.md``.

    Files of these names that segrobust did not write (or that were changed
    since) are never overwritten: the call raises
    [OutputFolderError][segrobust.benchmark.OutputFolderError] before writing
    anything. The files written are recorded (name and SHA-256) in
    ``out_dir/.segrobust-benchmark.json``. Returns the paths written, by kind, in the order of ``REPORT_FILES``.
    """
    folder = OutputFolder(out_dir)
    folder.check_files(REPORT_FILES)
    out = folder.path
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    try:
        written["results"] = results.save_json(out / "results.json")
        _write_figures_and_markdown(results, out, written)
    finally:
        folder.record(written.values())
    order = {name: index for index, name in enumerate(REPORT_FILES)}
    return dict(sorted(written.items(), key=lambda item: order.get(item[1].name, len(order))))


def _write_figures_and_markdown(results: BenchmarkResults, out: Path, written: dict[str, Path]) -> None:
    figures: dict[str, str] = {}
    for key, plot in (
        ("miou_vs_eps", plot_miou_vs_eps),
        ("convergence", plot_convergence),
        ("examples", plot_examples),
        ("rain_examples", plot_rain_examples),
        ("corruptions", plot_corruptions),
        ("corruption_examples", plot_corruption_examples),
        ("robustness_card", plot_robustness_card),
    ):
        target = out / f"{key}.png"
        path = plot(results, target)
        if path is not None:
            written[key] = path
            figures[key] = path.name
    written["report"] = atomic_write_text(out / "report.md", render_markdown(results, figures))
