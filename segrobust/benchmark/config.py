"""``BenchmarkConfig``: every setting of a benchmark run, checked and normalised in one place."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from segrobust.benchmark import functional as BF
from segrobust.benchmark.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPS,
    DEFAULT_RELIABLE_PRESET,
    DEFAULT_STEPS,
    MAX_STEPS,
)
from segrobust.benchmark.registry import resolve_attacks, resolve_rain_presets
from segrobust.corruptions.registry import CORRUPTIONS, resolve_corruptions, resolve_severities
from segrobust.rain.presets import PRESET_REFERENCE_HEIGHT
from segrobust.validation import check_amp

__all__ = ["DEFAULT_EPS", "RAIN_REFERENCE_HEIGHT", "BenchmarkConfig"]

#: Image height the rain presets' streak lengths are tuned for (CamVid, 360 px).
RAIN_REFERENCE_HEIGHT = PRESET_REFERENCE_HEIGHT

_COUNTS = (  # name, lowest, highest value (None: the field may be None)
    ("steps", 1, MAX_STEPS),
    ("reliable_steps", 1, MAX_STEPS),
    ("batch_size", 1, None),
    ("num_workers", 0, None),
    ("num_examples", 0, None),
    ("cache_bytes", 0, None),
)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Settings of [run_benchmark][segrobust.benchmark.run_benchmark]; checked and normalised on creation.

    Attributes:
        attacks: keys of `segrobust.benchmark.ATTACKS`
            (``"reliable"``, ``"naa"``, ``"segpgd"``, ``"cospgd"``, ``"eroseg"``, ``"ama"``, …),
            a comma-separated string, ``"all"`` (``None``, the default: the reliable
            evaluation and every short attack), ``"short"`` (the short attacks alone:
            upper bounds on robustness) or ``"none"``. Stored as the list of keys in report order.
        eps_list: L∞ budgets in ``(0, 1]`` (numbers or text like ``"8/255"``);
            stored sorted, without duplicates.
        rain: rain presets (``"light"``, ``"medium"``, ``"heavy"``, ``"fog_only"``),
            ``"all"`` (``None``, the default) or ``"none"``; stored as a list.
        steps: iterations of the short attacks (at most ``MAX_STEPS``, 100,000:
            per-iteration statistics would otherwise ask for unbounded memory).
        reliable_preset: the reliable evaluation (attack key ``"reliable"``): a name in
            `segrobust.attacks.RELIABLE_PRESETS` (``"default"``, the default; ``"sea"``:
            SEA's published protocol; ``"quick"``: a smoke test), or ``None`` for the
            ensemble's ``losses`` form (SEA's three losses, 100 iterations each, as in
            earlier versions). ``attack_kwargs["reliable"]`` naming ``losses`` or
            ``members`` defines the ensemble itself; the preset is then ``None``.
            When a member asks for class weights (``sea``'s balanced masked CE),
            SEA's weights are computed from the evaluated masks
            ([sea_class_weights][segrobust.losses.sea_class_weights], one count
            while the data are checked; no model pass).
        reliable_steps: iterations of every member of the reliable ensemble; ``None``
            (the default): each member's own (the preset's). At most ``MAX_STEPS``.
        alpha: attack step size; ``None`` uses ``2.5·ε/steps``.
        random_start: start each attack at a random point of the ε-ball.
        batch_size: images per batch (the unit of resume and of sharding).
        num_classes: classes of the model; inferred from its output when ``None``.
        ignore_index: mask value of pixels that do not count.
        class_names: names for the report (default: the dataset's, CamVid's for 11 classes, else numbers).
        device: where to run; defaults to the model's device (the model is never moved).
        seed: base of every random draw (rain, attack start points).
        out_dir: write per-batch partial results there (and, with
            ``write_report``, ``results.json``, ``report.md`` and the figures).
        resume: skip units already in ``out_dir`` (made with the same settings and data).
        progress: tqdm bars per condition (rank 0 only).
        num_workers: DataLoader workers.
        num_examples: images kept (from the first batch) for ``examples.png``.
        attack_kwargs: extra constructor arguments per attack key, e.g. ``{"eroseg": {"q0": 0.3}}``.
        rain_reference_height: the presets' streak lengths are in pixels for
            images of this height and are scaled to the data's height; ``None`` keeps them.
        write_report: with ``out_dir``, write the report files (rank 0).
        metadata: extra JSON-able settings recorded in ``results.json`` (e.g. the command line).
        cache_bytes: keep this process's batches in memory between conditions up to this size.
        corruptions: common corruptions (`segrobust.corruptions.CORRUPTIONS`): names, families
            (``"noise"``, ``"blur"``, ``"weather"``, ``"digital"``, ``"rain"``), a comma-separated
            string or ``"all"`` (the 15 of ImageNet-C and rain); ``None`` (the default) or ``"none"``
            runs none. The rain family runs as the rain presets of its severities.
        severities: corruption severity levels in 1–5 (a list, an int or text like ``"1,3,5"``).
        amp: run every forward of the model (clean, rain, corruptions, and each attack's, through its
            ``amp=``) under ``torch.autocast`` with this dtype: ``None`` (the default, off),
            ``torch.bfloat16``, ``torch.float16`` or ``"bf16"`` / ``"fp16"``. Losses, attack steps
            and the projection stay in float32, so ‖x_adv − x‖∞ ≤ ε holds exactly. Stored as the dtype.

    Examples:
        >>> config = BenchmarkConfig(attacks="SegPGD,naa", eps_list=["8/255", 4 / 255], rain="none")
        >>> config.attacks, [round(e * 255) for e in config.eps_list], config.rain
        (['naa', 'segpgd'], [4, 8], [])
        >>> BenchmarkConfig(steps=0)
        Traceback (most recent call last):
        ...
        ValueError: steps must be an int >= 1, got 0
    """

    attacks: Union[str, Sequence[str], None] = None
    eps_list: Union[Sequence[Union[float, str]], float, str] = DEFAULT_EPS
    rain: Union[str, Sequence[str], None] = None
    steps: int = DEFAULT_STEPS
    reliable_steps: Optional[int] = None
    reliable_preset: Optional[str] = DEFAULT_RELIABLE_PRESET
    alpha: Optional[float] = None
    random_start: bool = True
    batch_size: int = DEFAULT_BATCH_SIZE
    num_classes: Optional[int] = None
    ignore_index: int = 255
    class_names: Optional[Sequence[str]] = None
    device: Union[str, torch.device, None] = None
    seed: int = 0
    out_dir: Union[str, os.PathLike, None] = None
    resume: bool = False
    progress: bool = True
    num_workers: int = 0
    num_examples: int = 3
    attack_kwargs: Optional[Mapping[str, Mapping[str, Any]]] = None
    rain_reference_height: Optional[int] = RAIN_REFERENCE_HEIGHT
    write_report: bool = True
    metadata: Optional[Mapping[str, Any]] = None
    cache_bytes: int = 2 * 1024**3
    corruptions: Union[str, Sequence[str], None] = None
    severities: Union[Sequence[int], int, str] = (1, 2, 3, 4, 5)
    amp: Union[str, torch.dtype, None] = None

    def __post_init__(self) -> None:
        attacks = resolve_attacks(self.attacks)
        eps_list = [self.eps_list] if isinstance(self.eps_list, (str, float, int)) else list(self.eps_list)
        eps_values = sorted({BF.parse_eps(eps) for eps in eps_list})
        if attacks and not eps_values:
            raise ValueError("eps_list is empty; give at least one budget in (0, 1]")
        for name, minimum, maximum in _COUNTS:
            value = getattr(self, name)
            if value is None and name == "reliable_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
            if maximum is not None and value > maximum:
                raise ValueError(f"{name} must be at most {maximum:,} (MAX_STEPS), got {value:,}")
        for name in ("seed", "ignore_index"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an int, got {getattr(self, name)!r}")
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int or None, got {self.num_classes!r}")
        if self.alpha is not None:
            BF.parse_eps(self.alpha)
        attack_kwargs = {key: dict(value) for key, value in (self.attack_kwargs or {}).items()}
        for key in attack_kwargs:
            if key not in attacks:
                raise ValueError(f"attack_kwargs names {key!r}, which is not among the evaluated attacks {attacks}")
        reliable_preset = _reliable_preset(self.reliable_preset, attack_kwargs.get("reliable", {}))
        if self.rain_reference_height is not None and (
            not isinstance(self.rain_reference_height, int) or self.rain_reference_height < 1
        ):
            raise ValueError(
                f"rain_reference_height must be a positive int or None, got {self.rain_reference_height!r}"
            )
        normalised = {
            "attacks": attacks,
            "eps_list": eps_values,
            "rain": resolve_rain_presets(self.rain),
            "random_start": bool(self.random_start),
            "attack_kwargs": attack_kwargs,
            "metadata": dict(self.metadata or {}),
            "resume": bool(self.resume),
            "class_names": None if self.class_names is None else [str(name) for name in self.class_names],
            "corruptions": resolve_corruptions(self.corruptions),
            "reliable_preset": reliable_preset,
            "severities": resolve_severities(self.severities),
            "amp": check_amp(self.amp, "amp"),
        }
        corruptions, severities = normalised["corruptions"], normalised["severities"]
        if corruptions and not any(s in CORRUPTIONS[name].severities for name in corruptions for s in severities):
            raise ValueError(
                f"severities={severities}: none of corruptions {corruptions} has such a level (rain has 1-3)"
            )
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> BenchmarkConfig:
        """A copy with some settings changed (checked again).

        Examples:
            >>> BenchmarkConfig(steps=2).replace(steps=5).steps
            5
        """
        return dataclasses.replace(self, **changes)


def _reliable_preset(preset: Optional[str], options: Mapping[str, Any]) -> Optional[str]:
    """The preset of the reliable evaluation: checked, and ``None`` where ``options`` define the members."""
    from segrobust.attacks.ensemble import RELIABLE_PRESETS

    if "preset" in options:
        raise ValueError("give the reliable evaluation's preset as reliable_preset, not in attack_kwargs['reliable']")
    if "losses" in options or "members" in options:
        return None
    if preset is not None and preset not in RELIABLE_PRESETS:
        raise ValueError(f"unknown reliable_preset {preset!r}; expected one of {', '.join(RELIABLE_PRESETS)} or None")
    return preset
