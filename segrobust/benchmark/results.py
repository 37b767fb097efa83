"""The benchmark's result objects: one row per condition, tables, and a JSON round trip."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from segrobust.benchmark.functional import SMOKE_TEST_PRESET, format_eps, reliable_setting

__all__ = ["MASKING_FLAGS", "RESULTS_FORMAT", "BenchmarkResults", "ConditionResult"]

#: ``format`` tag of ``results.json``.
RESULTS_FORMAT = "segrobust.benchmark/1"
#: The per-image gradient-masking flags of the reliable ensemble's APGD members (``checks["apgd_flags"]``).
MASKING_FLAGS = ("loss_never_rose", "zero_gradient", "nonfinite_gradient")


@dataclass
class ConditionResult:
    """Scores of one condition (clean, a rain preset, a corruption at one severity, an attack or the worst case at one ε).

    ``kind`` is ``"clean"``, ``"rain"``, ``"corruption"`` (``severity`` says which level), ``"attack"``, ``"positive"`` (AMA:
    it helps the model), ``"member"`` (one loss of the reliable ensemble) or
    ``"worst"`` (per image, the attack with the lowest pixel accuracy). ``confusion_matrix`` is summed over the whole set (rows:
    true class); ``per_image_pixel_accuracy`` follows the data set's order.
    ``worst_attack`` (worst-case rows only) names the attack chosen per image.
    ``seconds`` and ``images_per_second`` time the batches computed in this
    run (``None`` when every batch came from a resumed run).
    ``ensemble`` (reliable ensemble and member rows only): the greedy choice,
    passes per image, convergence curves, gradient-masking flags (see
    the "Reliable evaluation" section of the benchmark guide).
    """

    key: str
    name: str
    kind: str
    eps: Optional[float]
    miou: float
    pixel_accuracy: float
    mean_class_accuracy: float
    iou: list[float]
    num_pixels: int
    confusion_matrix: list[list[int]]
    per_image_pixel_accuracy: list[float]
    worst_attack: Optional[list[str]] = None
    seconds: Optional[float] = None
    images_per_second: Optional[float] = None
    ensemble: Optional[dict[str, Any]] = None
    severity: Optional[int] = None

    @property
    def label(self) -> str:
        """``"NAA ε=8/255"``, ``"Clean"``, ``"Fog (severity 3)"``..."""
        if self.severity is not None:
            return f"{self.name} (severity {self.severity})"
        return self.name if self.eps is None else f"{self.name} ε={format_eps(self.eps)}"

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["eps_text"] = None if self.eps is None else format_eps(self.eps)
        data["iou"] = [None if math.isnan(v) else v for v in self.iou]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionResult:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["iou"] = [math.nan if v is None else float(v) for v in fields["iou"]]
        return cls(**fields)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


@dataclass
class BenchmarkResults:
    """Everything [run_benchmark][segrobust.benchmark.run_benchmark] measured.

    Rows come in report order: clean, rain presets, then per attack its ε
    values, the positive attacks (AMA), and the worst case per ε.

    Examples:
        >>> results = BenchmarkResults.load("results.json")  # doctest: +SKIP
        >>> results.row("worst", eps=8 / 255).miou  # doctest: +SKIP
    """

    rows: list[ConditionResult]
    class_names: list[str]
    num_images: int
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    examples: Optional[dict[str, Any]] = field(default=None, repr=False)
    #: The files [save][segrobust.benchmark.BenchmarkResults.save] (or ``run_benchmark`` with ``out_dir``) wrote, by name.
    files: dict[str, Path] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ access
    def row(self, key: str, eps: Optional[float] = None, severity: Optional[int] = None) -> ConditionResult:
        """The row of condition ``key`` (``"clean"``, ``"rain:heavy"``, ``"corruption:fog"``, ``"naa"``, ``"worst"``...) at ``eps`` or ``severity``."""
        for row in self.rows:
            if (
                row.key == key
                and (eps is None or (row.eps is not None and abs(row.eps - eps) < 1e-9))
                and (severity is None or row.severity == severity)
            ):
                return row
        where = ("" if eps is None else f" at eps={format_eps(eps)}") + (
            "" if severity is None else f" at severity {severity}"
        )
        raise KeyError(f"no result for {key!r}{where}")

    def corruption_summary(self) -> dict[str, Any]:
        """Mean corruption mIoU, its ratio to clean, and means per family and per corruption (see `segrobust.benchmark.card`)."""
        from segrobust.benchmark.card import corruption_summary

        return corruption_summary(self)

    def robustness_card(self) -> list[dict[str, Any]]:
        """The robustness card's entries: clean, corruptions (mean, worst family), rain, reliable adversarial."""
        from segrobust.benchmark.card import robustness_card

        return robustness_card(self)

    @property
    def clean(self) -> ConditionResult:
        return self.row("clean")

    @property
    def eps_list(self) -> list[float]:
        return sorted({row.eps for row in self.rows if row.eps is not None})

    # ------------------------------------------------------------------ tables
    def table_rows(self) -> list[list[str]]:
        """Header and one row per condition: condition, ε, mIoU, pixel acc., mean class acc., ΔmIoU, images/s."""
        clean = self.clean.miou if any(row.key == "clean" for row in self.rows) else math.nan
        header = ["Condition", "ε", "mIoU %", "Pixel acc. %", "Class acc. %", "Δ mIoU", "img/s"]
        body = []
        for row in self.rows:
            delta = "" if row.key == "clean" or math.isnan(clean) else f"{100 * (row.miou - clean):+.1f}"
            speed = "" if row.images_per_second is None else f"{row.images_per_second:.1f}"
            body.append(
                [
                    row.name if row.severity is None else row.label,
                    "" if row.eps is None else format_eps(row.eps),
                    f"{100 * row.miou:.1f}",
                    f"{100 * row.pixel_accuracy:.1f}",
                    f"{100 * row.mean_class_accuracy:.1f}",
                    delta,
                    speed,
                ]
            )
        return [header, *body]

    def table(self, style: str = "plain") -> str:
        """The summary table as text: ``"plain"`` (aligned columns) or ``"markdown"``."""
        rows = self.table_rows()
        if style == "markdown":
            lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|"]
            lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows[1:]]
            return "\n".join(lines)
        if style != "plain":
            raise ValueError(f"style must be 'plain' or 'markdown', got {style!r}")
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = []
        for number, row in enumerate(rows):
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
            lines.append("  ".join(cells).rstrip())
            if number == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    # ------------------------------------------------------------------ records
    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per condition and ε, in report order: ``pd.DataFrame(results.to_records())``.

        Columns: ``condition`` (the row key: ``"clean"``, ``"rain:heavy"``,
        ``"corruption:fog"``, ``"naa"``, ``"worst"``...), ``name``, ``kind``, ``eps`` (``None`` for
        clean, rain and corruptions), ``eps_text``, ``severity`` (corruptions only), ``miou``, ``pixel_accuracy``,
        ``mean_class_accuracy``, ``delta_miou`` (versus clean), ``num_pixels``,
        ``seconds``, ``images_per_second`` and ``iou_<class name>`` per class.
        Scores are fractions in ``[0, 1]``; a value that does not exist (an
        absent class's IoU, an unmeasured time) is ``None``.

        Examples:
            >>> row = ConditionResult("clean", "Clean", "clean", None, 0.5, 0.75, 0.5, [1.0, 0.0], 8,
            ...                       [[4, 0], [2, 2]], [0.75])
            >>> record = BenchmarkResults([row], ["road", "car"], 1).to_records()[0]
            >>> record["condition"], record["miou"], record["iou_car"]
            ('clean', 0.5, 0.0)
        """
        has_clean = any(row.key == "clean" for row in self.rows)
        clean = self.clean.miou if has_clean else math.nan
        records = []
        for row in self.rows:
            record: dict[str, Any] = {
                "condition": row.key,
                "name": row.name,
                "kind": row.kind,
                "eps": row.eps,
                "eps_text": None if row.eps is None else format_eps(row.eps),
                "severity": row.severity,
                "miou": row.miou,
                "pixel_accuracy": row.pixel_accuracy,
                "mean_class_accuracy": row.mean_class_accuracy,
                "delta_miou": row.miou - clean,
                "num_pixels": row.num_pixels,
                "seconds": row.seconds,
                "images_per_second": row.images_per_second,
            }
            record.update({f"iou_{name}": value for name, value in zip(self.class_names, row.iou)})
            records.append(_nan_to_none(record))
        return records

    def to_csv(self, path: Union[str, os.PathLike, None] = None) -> str:
        """[to_records][segrobust.benchmark.BenchmarkResults.to_records] as CSV text (header first; ``None`` is empty).

        Floats are written with ``repr``, so reading them back gives the same
        numbers. With ``path`` the text is also written there (atomically).

        Examples:
            >>> results = BenchmarkResults.load("results.json")  # doctest: +SKIP
            >>> results.to_csv("results.csv")  # doctest: +SKIP
        """
        import csv
        import io

        records = self.to_records()
        columns = list(records[0]) if records else ["condition", "eps", "miou"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        text = buffer.getvalue()
        if path is not None:
            from segrobust.fileio import atomic_write_text

            atomic_write_text(Path(path), text)
        return text

    def headline(self) -> str:
        """Robustness under the reliable evaluation per ε, the short attacks beside it (or a note that they are
        upper bounds), and any gradient-masking warning of ``checks``."""
        lines = self._robustness_lines()
        warnings = self.masking_warnings()
        if warnings and lines:
            lines.append("")
        return "\n".join(lines + warnings)

    def _robustness_lines(self) -> list[str]:
        reliable = [row for row in self.rows if row.key == "reliable"]
        worst = {round(row.eps * 255, 6): row for row in self.rows if row.kind == "worst"}
        if not reliable:
            if not any(row.kind == "attack" for row in self.rows):
                return []
            return [
                "No reliable evaluation in this run: the attack numbers are upper bounds on robustness from "
                f"short attacks ({self.config.get('steps')} steps). For the reliable evaluation run "
                '`segrobust benchmark` with `--attacks all` (the default; Python: `attacks="all"`).'
            ]
        lines = [f"Robustness under the reliable evaluation ({reliable_setting(self.config)}):"]
        for row in reliable:
            line = (
                f"  ε={format_eps(row.eps)}: mIoU {100 * row.miou:.1f} % (greedy worst case), "
                f"pixel accuracy {100 * row.pixel_accuracy:.1f} %"
            )
            short = worst.get(round(row.eps * 255, 6))
            if short is not None:
                line += (
                    f"; all attacks together (per-image worst case): mIoU {100 * short.miou:.1f} %, "
                    f"pixel accuracy {100 * short.pixel_accuracy:.1f} %"
                )
            lines.append(line)
        if self.config.get("reliable_preset") == SMOKE_TEST_PRESET:
            lines.append(
                f"  The '{SMOKE_TEST_PRESET}' preset is a smoke test, not a robustness measurement: for the number "
                "to report run `--reliable-preset default` (or `sea`, SEA's published protocol)."
            )
        return lines

    def masking_warnings(self) -> list[str]:
        """One line per gradient-masking finding of ``checks`` (empty when there is none).

        Per ε, the images on which an APGD member of the reliable ensemble
        flagged a loss that never rose, an all-zero gradient or a non-finite
        gradient; per attack, the ε pairs where a larger budget left a higher
        whole-set accuracy or mIoU. ``report.md`` lists the images.
        """
        checks = self.checks or {}
        lines = []
        by_eps: dict[float, dict[str, set]] = {}
        for entry in checks.get("apgd_flags", []):
            flags = by_eps.setdefault(entry["eps"], {flag: set() for flag in MASKING_FLAGS})
            for flag in MASKING_FLAGS:
                flags[flag].update(entry.get(flag) or [])
        for eps, flags in sorted(by_eps.items()):
            flagged = set().union(*flags.values())
            if flagged:
                kinds = ", ".join(f"{flag.replace('_', ' ')} {len(images)}" for flag, images in flags.items() if images)
                lines.append(
                    f"Gradient masking at ε={format_eps(eps)}: the reliable ensemble could not search "
                    f"{len(flagged)} of {self.num_images} images ({kinds}); its numbers there are no robustness "
                    "measurement (report.md, 'Gradient-masking checks')."
                )
        for entry in (checks.get("eps_monotonicity") or {}).values():
            pairs = ", ".join(f"{a}→{b}" for a, b in (item["eps"] for item in entry.get("overall", [])))
            if pairs:
                lines.append(
                    f"Gradient masking? {entry['name']} leaves a higher accuracy or mIoU at a larger ε ({pairs}): "
                    "the attack fell short there (too few steps, or masked gradients)."
                )
        return lines

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """Every number, the configuration and the library versions (``results.json``)."""
        return _nan_to_none(
            {
                "format": RESULTS_FORMAT,
                "num_images": self.num_images,
                "class_names": list(self.class_names),
                "config": self.config,
                "versions": self.versions,
                "timing": self.timing,
                "checks": self.checks,
                "rows": [row.to_dict() for row in self.rows],
            }
        )

    def save_json(self, path: Union[str, os.PathLike]) -> Path:
        """Write ``results.json`` atomically."""
        from segrobust.fileio import atomic_write_text

        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkResults:
        if data.get("format") != RESULTS_FORMAT:
            raise ValueError(
                f"not a segrobust benchmark result (format {data.get('format')!r}, expected {RESULTS_FORMAT!r})"
            )
        return cls(
            rows=[ConditionResult.from_dict(row) for row in data["rows"]],
            class_names=list(data["class_names"]),
            num_images=int(data["num_images"]),
            config=dict(data.get("config", {})),
            versions=dict(data.get("versions", {})),
            timing=dict(data.get("timing", {})),
            checks=dict(data.get("checks", {})),
        )

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> BenchmarkResults:
        """Read a ``results.json`` written by [`save_json`][segrobust.benchmark.BenchmarkResults.save_json]."""
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def save(self, out_dir: Union[str, os.PathLike]) -> dict[str, Path]:
        """Write the report files into ``out_dir``; returns them (also kept in ``files``) by file name.

        The six files: ``results.json`` (every number), ``report.md``,
        ``miou_vs_eps.png``, ``convergence.png`` (with the reliable
        ensemble), ``examples.png`` and ``rain_examples.png`` (with example
        images); see [write_report][segrobust.benchmark.write_report] for what
        it refuses to overwrite.
        """
        from segrobust.benchmark.report import write_report

        self.files = {path.name: path for path in write_report(self, out_dir).values()}
        return self.files
