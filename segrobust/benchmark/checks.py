"""Gradient-masking checks of a benchmark run, from its rows (``results.json`` field ``checks``).

Two kinds of evidence that an attack did not find the worst case:

- the APGD members of the reliable ensemble flag, per image, a loss that never
  rose, an all-zero input gradient, or a NaN / infinite gradient;
- ε monotonicity: a larger budget contains every perturbation of a smaller one,
  so a strong attack never ends with a *higher* accuracy at a larger ε. Each
  adversarial row (every attack, the reliable ensemble and the worst case) is
  checked overall and per image.
"""

from __future__ import annotations

from typing import Any

from segrobust.benchmark.results import MASKING_FLAGS, ConditionResult

__all__ = ["eps_monotonicity", "gradient_masking_checks"]


def eps_monotonicity(rows: list[ConditionResult]) -> dict[str, Any]:
    """Per condition key with two or more budgets: where a larger ε gave a higher accuracy than a smaller one.

    ``overall`` lists the ``(smaller ε, larger ε)`` pairs whose whole-set pixel
    accuracy or mIoU rose; ``images`` maps an image index to the pairs where its
    pixel accuracy rose.

    Examples:
        >>> from segrobust.benchmark.results import ConditionResult
        >>> def row(eps, accs):
        ...     return ConditionResult("naa", "NAA", "attack", eps, 0.5, sum(accs) / 2, 0.5, [], 0, [], accs)
        >>> eps_monotonicity([row(2 / 255, [0.5, 0.2]), row(4 / 255, [0.4, 0.3])])["naa"]["images"]
        {'1': [['2/255', '4/255']]}
    """
    from segrobust.benchmark.functional import format_eps

    keys = list(dict.fromkeys(row.key for row in rows if row.kind in ("attack", "worst") and row.eps is not None))
    found: dict[str, Any] = {}
    for key in keys:
        series = sorted((row for row in rows if row.key == key and row.eps is not None), key=lambda row: row.eps)
        if len(series) < 2:
            continue
        overall, images = [], {}
        for j, larger in enumerate(series):
            for smaller in series[:j]:
                pair = [format_eps(smaller.eps), format_eps(larger.eps)]
                if larger.pixel_accuracy > smaller.pixel_accuracy or larger.miou > smaller.miou:
                    overall.append(
                        {
                            "eps": pair,
                            "pixel_accuracy": [smaller.pixel_accuracy, larger.pixel_accuracy],
                            "miou": [smaller.miou, larger.miou],
                        }
                    )
                for i, (low, high) in enumerate(zip(smaller.per_image_pixel_accuracy, larger.per_image_pixel_accuracy)):
                    if high > low:
                        images.setdefault(str(i), []).append(pair)
        found[key] = {"name": series[0].name, "overall": overall, "images": images}
    return found


def gradient_masking_checks(rows: list[ConditionResult]) -> dict[str, Any]:
    """The ``checks`` of ``results.json``: APGD flags per ε and member (image indices), and ε monotonicity.

    Examples:
        >>> gradient_masking_checks([])
        {'apgd_flags': [], 'eps_monotonicity': {}}
    """
    flags = []
    for row in rows:
        if row.kind == "member" and row.ensemble is not None:
            flags.append(
                {
                    "eps": row.eps,
                    "member": row.name,
                    "images_attacked": row.ensemble.get("images_attacked"),
                    **{flag: list(row.ensemble.get(flag, [])) for flag in MASKING_FLAGS},
                }
            )
    return {"apgd_flags": flags, "eps_monotonicity": eps_monotonicity(rows)}
