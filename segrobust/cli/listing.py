"""``segrobust list``: what segrobust can run, read from its registries, one line each."""

from __future__ import annotations

import re
from typing import Any, Optional

from segrobust.cli.flags import recipes
from segrobust.cli.options import Invocation

__all__ = ["catalogue", "run"]


def summary_line(text: Optional[str]) -> str:
    """A docstring's first line as plain text (cross-references and code marks dropped)."""
    line = (text or "").strip().split("\n", 1)[0].strip().rstrip(".")
    return re.sub(r"\[([^\]]+)\]\[[^\]]+\]", r"\1", line).replace("``", "")


def _rain_summary(preset: Any) -> str:
    def span(name: str, unit: str = "") -> str:
        value = preset[name]
        low, high = value if isinstance(value, (tuple, list)) else (value, value)
        return (f"{low:g}" if low == high else f"{low:g}-{high:g}") + unit

    layers = preset.get("num_layers", 1)
    streaks = (
        (
            f"streaks {span('length', ' px')} long (at 360 px height), density {span('density')}, "
            f"{layers} layer{'s' if layers != 1 else ''}"
        )
        if span("density") != "0"
        else "no streaks"
    )
    return f"{streaks}, fog {span('fog_density')}"


def _corruption_summary(entry: Any) -> str:
    """``Display name (family), severities 1-5``; rain's severities are its presets."""
    from segrobust.corruptions import RAIN_SEVERITY_PRESETS

    levels = entry.severities
    text = f"{entry.display_name} ({entry.family}), severities {levels[0]}-{levels[-1]}"
    if entry.family == "rain":
        presets = ", ".join(f"{level}={preset}" for level, preset in zip(levels, RAIN_SEVERITY_PRESETS))
        text += f": the rain presets {presets}"
    return text


def catalogue() -> list[tuple[str, list[tuple[str, str]]]]:
    """``(group title, [(name, description), ...])`` for ``segrobust list``, read from the registries."""
    from segrobust.attacks.apgd import RADIUS_SCHEDULES
    from segrobust.attacks.ensemble import RELIABLE_PRESETS
    from segrobust.benchmark.registry import ATTACKS, DEFENSES
    from segrobust.corruptions import CORRUPTIONS
    from segrobust.datasets.factory import DATASETS
    from segrobust.losses import PIXEL_LOSSES
    from segrobust.rain import RAIN_PRESETS

    return [
        (
            "attacks (segrobust benchmark --attacks)",
            [(key, f"{entry.display_name}: {entry.description}") for key, entry in ATTACKS.items()],
        ),
        (
            "reliable presets (segrobust benchmark --reliable-preset NAME; ReliableEnsemble(preset=NAME))",
            [
                (name, f"{preset.describe()}: {preset.iterations} iterations per image; {preset.description}")
                for name, preset in RELIABLE_PRESETS.items()
            ],
        ),
        (
            "pixel losses (segrobust.losses.PIXEL_LOSSES)",
            [(name, summary_line(getattr(loss, "__doc__", ""))) for name, loss in PIXEL_LOSSES.items()],
        ),
        (
            "APGD radius schedules (segrobust.attacks.APGD(radius_schedule=NAME))",
            [
                (name, ", then ".join(f"{radius:g}·ε for {fraction:.0%} of the steps" for radius, fraction in stages))
                for name, stages in RADIUS_SCHEDULES.items()
            ],
        ),
        (
            "rain presets (--rain, --rain-preset)",
            [(name, _rain_summary(preset)) for name, preset in RAIN_PRESETS.items()],
        ),
        (
            "corruptions (segrobust benchmark --corruptions, --severities)",
            [(name, _corruption_summary(entry)) for name, entry in CORRUPTIONS.items()],
        ),
        (
            "training recipes (segrobust train --recipe)",
            [(name, recipe.description) for name, recipe in recipes().items()],
        ),
        (
            "data sets (--dataset)",
            [(name, summary_line(getattr(build, "__doc__", ""))) for name, build in DATASETS.items()],
        ),
        (
            "defences (segrobust benchmark --defense KIND:PATH)",
            [(key, entry.description) for key, entry in DEFENSES.items()],
        ),
    ]


def run(invocation: Invocation) -> int:
    """Print the catalogue."""
    for title, entries in catalogue():
        print(f"{title}:")
        width = max((len(name) for name, _ in entries), default=0)
        for name, description in entries:
            print(f"  {name.ljust(width)}  {description}".rstrip())
        if not entries:
            print("  (none in this version)")
        print()
    return 0
