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
from segrobust.attacks.base import AttackStats, SegAttack

__all__ = ["AMA", "ART_ATTACKS", "NAA", "ArtSegAttack", "CosPGD", "EroSeg", "RainAttack", "SegPGD", "make_art_attack"]

ART_ATTACKS: dict[str, type[ArtSegAttack]] = {}
"""Every ART counterpart defined so far, by name (filled as classes are created)."""

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
      ``(0, 1)`` they are the torch attack's numbers.
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
        ART_ATTACKS[cls.__name__] = cls

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
            if not 0 < value <= high - low:
                raise ValueError(
                    f"{name} must be in (0, {high - low:g}] (units of clip_values [{low:g}, {high:g}]), got {value}"
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
    """Create (and register in [`ART_ATTACKS`][segrobust.art.ART_ATTACKS]) the ART counterpart of a segrobust torch attack class.

    Examples:
        >>> from segrobust.attacks import NAA as TorchNAA
        >>> MyNAA = make_art_attack(TorchNAA, name="MyNAA")
        >>> ART_ATTACKS["MyNAA"] is MyNAA, "steps" in MyNAA.attack_params
        (True, True)
    """
    name = name or torch_attack.__name__
    doc = doc or (
        f"ART counterpart of `{torch_attack.__module__}.{torch_attack.__name__}` "
        "(see [`ArtSegAttack`][segrobust.art.ArtSegAttack] for the conventions)."
    )
    return type(name, (ArtSegAttack,), {"torch_attack": torch_attack, "__doc__": doc, "__module__": __name__})


class NAA(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.NAA`][segrobust.attacks.NAA] (Negative Adversarial Attack, PEARL).

    ``NAA(estimator, eps=8/255, alpha=None, steps=10, random_start=True, ignore_index=None,
    *, batch_size=32, targeted=False, verbose=False)``; conventions in [`ArtSegAttack`][segrobust.art.ArtSegAttack].

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

    ``EroSeg(estimator, eps, alpha, steps, random_start, q0=0.85, schedule="linear", kernel_size=5,
    fooled_weight=0.1, confidence="true_prob", ignore_index=None, *, batch_size, targeted, verbose)``.

    Examples:
        >>> adv = EroSeg(estimator, eps=8 / 255, steps=20, q0=0.2, schedule="cosine").generate(images)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.EroSeg


class RainAttack(ArtSegAttack):
    """ART counterpart of [`segrobust.attacks.RainAttack`][segrobust.attacks.RainAttack]: gradient ascent over the rain parameters.

    ``RainAttack(estimator, ranges="medium", steps=10, param_step=None, pixel_eps=0.0, pixel_alpha=None, ...,
    *, batch_size, targeted, verbose)``; ``pixel_eps`` is in ``[0, 1]`` image units. Conventions in
    [`ArtSegAttack`][segrobust.art.ArtSegAttack].

    Examples:
        >>> rainy_adv = RainAttack(estimator, ranges="heavy", steps=10, pixel_eps=4 / 255).generate(images, masks)  # doctest: +SKIP
    """

    torch_attack = torch_attacks.RainAttack
    pixel_params = ()  # pixel_eps may be 0 (rain alone); it is given in [0, 1] image units
