"""ART counterparts of segrobust's torch attacks, built on the torch implementations.

Each class here is an ART ``EvasionAttack`` that runs the segrobust attack of
the same name on a [`PyTorchSegmenter`][segrobust.art.PyTorchSegmenter]: the estimator's
forward chain (unit rescale, preprocessing defences, standardisation, model) is
wrapped as an ``nn.Module`` ([`EstimatorModule`][segrobust.art.EstimatorModule]) and the
torch attack runs on it. There is one implementation of every algorithm.

A new torch attack gets its ART counterpart with one line::

    RainAttack = make_art_attack(segrobust.attacks.RainAttack)

or, to give it a docstring, a two-line subclass::

    class RainAttack(ArtSegAttack):
        torch_attack = segrobust.attacks.RainAttack

[`ART_ATTACKS`][segrobust.art.ART_ATTACKS] is a plain dict of the
counterparts defined here, by name; add your own with one line.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.config import ART_NUMPY_DTYPE

from segrobust import attacks as torch_attacks
from segrobust.art._convert import ArrayLike, as_image_tensor, as_mask_tensor, clip_bounds
from segrobust.art.estimator import PyTorchSegmenter
from segrobust.attacks.engine import AttackStats, SegAttack

_OWN_PARAMS = ("batch_size", "targeted", "verbose")


class ArtSegAttack(EvasionAttack):
    """Base of the ART counterparts of segrobust attacks: a subclass only names ``torch_attack``.

    The constructor takes the estimator, then exactly the torch attack's
    arguments (``eps``, ``alpha``, ``steps``, ...; positional or keyword, same
    defaults), then ART's ``batch_size``, ``targeted`` and ``verbose``. Those
    names are the ART ``attack_params`` (``set_params`` works on all of them).

    Differences from the torch class:

    - ``eps``, ``alpha`` (and any name in ``pixel_params``) are in the units of
      the estimator's ``clip_values`` (ART's convention); with the default
      ``(0, 1)`` they are the torch attack's numbers. ``eps`` may be 0 where
      the torch attack allows it (RainAttack: rain alone).
    - ``ignore_index`` defaults to the estimator's ``ignore_index``.
    - ``targeted=True`` runs the per-pixel targeted mode with ``y`` as target
      masks (``set_mode_targeted_by_label``); ``y`` is then required.
    - random starts draw from torch's global generator: seed with
      ``torch.manual_seed`` (ART's own attacks use ``np.random``).

    ``generate(x, y=None)`` takes images ``(N, C, H, W)`` within
    ``clip_values`` and masks ``(N, H, W)`` (numpy or torch; ``y=None`` attacks
    the model's own prediction) and returns float32 numpy adversarial images.
    After a call, `stats` holds the torch attack's
    [`AttackStats`][segrobust.attacks.AttackStats] for the whole input.

    Examples:
        >>> import numpy as np, torch
        >>> from torch import nn
        >>> from segrobust.art import NAA, PyTorchSegmenter
        >>> est = PyTorchSegmenter(nn.Conv2d(3, 4, 3, padding=1), input_shape=(3, 8, 8))
        >>> x = np.random.rand(2, 3, 8, 8).astype(np.float32)
        >>> adv = NAA(est, eps=4 / 255, alpha=1 / 255, steps=2).generate(x, np.zeros((2, 8, 8), np.int64))
        >>> bool(np.abs(adv - x).max() <= 4 / 255 + 1e-6)
        True
    """

    torch_attack: ClassVar[type[SegAttack]]
    pixel_params: ClassVar[tuple[str, ...]] = ("eps", "alpha")
    attack_params = EvasionAttack.attack_params + list(_OWN_PARAMS)
    _estimator_requirements = (PyTorchSegmenter,)
    _torch_signature: ClassVar[inspect.Signature] = inspect.Signature()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        torch_cls = cls.__dict__.get("torch_attack")
        if torch_cls is None:
            return
        if not (isinstance(torch_cls, type) and issubclass(torch_cls, SegAttack)):
            raise TypeError(f"{cls.__name__}.torch_attack must be a SegAttack subclass, got {torch_cls!r}")
        params = list(inspect.signature(torch_cls.__init__).parameters.values())[2:]  # self, model
        for param in params:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"{torch_cls.__name__}.__init__ must list its arguments explicitly (no *args/**kwargs)")
            if param.name in _OWN_PARAMS or hasattr(EvasionAttack, param.name):
                raise TypeError(f"{torch_cls.__name__} argument {param.name!r} clashes with an ART attack attribute")
        # ignore_index defaults to the estimator's (None = "the estimator's")
        params = [
            p.replace(default=None, annotation="Optional[int]") if p.name == "ignore_index" else p for p in params
        ]
        cls._torch_signature = inspect.Signature(params)
        cls.attack_params = EvasionAttack.attack_params + [p.name for p in params] + list(_OWN_PARAMS)
        own = [
            inspect.Parameter("batch_size", inspect.Parameter.KEYWORD_ONLY, default=32, annotation=int),
            inspect.Parameter("targeted", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool),
            inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=bool),
        ]
        estimator = inspect.Parameter("estimator", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=PyTorchSegmenter)
        cls.__signature__ = inspect.Signature([estimator, *params, *own])

    def __init__(
        self,
        estimator: PyTorchSegmenter,
        *args: Any,
        batch_size: int = 32,
        targeted: bool = False,
        verbose: bool = False,
        **kwargs: Any,
    ):
        if not hasattr(type(self), "torch_attack"):
            raise TypeError(
                f"{type(self).__name__} names no torch_attack; subclass ArtSegAttack with torch_attack = ..."
            )
        super().__init__(estimator=estimator)
        try:
            bound = self._torch_signature.bind_partial(*args, **kwargs)
        except TypeError as err:
            names = ", ".join(self._torch_signature.parameters)
            raise TypeError(
                f"{type(self).__name__}: {err} (arguments: estimator, {names}, batch_size, targeted, verbose)"
            ) from None
        for name, param in self._torch_signature.parameters.items():
            setattr(self, name, bound.arguments.get(name, param.default))
        self.batch_size = batch_size
        self.targeted = targeted
        self.verbose = verbose
        self.stats: Optional[AttackStats] = None
        self._check_params()

    # ------------------------------------------------------------------ parameters
    def _check_params(self) -> None:
        super()._check_params()
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, (int, np.integer))
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if not isinstance(self.targeted, bool):
            raise TypeError(f"targeted must be a bool, got {type(self.targeted).__name__}")
        if not isinstance(self.verbose, bool):
            raise TypeError(f"verbose must be a bool, got {type(self.verbose).__name__}")
        low, high = clip_bounds(self.estimator.clip_values, "estimator.clip_values")
        for name in self.pixel_params:
            value = getattr(self, name, None)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            zero_ok = name == "eps" and self.torch_attack._eps_may_be_zero
            if not (0 <= value if zero_ok else 0 < value) or not value <= high - low:
                interval = f"{'[' if zero_ok else '('}0, {high - low:g}]"
                raise ValueError(
                    f"{name} must be in {interval} (units of clip_values [{low:g}, {high:g}]), got {value}"
                )
        self._torch_attack()  # the torch class validates everything else with its own messages

    def _torch_attack(self) -> SegAttack:
        """The torch attack on the estimator's forward chain, with this attack's parameters."""
        low, high = clip_bounds(self.estimator.clip_values, "estimator.clip_values")
        span = high - low
        arguments = {}
        for name in self._torch_signature.parameters:
            value = getattr(self, name)
            if name == "ignore_index" and value is None:
                value = self.estimator.ignore_index
            if name in self.pixel_params and value is not None and span != 1.0:
                value = float(value) / span
            arguments[name] = value
        attack = self.torch_attack(self.estimator.as_torch_module(unit_range=True), **arguments)
        if self.targeted:
            try:
                attack.set_mode_targeted_by_label(quiet=True)
            except ValueError as err:
                raise ValueError(f"{type(self).__name__} does not support targeted=True: {err}") from None
        return attack

    # ------------------------------------------------------------------ attack
    def generate(self, x: ArrayLike, y: Optional[ArrayLike] = None, **kwargs: Any) -> np.ndarray:
        """Adversarial images (float32 numpy, shape of ``x``) for images ``x`` and masks ``y``.

        ``y`` are the true masks (untargeted) or the target masks (targeted);
        ``y=None`` attacks the model's own prediction on ``x`` (untargeted only).
        """
        if "mask" in kwargs:
            raise ValueError(
                "segrobust.art attacks do not take ART's perturbation mask= (y holds the segmentation masks); "
                "use SegmentationPGD for a perturbation mask"
            )
        if kwargs:
            raise TypeError(f"{type(self).__name__}.generate got unexpected arguments {sorted(kwargs)}")
        estimator: PyTorchSegmenter = self.estimator
        low, high = clip_bounds(estimator.clip_values, "estimator.clip_values")
        images = as_image_tensor(
            x, channels=estimator.input_shape[0], clip_values=(low, high), device=estimator.device, name="x"
        )
        if y is None and self.targeted:
            raise ValueError("a targeted attack needs the target masks y (N, H, W)")
        attack = self._torch_attack()
        masks = None
        if y is not None:
            masks = as_mask_tensor(
                y, images, nb_classes=estimator.nb_classes, ignore_index=attack.ignore_index, name="y"
            )
        unit = images if (low, high) == (0.0, 1.0) else ((images - low) / (high - low)).clamp(0, 1)
        from tqdm.auto import tqdm

        starts = range(0, unit.shape[0], self.batch_size)
        outputs, stats = [], []
        for start in tqdm(starts, desc=type(self).__name__, disable=not self.verbose):
            stop = start + self.batch_size
            adv, batch_stats = attack(unit[start:stop], None if masks is None else masks[start:stop], return_stats=True)
            outputs.append(adv)
            stats.append(batch_stats)
        adv = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        self.stats = (
            stats[0]
            if len(stats) == 1
            else AttackStats(
                loss=torch.cat([s.loss for s in stats], dim=1),
                pixel_accuracy=torch.cat([s.pixel_accuracy for s in stats], dim=1),
                best_step=torch.cat([s.best_step for s in stats]),
                nonfinite_gradient=_cat_optional([s.nonfinite_gradient for s in stats]),
                confusion=_cat_optional([s.confusion for s in stats]),
            )
        )
        if (low, high) != (0.0, 1.0):
            adv = (adv * (high - low) + low).clamp(low, high)
        return adv.detach().cpu().numpy().astype(ART_NUMPY_DTYPE, copy=False)


def _cat_optional(parts: list[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    """The batches' tensors concatenated along images, or None if a batch has none."""
    return None if any(p is None for p in parts) else torch.cat(parts)


def make_art_attack(
    torch_attack: type[SegAttack], name: Optional[str] = None, doc: Optional[str] = None
) -> type[ArtSegAttack]:
    """Create the ART counterpart of a segrobust torch attack class (add it to
    [`ART_ATTACKS`][segrobust.art.ART_ATTACKS] if the name should be looked up).

    Examples:
        >>> from segrobust.attacks import NAA as TorchNAA
        >>> MyNAA = make_art_attack(TorchNAA, name="MyNAA")
        >>> MyNAA.__name__, "steps" in MyNAA.attack_params
        ('MyNAA', True)
    """
    name = name or torch_attack.__name__
    doc = doc or (
        f"ART counterpart of `{torch_attack.__module__}.{torch_attack.__name__}` "
        "(see [`ArtSegAttack`][segrobust.art.ArtSegAttack] for the conventions)."
    )
    return type(name, (ArtSegAttack,), {"torch_attack": torch_attack, "__doc__": doc, "__module__": __name__})


class NAA(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.NAA`][segrobust.attacks.NAA] (Negative Adversarial Attack, PEARL).

    ``NAA(estimator, eps=8/255, alpha=None, steps=None, *, loss=None, random_start=True, ignore_index=None,
    nonfinite="raise", amp=None, radius_schedule=None, loss_options=None, step_rule=None,
    batch_size=32, targeted=False, verbose=False)``; conventions in [`ArtSegAttack`][segrobust.art.ArtSegAttack].

    Examples:
        >>> adv = NAA(estimator, eps=8 / 255, alpha=2 / 255, steps=10).generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.NAA


class AMA(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.AMA`][segrobust.attacks.AMA] (Auxiliary Mirror Attack, PEARL): descends the loss.

    Same arguments as [`NAA`][segrobust.art.NAA]; ``targeted=True`` is refused (as by the torch class).

    Examples:
        >>> positive = AMA(estimator, eps=4 / 255, alpha=1 / 255, steps=10).generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.AMA


class SegPGD(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.SegPGD`][segrobust.attacks.SegPGD] (Gu et al., ECCV 2022). Arguments as [`NAA`][segrobust.art.NAA].

    Examples:
        >>> adv = SegPGD(estimator, eps=8 / 255, alpha=2 / 255, steps=20).generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.SegPGD


class CosPGD(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.CosPGD`][segrobust.attacks.CosPGD] (Agnihotri et al., ICML 2024). Arguments as [`NAA`][segrobust.art.NAA].

    Examples:
        >>> adv = CosPGD(estimator, eps=8 / 255, alpha=2 / 255, steps=20).generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.CosPGD


class EroSeg(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.EroSeg`][segrobust.attacks.EroSeg] (erosion attack).

    ``EroSeg(estimator, eps, alpha, steps, *, ..., q0=0.85, schedule="linear", kernel_size=5,
    fooled_weight=0.1, confidence="true_prob", batch_size, targeted, verbose)``: the torch
    attack's arguments, then ART's.

    Examples:
        >>> adv = EroSeg(estimator, eps=8 / 255, steps=20, q0=0.2, schedule="cosine").generate(images)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.EroSeg


class RainAttack(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.RainAttack`][segrobust.attacks.RainAttack]: gradient ascent over the rain parameters.

    ``RainAttack(estimator, eps=0.0, alpha=None, steps=10, *, ranges="medium", ..., batch_size, targeted,
    verbose)``; ``eps`` (the pixel budget; 0 is rain alone) and ``alpha`` are in the units of
    ``clip_values``. Conventions in [`ArtSegAttack`][segrobust.art.ArtSegAttack].

    Examples:
        >>> rainy_adv = RainAttack(estimator, 4 / 255, steps=10, ranges="heavy").generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.RainAttack


class APGD(ArtSegAttack):
    """ART counterpart of [APGD][segrobust.attacks.APGD] (Croce & Hein 2020, per pixel; SEA's radius schedule).

    ``APGD(estimator, eps=8/255, alpha=None, steps=None, *, loss=None, random_start=True,
    ignore_index=None, nonfinite="raise", amp=None, radius_schedule=None, loss_options=None,
    step_rule=None, batch_size=32, targeted=False, verbose=False)`` (``steps=None``: 100;
    ``step_rule=APGDStep(momentum=...)`` sets the rule); ``eps`` and ``alpha`` (the initial step) are in
    the units of the estimator's ``clip_values``, other conventions as in
    [ArtSegAttack][segrobust.art.ArtSegAttack]. Under the same ``torch.manual_seed`` it returns
    exactly the torch attack's images. After ``generate``, ``stats`` holds the loss and accuracy
    curves (for one batch, the full [APGDStats][segrobust.attacks.APGDStats]).

    Examples:
        >>> adv = APGD(estimator, eps=8 / 255, steps=100, loss="masked_ce", radius_schedule="sea").generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.APGD


ART_ATTACKS: dict[str, type[ArtSegAttack]] = {
    "NAA": NAA,
    "AMA": AMA,
    "SegPGD": SegPGD,
    "CosPGD": CosPGD,
    "EroSeg": EroSeg,
    "APGD": APGD,
    "RainAttack": RainAttack,
}
"""The ART counterparts by name (a plain dict; add your own)."""

__all__ = [*ART_ATTACKS, "ART_ATTACKS", "ArtSegAttack", "make_art_attack"]
