"""Summaries read off the rows of a run: the corruption scores and the robustness card.

Pure functions of [BenchmarkResults][segrobust.benchmark.BenchmarkResults]:
nothing is recomputed, and a condition that was not run is reported as not
run (``None``), never estimated.
"""

from __future__ import annotations

import math
from statistics import mean
from typing import TYPE_CHECKING, Any, Optional

from segrobust.benchmark.functional import format_eps, reliable_setting

if TYPE_CHECKING:  # annotations only: results imports this module to summarise itself
    from segrobust.benchmark.results import BenchmarkResults, ConditionResult

__all__ = ["corruption_summary", "robustness_card"]


def _clean_miou(results: BenchmarkResults) -> Optional[float]:
    return next((row.miou for row in results.rows if row.kind == "clean"), None)


def _ratio(value: Optional[float], clean: Optional[float]) -> Optional[float]:
    return None if value is None or not clean else value / clean


def _rain_family(results: BenchmarkResults) -> dict[int, ConditionResult]:
    """Rain rows of the rain family's presets, by the severity each preset stands for."""
    from segrobust.corruptions import RAIN_SEVERITY_PRESETS

    rows = {row.key: row for row in results.rows if row.kind == "rain"}
    return {
        s: rows[f"rain:{preset}"] for s, preset in enumerate(RAIN_SEVERITY_PRESETS, start=1) if f"rain:{preset}" in rows
    }


def corruption_summary(results: BenchmarkResults) -> dict[str, Any]:
    """Corruption scores: the mean over the ImageNet-C corruptions run, its ratio to clean, per family and per corruption.

    ``mean_miou`` is the mean over every ImageNet-C (corruption, severity) row
    (the usual corruption score, here in mIoU); ``relative_robustness`` is
    ``mean_miou / clean mIoU``. ``families`` holds, per family run, the mean
    and the mean per severity; ``worst_family`` the family with the lowest
    mean. ``rain`` holds the rain family (its presets, by severity): it is
    reported beside the ImageNet-C score, not averaged into it. Values are
    ``None`` when nothing was run.

    Examples:
        >>> from segrobust.benchmark.results import BenchmarkResults, ConditionResult
        >>> def row(key, kind, miou, severity=None):
        ...     return ConditionResult(key, key, kind, None, miou, 0.0, 0.0, [], 0, [], [], severity=severity)
        >>> results = BenchmarkResults([row("clean", "clean", 0.6), row("corruption:fog", "corruption", 0.3, 1),
        ...                             row("corruption:contrast", "corruption", 0.45, 1)], [], 1)
        >>> summary = corruption_summary(results)
        >>> round(summary["mean_miou"], 3), round(summary["relative_robustness"], 3), summary["worst_family"]
        (0.375, 0.625, 'weather')
    """
    from segrobust.corruptions import CORRUPTIONS, FAMILIES, IMAGENET_C

    clean = _clean_miou(results)
    rows = [row for row in results.rows if row.kind == "corruption" and row.key.split(":", 1)[1] in IMAGENET_C]
    per_corruption: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row.key.split(":", 1)[1]
        entry = per_corruption.setdefault(
            name, {"name": row.name, "family": CORRUPTIONS[name].family, "by_severity": {}}
        )
        entry["by_severity"][int(row.severity)] = row.miou
    for entry in per_corruption.values():
        entry["mean"] = mean(entry["by_severity"].values())
    families: dict[str, dict[str, Any]] = {}
    for family in FAMILIES:
        members = [row for row in rows if CORRUPTIONS[row.key.split(":", 1)[1]].family == family]
        if members:
            levels = sorted({int(row.severity) for row in members})
            families[family] = {
                "mean": mean(row.miou for row in members),
                "by_severity": {s: mean(row.miou for row in members if row.severity == s) for s in levels},
            }
    rain = _rain_family(results)
    overall = mean(row.miou for row in rows) if rows else None
    return {
        "clean": clean,
        "mean_miou": overall,
        "relative_robustness": _ratio(overall, clean),
        "severities": sorted({int(row.severity) for row in rows}),
        "families": families,
        "worst_family": min(families, key=lambda f: families[f]["mean"]) if families else None,
        "corruptions": per_corruption,
        "rain": {
            "by_severity": {s: row.miou for s, row in rain.items()},
            "presets": {s: row.key.split(":", 1)[1] for s, row in rain.items()},
            "mean": mean(row.miou for row in rain.values()) if rain else None,
        },
    }


