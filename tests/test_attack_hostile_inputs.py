"""A hostile user's inputs to the attacks: NaN logits anywhere, bad arguments, models without gradients.

Each gets a clear error naming what is wrong (or, for NaN with
``nonfinite="warn"``, a warning and a mark in the statistics), never a plausible
accuracy and never a deep torch traceback.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import NUM_CLASSES, make_blobs
from torch import nn

from segrobust.attacks import (
    AMA,
    APGD,
    NAA,
    CosPGD,
    EroSeg,
    NonFiniteGradientError,
    NonFiniteLogitsError,
    RainAttack,
    ReliableEnsemble,
    SegMultiAttack,
    SegPGD,
)
from segrobust.validation import MAX_STEPS, check_bool, check_steps

RAIN_SMALL = {"length": (2.0, 4.0), "num_layers": 1}


def _conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Conv2d(3, NUM_CLASSES, 3, padding=1)


class NaNAtOnePixel(nn.Module):
    """Logits NaN at pixel (0, 0) of every image; the input gradient stays finite (``torch.where``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        hole = torch.zeros_like(out, dtype=torch.bool)
        hole[:, :, 0, 0] = True
        return torch.where(hole, torch.full_like(out, float("nan")), out)


def _attacks(model: nn.Module, **kwargs):
    return {
        "NAA": NAA(model, eps=4 / 255, steps=2, **kwargs),
        "AMA": AMA(model, eps=4 / 255, steps=2, **kwargs),
        "SegPGD": SegPGD(model, eps=4 / 255, steps=2, **kwargs),
        "CosPGD": CosPGD(model, eps=4 / 255, steps=2, **kwargs),
        "EroSeg": EroSeg(model, eps=4 / 255, steps=2, **kwargs),
        "APGD": APGD(model, eps=4 / 255, steps=2, **kwargs),
        "ReliableEnsemble": ReliableEnsemble(model, eps=4 / 255, steps=2, **kwargs),
        "RainAttack": RainAttack(model, ranges=RAIN_SMALL, steps=2, eps=4 / 255, **kwargs),
    }


ALL = ["NAA", "AMA", "SegPGD", "CosPGD", "EroSeg", "APGD", "ReliableEnsemble", "RainAttack"]


# ----------------------------------------------------------------------------- NaN logits


@pytest.mark.parametrize("ignored", [False, True], ids=["valid-pixel", "ignored-pixel"])
@pytest.mark.parametrize("name", ALL)
def test_nan_logits_at_one_pixel_are_rejected(name, ignored):
    images, masks = make_blobs(2, 8, seed=0)
    if ignored:  # a NaN where the loss looks away is still a broken model
        masks[:, 0, 0] = 255
    attack = _attacks(NaNAtOnePixel())[name]
    with pytest.raises(NonFiniteLogitsError, match=rf"{type(attack).__name__}\b.*: the logits .* NaN or infinite"):
        attack(images, masks)


@pytest.mark.parametrize("name", ["NAA", "APGD", "ReliableEnsemble"])
def test_nan_logits_warn_and_mark_on_request(name):
    images, masks = make_blobs(2, 8, seed=0)
    attack = _attacks(NaNAtOnePixel(), nonfinite="warn")[name]
    with pytest.warns(RuntimeWarning, match="logits .* NaN or infinite"):
        _, stats = attack(images, masks, return_stats=True)
    assert stats.nonfinite_gradient.tolist() == [True, True]


def test_nan_logits_are_rejected_by_seg_multi_attack_and_without_masks():
    images, masks = make_blobs(2, 8, seed=0)
    model = NaNAtOnePixel()
    with pytest.raises(NonFiniteGradientError):
        SegMultiAttack([NAA(model, steps=1), SegPGD(model, steps=1)])(images, masks)
    with pytest.raises(NonFiniteLogitsError, match="clean images"):
        NAA(model, steps=1)(images)  # masks=None: the model's own prediction would be garbage


def test_art_counterparts_reject_nan_logits():
    sart = pytest.importorskip("segrobust.art")
    estimator = sart.PyTorchSegmenter(NaNAtOnePixel(), input_shape=(3, 8, 8), nb_classes=NUM_CLASSES)
    images, masks = make_blobs(2, 8, seed=0)
    for attack in (sart.NAA(estimator, steps=2), sart.APGD(estimator, steps=2)):
        with pytest.raises(NonFiniteLogitsError):
            attack.generate(images.numpy(), masks.numpy())


# ----------------------------------------------------------------------------- arguments


def test_reliable_needs_at_least_one_step():
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, "):
        ReliableEnsemble(_conv(), steps=0)


@pytest.mark.parametrize("value", ["no", "False", 1, 0, None, 1.0])
def test_booleans_are_strict(value):
    model = _conv()
    with pytest.raises(TypeError, match="early_stop must be True or False"):
        ReliableEnsemble(model, early_stop=value)
    for build in (NAA, SegPGD, EroSeg, APGD, ReliableEnsemble):
        with pytest.raises(TypeError, match="random_start must be True or False"):
            build(model, random_start=value)
    with pytest.raises(TypeError, match="random_start must be True or False"):
        RainAttack(model, random_start=value)
    assert check_bool(True, "flag") is True


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_radius_schedule_must_be_finite(bad):
    for schedule in ([(bad, 0.5), (1.0, 0.5)], [(2.0, bad), (1.0, 0.5)]):
        with pytest.raises(ValueError, match="radius_schedule must hold finite numbers"):
            APGD(_conv(), radius_schedule=schedule)
        with pytest.raises(ValueError, match="radius_schedule"):
            ReliableEnsemble(_conv(), radius_schedule=schedule)


@pytest.mark.parametrize(
    "loss, error, message",
    [
        (lambda logits, labels, valid, step, steps: labels, TypeError, "loss must return floating-point"),
        (lambda logits, labels, valid, step, steps: 1.0, TypeError, "loss must return a tensor"),
        (lambda logits, labels, valid, step, steps: logits, ValueError, "loss must return per-pixel losses"),
    ],
    ids=["int-tensor", "python-float", "wrong-shape"],
)
def test_a_callable_loss_with_a_bad_result_is_named(loss, error, message):
    images, masks = make_blobs(2, 8, seed=0)
    with pytest.raises(error, match=message):
        APGD(_conv(), steps=2, loss=loss)(images, masks)


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.detach())


