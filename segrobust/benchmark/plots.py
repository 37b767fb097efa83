"""Figures of a benchmark run: mIoU against ε, corruptions, the robustness card, examples (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch

from segrobust.benchmark.functional import amplify_perturbation, format_eps
from segrobust.benchmark.registry import ATTACKS
from segrobust.fileio import atomic_write

if TYPE_CHECKING:  # annotations only: results.py imports this module to save itself
    from segrobust.benchmark.results import BenchmarkResults

__all__ = [
    "class_palette",
    "plot_convergence",
    "plot_corruption_examples",
    "plot_corruptions",
    "plot_examples",
    "plot_miou_vs_eps",
    "plot_rain_examples",
    "plot_robustness_card",
]

_ATTACK_STYLE = {
    "naa": ("#1f77b4", "o"),
    "segpgd": ("#ff7f0e", "s"),
    "cospgd": ("#9467bd", "^"),
    "eroseg": ("#d62728", "D"),
    "rain_attack": ("#17becf", "v"),
    "ama": ("#2ca02c", "P"),
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def class_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """CamVid's colours for 11 classes, else matplotlib's ``tab20`` colours.

    Examples:
        >>> class_palette(11)[3]
        (128, 64, 128)
    """
    if num_classes == 11:
        from segrobust.datasets.functional import CAMVID_COLORS

        return [tuple(c) for c in CAMVID_COLORS]
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return [tuple(int(255 * v) for v in cmap(i % 20)[:3]) for i in range(num_classes)]


def _colour(mask: torch.Tensor, palette: list[tuple[int, int, int]], ignore_index: int) -> np.ndarray:
    from segrobust.datasets.functional import colorize

    return colorize(mask.cpu(), palette=palette, ignore_index=ignore_index).numpy()


def _rgb(image: torch.Tensor) -> np.ndarray:
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def plot_miou_vs_eps(results: BenchmarkResults, path: Union[str, os.PathLike]) -> Path:
    """mIoU against ε per attack (worst case in black), and clean/rain mIoU as bars.

    Examples:
        >>> plot_miou_vs_eps(results, "miou_vs_eps.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    rain_rows = [row for row in results.rows if row.kind in ("clean", "rain")]
    attack_rows = [row for row in results.rows if row.eps is not None and row.kind != "member"]
    has_bars = len(rain_rows) > 1 or not attack_rows
    fig, axes = plt.subplots(
        1,
        2 if has_bars and attack_rows else 1,
        figsize=(11.5 if has_bars and attack_rows else 6.5, 4.2),
        gridspec_kw={"width_ratios": [1.6, 1]} if has_bars and attack_rows else None,
        squeeze=False,
    )
    axes = list(axes[0])
    clean = results.clean.miou * 100
    if attack_rows:
        ax = axes[0]
        keys = list(dict.fromkeys(row.key for row in attack_rows))
        for key in keys:
            rows = sorted((row for row in attack_rows if row.key == key), key=lambda r: r.eps)
            # at ε = 0 an L∞ attack leaves the clean image; RainAttack still rains, so it gets no such anchor
            entry = ATTACKS.get(key)
            anchored = entry is None or entry.in_worst_case or entry.positive
            xs = ([0.0] if anchored else []) + [row.eps * 255 for row in rows]
            ys = ([clean] if anchored else []) + [row.miou * 100 for row in rows]
            name = rows[0].name
            if key == "worst":
                ax.plot(
                    xs, ys, color="black", linestyle="--", linewidth=2.4, marker="X", markersize=8, label=name, zorder=5
                )
            else:
                colour, marker = _ATTACK_STYLE.get(key, (None, "o"))
                style = ":" if rows[0].kind == "positive" else "-"
                ax.plot(xs, ys, color=colour, marker=marker, linestyle=style, linewidth=1.8, label=name)
        ax.axhline(clean, color="grey", linewidth=1, linestyle="-.", label=f"Clean ({clean:.1f})")
        ax.set_xlabel("ε (L∞ budget, in grey levels /255)")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(f"mIoU under attack ({results.config.get('steps', '?')} steps)")
        eps_ticks = [0.0] + [eps * 255 for eps in results.eps_list]
        ax.set_xticks(eps_ticks)
        ax.set_xticklabels(["0"] + [format_eps(eps).replace("/255", "") for eps in results.eps_list])
        top = max(row.miou * 100 for row in results.rows)
        ax.set_ylim(0, min(100.0, top * 1.12 + 2))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if has_bars:
        ax = axes[-1]
        names = [row.name for row in rain_rows]
        values = [row.miou * 100 for row in rain_rows]
        colours = ["#555555"] + ["#4a90d9"] * (len(rain_rows) - 1)
        bars = ax.barh(range(len(rain_rows)), values, color=colours)
        ax.set_yticks(range(len(rain_rows)))
        ax.set_yticklabels(names)
        ax.invert_yaxis()
        ax.set_xlabel("mIoU (%)")
        ax.set_title("Clean and rain")
        ax.set_xlim(0, max(values) * 1.18 + 1)
        for bar, value in zip(bars, values):
            ax.text(bar.get_width() + 0.5, bar.get_y() + bar.get_height() / 2, f"{value:.1f}", va="center", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    model = results.config.get("model_name")
    data = results.config.get("dataset_name")
    if model or data:
        fig.suptitle(f"{model or 'model'} on {data or 'data'} ({results.num_images} images)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_convergence(results: BenchmarkResults, path: Union[str, os.PathLike]) -> Optional[Path]:
    """Mean pixel accuracy against iteration of each loss of the reliable ensemble, one panel per ε.

    The mean runs over the images each member attacked (early stop skips images
    already at 0 %); the shaded part of the run is at a radius larger than ε
    (SEA's schedule), so only iterates right of it can be returned. ``None``
    (nothing written) without a reliable ensemble in ``results``.

    Examples:
        >>> plot_convergence(results, "convergence.png")  # doctest: +SKIP
    """
    rows = [row for row in results.rows if row.key == "reliable" and row.ensemble and row.ensemble.get("convergence")]
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows) + 0.8, 3.6), squeeze=False, sharey=True)
    for ax, row in zip(axes[0], rows):
        curves = row.ensemble["convergence"]
        start = row.ensemble.get("radius_eps_from_iteration") or 0
        if start:
            ax.axvspan(0, start, color="#dddddd", alpha=0.6, linewidth=0, label="radius > ε")
        for name, curve in curves.items():
            ys = [np.nan if v is None else 100 * v for v in curve]
            ax.plot(range(len(ys)), ys, linewidth=1.8, label=name)
        ax.set_title(f"ε = {format_eps(row.eps)}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("pixel accuracy (%)")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle("Reliable ensemble: convergence of each loss (mean over the images it attacked)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)
    return path


