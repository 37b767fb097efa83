"""Attacks never report a broken run as robustness, and run wherever users call them.

Non-finite gradients, no_grad / inference_mode callers, images in another dtype
than the model, ensembles (SegMultiAttack, stock torchattacks.MultiAttack), and
the same API with and without torchattacks installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import NUM_CLASSES, TinySegNet, make_blobs
from torch import nn

from segrobust.attacks import (
    AMA,
    NAA,
    TORCHATTACKS_AVAILABLE,
    CosPGD,
    EroSeg,
    NonFiniteGradientError,
    RainAttack,
    SegMultiAttack,
    SegPGD,
)
from segrobust.attacks import functional as AF

LINF_ATTACKS = [NAA, AMA, SegPGD, CosPGD, EroSeg]
RAIN_SMALL = {"length": (3.0, 6.0), "num_layers": 1}
ROOT = Path(__file__).resolve().parents[1]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinySegNet().eval()


def _batch(n: int = 2, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    return make_blobs(n, size, seed=3)


def _build(cls, model: nn.Module, **kwargs):
    if cls is RainAttack:
        return RainAttack(model, ranges=RAIN_SMALL, steps=2, eps=4 / 255, **kwargs)
    return cls(model, eps=4 / 255, alpha=1 / 255, steps=2, **kwargs)


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a model whose input gradient is broken."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class NaNGradientNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(NaNGradient.apply(x))


# ----------------------------------------------------------------------------- item 5: NaN gradients


@pytest.mark.parametrize("cls", [*LINF_ATTACKS, RainAttack])
def test_nonfinite_gradient_raises_naming_attack_and_step(cls):
    images, masks = _batch()
    with pytest.raises(NonFiniteGradientError, match=rf"{cls.__name__}: the gradient at step 1 of 2"):
        _build(cls, NaNGradientNet())(images, masks)


@pytest.mark.parametrize("cls", [NAA, RainAttack])
def test_nonfinite_gradient_warns_and_marks_stats_on_request(cls):
    images, masks = _batch()
    attack = _build(cls, NaNGradientNet(), nonfinite="warn")
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        _, stats = attack(images, masks, return_stats=True)
    assert stats.nonfinite_gradient.tolist() == [True, True]
    _, clean_stats = _build(cls, _model())(images, masks, return_stats=True)
    assert clean_stats.nonfinite_gradient.tolist() == [False, False]


def test_nonfinite_policy_is_validated():
    with pytest.raises(ValueError, match="nonfinite"):
        NAA(_model(), nonfinite="ignore")


# ----------------------------------------------------------------------------- item 12: no_grad / inference_mode


@pytest.mark.parametrize("cls", [*LINF_ATTACKS, RainAttack])
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_attacks_work_under_no_grad_and_inference_mode(cls, context):
    model = _model()
    images, masks = _batch()
    torch.manual_seed(0)
    reference = _build(cls, model)(images, masks)
    with context():
        inner_images, inner_masks = images.clone(), masks.clone()  # inference tensors under inference_mode
        torch.manual_seed(0)
        adv = _build(cls, model)(inner_images, inner_masks)
    torch.testing.assert_close(adv, reference, rtol=0, atol=1e-6)
    assert not (adv - images).abs().max() == 0


# ----------------------------------------------------------------------------- item 13: dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [NAA, RainAttack])
def test_half_images_are_attacked_in_float32_and_rounded_into_the_ball(cls, dtype):
    model = _model()
    images, masks = _batch()
    images = images.to(dtype)
    torch.manual_seed(0)
    in_float32 = _build(cls, model)(images.float(), masks)
    torch.manual_seed(0)
    adv = _build(cls, model)(images, masks)
    expected = AF.cast_into_ball(in_float32, images, 4 / 255) if cls is NAA else in_float32.to(dtype)
    assert adv.dtype == dtype and torch.equal(adv, expected)


# ----------------------------------------------------------------------------- item 14: ensembles


def test_seg_multi_attack_rejects_empty_and_mixed_models():
    with pytest.raises(ValueError, match="non-empty list"):
        SegMultiAttack([])
    with pytest.raises(ValueError, match="same model"):
        SegMultiAttack([NAA(_model()), NAA(_model())])
    with pytest.raises(TypeError, match="SegAttack"):
        SegMultiAttack([object()])


def test_seg_multi_attack_accepts_a_single_attack():
    model = _model()
    images, masks = _batch()
    torch.manual_seed(0)
    alone = NAA(model, eps=4 / 255, steps=2)(images, masks)
    torch.manual_seed(0)
    worst = SegMultiAttack([NAA(model, eps=4 / 255, steps=2)])(images, masks)
    torch.testing.assert_close(worst, alone, rtol=0, atol=0)


def test_stock_torchattacks_multiattack_points_to_seg_multi_attack():
    torchattacks = pytest.importorskip("torchattacks")
    model = _model()
    images, masks = _batch()
    multi = torchattacks.MultiAttack([NAA(model, steps=1), SegPGD(model, steps=1)])
    with pytest.raises(TypeError, match=r"use segrobust\.attacks\.SegMultiAttack"):
        multi(images, masks)


# ----------------------------------------------------------------------------- Part 3: with and without torchattacks

_WITHOUT_TORCHATTACKS = textwrap.dedent(
    """
    import sys
    sys.modules["torchattacks"] = None  # import torchattacks now raises ImportError
    import torch
    from torch import nn
    from segrobust.attacks import NAA, SegPGD, RainAttack, SegMultiAttack, TORCHATTACKS_AVAILABLE
    from segrobust.attacks.attack_api import StandaloneAttack

    assert not TORCHATTACKS_AVAILABLE
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).train()
    images, masks = torch.rand(2, 3, 12, 12), torch.randint(0, 4, (2, 12, 12))
    naa = NAA(model, eps=4 / 255, steps=2)
    assert isinstance(naa, StandaloneAttack) and naa.device == torch.device("cpu")
    adv = naa(images, masks)
    assert adv.shape == images.shape and float((adv - images).abs().max()) <= 4 / 255 + 1e-6
    assert model.training  # mode restored
    multi = SegMultiAttack([NAA(model, steps=1), SegPGD(model, steps=1)])
    multi.set_normalization_used(mean=[0.5] * 3, std=[0.25] * 3)
    assert all(a.normalization_used is not None for a in multi.attacks)
    worst = multi((images - 0.5) / 0.25, masks)
    assert worst.shape == images.shape
    multi.set_model_training_mode(model_training=True)
    assert all(a._model_training for a in multi.attacks)
    naa.set_mode_targeted_by_label(quiet=True)
    assert naa.targeted and naa.get_mode() == "targeted(label)"
    naa(images, masks)
    naa.set_mode_targeted_random(quiet=True)
    naa(images, masks)
    naa.set_mode_default()
    assert not naa.targeted
    RainAttack(model, ranges={"num_layers": 1}, steps=1)(images, masks)
    assert "NAA(" in repr(naa)
    print("standalone ok")
    """
)


def test_attacks_keep_their_api_without_torchattacks():
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TORCHATTACKS], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "standalone ok" in result.stdout


def test_attacks_are_torchattacks_attacks_when_installed():
    torchattacks = pytest.importorskip("torchattacks")
    assert TORCHATTACKS_AVAILABLE
    model = _model()
    for attack in (NAA(model), RainAttack(model), SegMultiAttack([NAA(model), EroSeg(model)])):
        assert isinstance(attack, torchattacks.attack.Attack)
    assert isinstance(SegMultiAttack([NAA(model)]), torchattacks.MultiAttack)


def test_rain_attack_is_re_entrant_and_keeps_no_per_call_state():
    model = _model()
    images, masks = _batch()
    attack = RainAttack(model, ranges=RAIN_SMALL, steps=1)
    before = set(vars(attack))
    attack(images, masks, depth=torch.full((1, 1, 12, 12), 10.0), return_params=True)
    assert set(vars(attack)) == before
    assert attack.eps == 0 and NUM_CLASSES > 1