class NoGradInside(Detached):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.conv(x)


class IntegerLogits(Detached):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) * 10).long()


@pytest.mark.parametrize("model_class", [Detached, NoGradInside], ids=["detached", "no-grad"])
@pytest.mark.parametrize("name", ALL)
def test_a_model_without_input_gradient_gets_a_clear_error(name, model_class):
    images, masks = make_blobs(2, 8, seed=0)
    with pytest.raises(ValueError, match="no gradient with respect to the input images"):
        _attacks(model_class())[name](images, masks)


@pytest.mark.parametrize("name", ALL)
def test_integer_logits_get_a_clear_error(name):
    images, masks = make_blobs(2, 8, seed=0)
    with pytest.raises(TypeError, match=r"logits of dtype torch\.int64; expected floating-point"):
        _attacks(IntegerLogits())[name](images, masks)


def test_absurd_steps_are_refused_before_any_allocation():
    model = _conv()
    for build in (NAA, AMA, SegPGD, CosPGD, EroSeg, APGD, ReliableEnsemble):
        with pytest.raises(ValueError, match="MAX_STEPS"):
            build(model, steps=1_000_000_000)
    with pytest.raises(ValueError, match="MAX_STEPS"):
        RainAttack(model, steps=1_000_000_000)
    assert check_steps(MAX_STEPS) == MAX_STEPS
    with pytest.raises(TypeError, match="steps must be an int"):
        NAA(model, steps=10.0)


def test_art_counterparts_share_the_checks():
    sart = pytest.importorskip("segrobust.art")
    estimator = sart.PyTorchSegmenter(_conv(), input_shape=(3, 8, 8), nb_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="MAX_STEPS"):
        sart.APGD(estimator, steps=1_000_000_000)
    with pytest.raises(TypeError, match="random_start must be True or False"):
        sart.NAA(estimator, random_start="no")