def _entry(label: str, value: Optional[float], clean: Optional[float], detail: str) -> dict[str, Any]:
    return {
        "label": label,
        "miou": value,
        "relative": _ratio(value, clean),
        "detail": detail if value is not None or detail else "not run",
    }


def _rain_entry(results: BenchmarkResults, clean: Optional[float]) -> dict[str, Any]:
    rain = [row for row in results.rows if row.kind == "rain"]
    if not rain:
        return _entry("Rain", None, clean, "not run")
    hardest = min(rain, key=lambda row: row.miou)
    names = ", ".join(row.key.split(":", 1)[1] for row in rain)
    detail = f"mean of {names}; hardest: {hardest.key.split(':', 1)[1]} {100 * hardest.miou:.1f} %"
    return _entry("Rain", mean(row.miou for row in rain), clean, detail)


def _adversarial_entries(results: BenchmarkResults, clean: Optional[float]) -> list[dict[str, Any]]:
    reliable = [row for row in results.rows if row.key == "reliable" and row.eps is not None]
    if reliable:
        detail = f"reliable evaluation, {reliable_setting(results.config)}, greedy worst case"
        return [_entry(f"Adversarial ε={format_eps(row.eps)}", row.miou, clean, detail) for row in reliable]
    worst = [row for row in results.rows if row.kind == "worst" and row.eps is not None]
    detail = "not run"
    if worst:
        strongest = max(worst, key=lambda row: row.eps)
        detail = (
            f"not run (short attacks' worst case at ε={format_eps(strongest.eps)}: {100 * strongest.miou:.1f} %, "
            "an upper bound, not a robustness number)"
        )
    return [_entry("Adversarial (reliable)", None, clean, detail)]


def robustness_card(results: BenchmarkResults) -> list[dict[str, Any]]:
    """Entries of the robustness card: clean, corruptions (mean and worst family), rain, reliable adversarial per ε.

    Each entry has ``label``, ``miou`` (``None`` when the condition was not
    run), ``relative`` (``miou / clean``) and ``detail`` (what the number is,
    or ``"not run"``). The adversarial number is only ever the reliable
    ensemble's: the short attacks give upper bounds, named in ``detail``.

    Examples:
        >>> from segrobust.benchmark.results import BenchmarkResults, ConditionResult
        >>> clean = ConditionResult("clean", "Clean", "clean", None, 0.6, 0.9, 0.7, [], 0, [], [])
        >>> [(e["label"], e["miou"], e["detail"]) for e in robustness_card(BenchmarkResults([clean], [], 1))][1:3]
        [('Corruptions (mean)', None, 'not run'), ('Corruptions (worst family)', None, 'not run')]
    """
    clean = _clean_miou(results)
    summary = corruption_summary(results)
    entries = [_entry("Clean", clean, clean, "no perturbation")]
    if summary["mean_miou"] is None:
        entries += [
            _entry("Corruptions (mean)", None, clean, ""),
            _entry("Corruptions (worst family)", None, clean, ""),
        ]
    else:
        levels = ",".join(str(s) for s in summary["severities"])
        count = len(summary["corruptions"])
        entries.append(
            _entry(
                "Corruptions (mean)",
                summary["mean_miou"],
                clean,
                f"{count} ImageNet-C corruptions × severities {levels}",
            )
        )
        worst = summary["worst_family"]
        entries.append(
            _entry(
                "Corruptions (worst family)",
                summary["families"][worst]["mean"],
                clean,
                f"{worst}: mean over its corruptions and severities",
            )
        )
    entries.append(_rain_entry(results, clean))
    entries += _adversarial_entries(results, clean)
    for entry in entries:
        if entry["miou"] is not None and math.isnan(entry["miou"]):
            entry["miou"] = None
    return entries
