"""The ε promise in every dtype: any model dtype × any image dtype, exact bounds in the returned dtype.

The iterate, the step and the projection stay in the images' dtype (float32
arithmetic for float16/bfloat16 images); only the model's forward casts. So
``(x_adv.double() - x.double()).abs().max() <= eps`` and ``0 <= x_adv <= 1``
hold exactly (no tolerance) for every attack, the ensemble, the pixel part of
the rain attack, SegMultiAttack and the ART counterparts.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from conftest import NUM_CLASSES, make_blobs
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from segrobust.attacks import (
    AMA,
    APGD,
    NAA,
    CosPGD,
    EroSeg,
    RainAttack,
    ReliableEnsemble,
    SegMultiAttack,
    SegPGD,
)
from segrobust.attacks import functional as AF
from segrobust.rain import render_rain

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
EPS = [1 / 255, 4 / 255, 8 / 255, 0.1]


class DtypeRecorder(nn.Module):
    """A tiny segmenter that records the dtype of every input it sees."""

    def __init__(self, dtype: torch.dtype, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1)).to(dtype)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.dtype)
        return self.body(x)


def _attack(name: str, model: nn.Module, eps: float):
    if name == "APGD":
        return APGD(model, eps=eps, steps=3, radius_schedule="sea")
    if name == "ReliableEnsemble":
        return ReliableEnsemble(model, eps=eps, steps=2, losses=("masked_ce", "js"))
    if name == "SegMultiAttack":
        return SegMultiAttack([NAA(model, eps=eps, steps=2), CosPGD(model, eps=eps, steps=2)])
    cls = {"NAA": NAA, "AMA": AMA, "SegPGD": SegPGD, "CosPGD": CosPGD, "EroSeg": EroSeg}[name]
    return cls(model, eps=eps, steps=3)


ATTACK_NAMES = ["NAA", "AMA", "SegPGD", "CosPGD", "EroSeg", "APGD", "ReliableEnsemble", "SegMultiAttack"]


def _assert_in_ball(adv: torch.Tensor, images: torch.Tensor, eps: float) -> None:
    assert adv.dtype == images.dtype and adv.shape == images.shape
    assert bool(torch.isfinite(adv).all())
    distance = float((adv.double() - images.double()).abs().max())
    assert distance <= eps, f"{distance * 255:.4f}/255 > {eps * 255:.4f}/255"
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


@pytest.mark.parametrize("name", ATTACK_NAMES)
@given(
    model_dtype=st.sampled_from(DTYPES),
    image_dtype=st.sampled_from(DTYPES),
    eps=st.sampled_from(EPS),
    seed=st.integers(0, 100),
)
@settings(max_examples=8, deadline=None)
def test_eps_promise_is_exact_for_every_model_and_image_dtype(name, model_dtype, image_dtype, eps, seed):
    model = DtypeRecorder(model_dtype, seed % 3).eval()
    images, masks = make_blobs(2, 8, seed=seed)
    images = images.to(image_dtype)
    torch.manual_seed(seed)
    adv = _attack(name, model, eps)(images, masks)
    _assert_in_ball(adv, images, eps)
    assert set(model.seen) == {model_dtype}, "only the forward casts, to the model's dtype"


@given(model_dtype=st.sampled_from(DTYPES), image_dtype=st.sampled_from(DTYPES), seed=st.integers(0, 100))
@settings(max_examples=10, deadline=None)
def test_rain_attack_pixel_part_is_exact_and_any_model_dtype_works(model_dtype, image_dtype, seed):
    model = DtypeRecorder(model_dtype, seed % 3).eval()
    images, masks = make_blobs(2, 8, seed=seed)
    images = images.to(image_dtype)
    eps = 4 / 255
    torch.manual_seed(seed)
    attack = RainAttack(model, ranges={"length": (2.0, 4.0), "num_layers": 1}, steps=2, eps=eps)
    adv, params = attack(images, masks, return_params=True)
    assert adv.dtype == image_dtype and bool(torch.isfinite(adv).all())
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert set(model.seen) == {model_dtype}
    if image_dtype in (torch.float32, torch.float64):
        # the rain is rendered in the images' dtype: the pixel part lies exactly in the eps ball around it
        rain_only = render_rain(images, params)
        assert float((adv.double() - rain_only.double()).abs().max()) <= eps


@pytest.mark.parametrize("model_dtype", DTYPES)
def test_art_counterparts_work_with_every_model_dtype(model_dtype):
    sart = pytest.importorskip("segrobust.art")
    model = DtypeRecorder(model_dtype).eval()
    estimator = sart.PyTorchSegmenter(model, input_shape=(3, 8, 8), nb_classes=NUM_CLASSES)
    images, masks = make_blobs(2, 8, seed=4)
    eps = 4 / 255
    for attack in (sart.NAA(estimator, eps=eps, steps=2), sart.APGD(estimator, eps=eps, steps=3)):
        torch.manual_seed(0)
        adv = torch.from_numpy(attack.generate(images.numpy(), masks.numpy()))
        _assert_in_ball(adv, images, eps)


def _exact(values: torch.Tensor) -> list[Fraction]:
    # float64 differences round near eps = 1 (1 - 1.1e-16 == 0.9999999999999999): compare as exact rationals
    return [Fraction(v) for v in values.double().tolist()]


@given(dtype=st.sampled_from(DTYPES), eps=st.floats(1e-4, 1.0), seed=st.integers(0, 10_000))
@example(dtype=torch.bfloat16, eps=0.9999999999999999, seed=340)  # a bound of 1.1e-16 found by CI
@settings(max_examples=40, deadline=None)
def test_linf_bounds_are_exact_and_within_one_value_of_the_ball(dtype, eps, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(64, generator=g).to(dtype)
    low, high = AF.linf_bounds(images, eps)
    assert low.dtype == high.dtype == dtype
    x, lo, hi, e = _exact(images), _exact(low), _exact(high), Fraction(eps)
    assert all(h - v <= e and v - lo_ <= e for v, lo_, h in zip(x, lo, hi))
    assert all(0 <= lo_ <= v <= h <= 1 for v, lo_, h in zip(x, lo, hi))
    if dtype == torch.float64:
        return  # float64 bounds are rounded at their own resolution: nothing tighter to check
    # at most one representable value inside the exact bound: two steps outwards leave the ball (or [0, 1])
    above = torch.nextafter(torch.nextafter(high, torch.full_like(high, 2.0)), torch.full_like(high, 2.0))
    below = torch.nextafter(torch.nextafter(low, torch.full_like(low, -1.0)), torch.full_like(low, -1.0))
    assert all(a - v > e or a > 1 for v, a in zip(x, _exact(above)))
    assert all(v - b > e or b < 0 for v, b in zip(x, _exact(below)))