def _legend(fig: Any, class_names: list[str], palette: list[tuple[int, int, int]]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=np.array(colour) / 255, label=name) for name, colour in zip(class_names, palette)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)


def _legend_height(fig: Any) -> float:
    """Fraction of the figure's height the two-row class legend needs (about 0.55 inch)."""
    return min(0.25, 0.55 / fig.get_size_inches()[1])


def plot_examples(
    results: BenchmarkResults, path: Union[str, os.PathLike], ignore_index: Optional[int] = None
) -> Optional[Path]:
    """Per example: image, clean prediction, adversarial image, amplified perturbation, adversarial prediction, ground truth.

    The adversarial image is, for each example, the attack with the lowest
    pixel accuracy at the largest ε. The perturbation is shown as
    ``0.5 + δ / (2ε)`` (grey: unchanged). Returns ``None`` without examples.
    """
    examples = results.examples or {}
    adversarial = examples.get("adversarial")
    if not examples or adversarial is None:
        return None
    plt = _pyplot()
    ignore_index = results.config.get("ignore_index", 255) if ignore_index is None else ignore_index
    palette = class_palette(len(results.class_names))
    eps = adversarial["eps"]
    k = examples["image"].shape[0]
    columns = [
        "Image",
        "Clean prediction",
        "Adversarial",
        f"Perturbation (±{format_eps(eps)} → 0..1)",
        "Adversarial prediction",
        "Ground truth",
    ]
    height, width = examples["image"].shape[-2:]
    cell = 2.3
    fig, axes = plt.subplots(
        k, len(columns), figsize=(cell * len(columns), cell * k * height / width + 1.0), squeeze=False
    )
    for i in range(k):
        image = examples["image"][i]
        adv = adversarial["image"][i]
        panels = [
            _rgb(image),
            _colour(examples["clean_pred"][i], palette, ignore_index),
            _rgb(adv),
            _rgb(amplify_perturbation(adv, image, eps)),
            _colour(adversarial["pred"][i], palette, ignore_index),
            _colour(examples["mask"][i], palette, ignore_index),
        ]
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
        axes[i][2].set_xlabel(f"{adversarial['attack'][i]} ε={format_eps(eps)}", fontsize=8)
    _legend(fig, results.class_names, palette)
    fig.tight_layout(rect=(0, _legend_height(fig), 1, 1))
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_rain_examples(
    results: BenchmarkResults, path: Union[str, os.PathLike], ignore_index: Optional[int] = None
) -> Optional[Path]:
    """Per example two rows: the clean and rainy images, then their predictions. ``None`` without rain."""
    examples = results.examples or {}
    rain = examples.get("rain") or {}
    if not rain:
        return None
    plt = _pyplot()
    ignore_index = results.config.get("ignore_index", 255) if ignore_index is None else ignore_index
    palette = class_palette(len(results.class_names))
    k = examples["image"].shape[0]
    names = ["Clean", *rain]
    height, width = examples["image"].shape[-2:]
    cell = 2.3
    fig, axes = plt.subplots(
        2 * k, len(names), figsize=(cell * len(names), 2 * cell * k * height / width + 1.0), squeeze=False
    )
    for i in range(k):
        images = [examples["image"][i]] + [rain[name]["image"][i] for name in rain]
        preds = [examples["clean_pred"][i]] + [rain[name]["pred"][i] for name in rain]
        for j in range(len(names)):
            axes[2 * i][j].imshow(_rgb(images[j]))
            axes[2 * i + 1][j].imshow(_colour(preds[j], palette, ignore_index), interpolation="nearest")
            for ax in (axes[2 * i][j], axes[2 * i + 1][j]):
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                axes[0][j].set_title(names[j], fontsize=9)
        axes[2 * i][0].set_ylabel("image", fontsize=8)
        axes[2 * i + 1][0].set_ylabel("prediction", fontsize=8)
    _legend(fig, results.class_names, palette)
    fig.tight_layout(rect=(0, _legend_height(fig), 1, 1))
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)
    return path


def _save(fig: Any, path: Union[str, os.PathLike], dpi: int = 110) -> Path:
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=dpi, format="png"))
    plt.close(fig)
    return path


def plot_corruptions(results: BenchmarkResults, path: Union[str, os.PathLike]) -> Optional[Path]:
    """mIoU per corruption family against severity (left) and per corruption × severity (right, a heat map).

    Each family's line is the mean over its corruptions; the rain family is
    drawn at the severities of its presets (light 1, medium 2, heavy 3).
    ``None`` (nothing written) when neither a corruption nor a rain preset was run.

    Examples:
        >>> plot_corruptions(results, "corruptions.png")  # doctest: +SKIP
    """
    summary = results.corruption_summary()
    if not summary["corruptions"] and not summary["rain"]["by_severity"]:
        return None
    plt = _pyplot()
    names = list(summary["corruptions"])
    fig, axes = plt.subplots(
        1,
        2 if names else 1,
        figsize=(12.5 if names else 6.0, 4.6),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.25]} if names else None,
    )
    ax = axes[0][0]
    colours = {"noise": "#1f77b4", "blur": "#ff7f0e", "weather": "#2ca02c", "digital": "#9467bd", "rain": "#17becf"}
    lines = {family: data["by_severity"] for family, data in summary["families"].items()}
    if summary["rain"]["by_severity"]:
        lines["rain"] = summary["rain"]["by_severity"]
    for family, by_severity in lines.items():
        xs = sorted(by_severity)
        ax.plot(
            xs,
            [100 * by_severity[s] for s in xs],
            marker="o",
            linewidth=1.8,
            color=colours.get(family),
            linestyle="--" if family == "rain" else "-",
            label=family,
        )
    if summary["clean"] is not None:
        ax.axhline(
            100 * summary["clean"],
            color="grey",
            linestyle="-.",
            linewidth=1,
            label=f"clean ({100 * summary['clean']:.1f})",
        )
    ax.set_xticks([1, 2, 3, 4, 5])
    ax.set_xlabel("severity")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100 * max([summary["clean"] or 0] + [v for d in lines.values() for v in d.values()]) * 1.12 + 2)
    ax.set_title("mIoU per corruption family")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    if names:
        ax = axes[0][1]
        levels = summary["severities"]
        grid = np.array(
            [[100 * summary["corruptions"][n]["by_severity"].get(s, np.nan) for s in levels] for n in names]
        )
        image = ax.imshow(
            grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(100 * (summary["clean"] or 0), np.nanmax(grid))
        )
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([str(s) for s in levels])
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([summary["corruptions"][n]["name"] for n in names], fontsize=8)
        for i in range(len(names)):
            for j in range(len(levels)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7, color="white")
        ax.set_xlabel("severity")
        ax.set_title("mIoU (%) per corruption")
        fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)


def plot_corruption_examples(results: BenchmarkResults, path: Union[str, os.PathLike]) -> Optional[Path]:
    """The first example image under each corruption at the largest severity, with the model's prediction below it.

    ``None`` without corruption examples.
    """
    examples = results.examples or {}
    corrupted = examples.get("corruption") or {}
    if not corrupted:
        return None
    plt = _pyplot()
    ignore_index = results.config.get("ignore_index", 255)
    palette = class_palette(len(results.class_names))
    panels = [("Clean", examples["image"][0], examples["clean_pred"][0])]
    panels += [(name, data["image"][0], data["pred"][0]) for name, data in corrupted.items()]
    columns = min(6, len(panels))
    rows = -(-len(panels) // columns)
    height, width = examples["image"].shape[-2:]
    cell = 2.1
    fig, axes = plt.subplots(
        2 * rows, columns, figsize=(cell * columns, 2 * cell * rows * height / width + 0.9), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (name, image, pred) in enumerate(panels):
        r, c = divmod(k, columns)
        axes[2 * r][c].imshow(_rgb(image))
        axes[2 * r][c].set_title(name, fontsize=7)
        axes[2 * r + 1][c].imshow(_colour(pred, palette, ignore_index), interpolation="nearest")
    _legend(fig, results.class_names, palette)
    fig.tight_layout(rect=(0, _legend_height(fig), 1, 1))
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, dpi=110, format="png"))
    plt.close(fig)
    return path


def plot_robustness_card(results: BenchmarkResults, path: Union[str, os.PathLike]) -> Path:
    """The robustness card as a figure: one bar per entry of `robustness_card`, conditions not run marked as such.

    Clean, corruptions (mean and worst family), rain and the reliable
    adversarial mIoU per ε, side by side, with each number's share of the
    clean mIoU; sized to paste into a paper (300 dpi).

    Examples:
        >>> plot_robustness_card(results, "robustness_card.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    entries = results.robustness_card()
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(entries) + 1.3))
    colours = {"Clean": "#555555", "Rain": "#17becf"}
    top = max([100 * e["miou"] for e in entries if e["miou"] is not None] + [1.0])
    for i, entry in enumerate(entries):
        label = entry["label"]
        colour = colours.get(label, "#d62728" if label.startswith("Adversarial") else "#2ca02c")
        if entry["miou"] is None:
            ax.barh(i, top, color="none", edgecolor="#bbbbbb", hatch="///", linewidth=0.8)
            ax.text(top * 0.02, i, "not run", va="center", fontsize=9, color="#777777")
            continue
        value = 100 * entry["miou"]
        ax.barh(i, value, color=colour)
        share = "" if entry["relative"] is None or label == "Clean" else f"  ({100 * entry['relative']:.0f} % of clean)"
        ax.text(value + top * 0.01, i, f"{value:.1f}{share}", va="center", fontsize=9)
    ax.set_yticks(range(len(entries)))
    ax.set_yticklabels([e["label"] for e in entries], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.45)
    ax.set_xlabel("mIoU (%)")
    model, data = results.config.get("model_name"), results.config.get("dataset_name")
    title = "Robustness card" + (f": {model or 'model'} on {data or 'data'}" if model or data else "")
    ax.set_title(f"{title} ({results.num_images} images)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path, dpi=300)
