"""RainAttack: adversarial rain parameters, optionally with an L∞ pixel perturbation."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NUM_CLASSES, PixelwiseNet, TinySegNet, make_blobs, train_segmenter
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

from segrobust.attacks import NAA, RainAttack, SegAttack, SegMultiAttack
from segrobust.metrics import ConfusionMatrix, per_image_pixel_accuracy
from segrobust.rain import (
    CONTINUOUS_RAIN_PARAMS,
    RAIN_PARAM_KEYS,
    RandomRainStreaks,
    render_rain,
    resolve_rain_ranges,
    sample_rain_params,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# Ranges scaled to 16..32 pixel images: the presets' streak lengths are for 360x480.
SMALL = {
    "intensity": (0.6, 1.2),
    "density": (0.01, 0.03),
    "angle": (-25.0, 25.0),
    "length": (4.0, 10.0),
    "width": (0.4, 0.8),
    "fog_density": (0.0, 0.01),
    "attenuation": (0.0, 0.01),
    "atmospheric_light": (0.6, 0.9),
    "num_layers": 2,
    "angle_spread": 5.0,
}
SMALL_ONE_LAYER = {**SMALL, "num_layers": 1, "angle_spread": 0.0}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinySegNet().eval()


def _batch(seed: int, n: int = 2, size: int = 16, ignore_frac: float = 0.25):
    images, masks = make_blobs(n, size, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    masks = masks.clone()
    masks[torch.rand(masks.shape, generator=g) < ignore_frac] = 255
    return images, masks


def _assert_inside_ranges(params: dict, ranges: dict, tol: float = 1e-5) -> None:
    resolved = resolve_rain_ranges(ranges)
    for key in CONTINUOUS_RAIN_PARAMS:
        low, high = resolved[key]
        spread = resolved["angle_spread"] if key == "angle" else 0.0
        value = params[key]
        assert value.min() >= low - spread - tol and value.max() <= high + spread + tol, key
    # every layer's angle is the image's angle ± spread: layers differ by at most 2·spread
    angle = params["angle"]
    assert (angle.max(1).values - angle.min(1).values).max() <= 2 * resolved["angle_spread"] + tol


def _miou(model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    matrix = ConfusionMatrix(NUM_CLASSES)
    with torch.no_grad():
        matrix.update(model(images), masks)
    return float(matrix.compute().miou)


# ----------------------------------------------------------------------------- properties


@given(
    seed=st.integers(0, 1000),
    pixel_eps=st.sampled_from([0.0, 2 / 255, 8 / 255]),
    random_start=st.booleans(),
    ranges=st.sampled_from([SMALL, SMALL_ONE_LAYER, "fog_only"]),
)
@settings(max_examples=8, deadline=None)
def test_bounds_ranges_determinism_and_no_side_effects(seed, pixel_eps, random_start, ranges):
    model = _model(seed % 3)
    model.train()
    model.body[1].eval()  # a frozen BatchNorm inside a model in training mode must stay as it is
    state = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    images, masks = _batch(seed)
    images_copy, masks_copy = images.clone(), masks.clone()

    attack = RainAttack(model, ranges=ranges, steps=2, eps=pixel_eps, random_start=random_start)
    torch.manual_seed(seed)
    adv, params = attack(images, masks, return_params=True)
    torch.manual_seed(seed)
    adv_again, params_again = attack(images, masks, return_params=True)

    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv, adv_again)
    assert sorted(params) == sorted(RAIN_PARAM_KEYS)
    assert all(torch.equal(params[key], params_again[key]) for key in params)
    _assert_inside_ranges(params, ranges)
    # the returned image is the returned rain plus at most pixel_eps
    rain_only = render_rain(images, params)
    assert (adv.double() - rain_only.double()).abs().max() <= pixel_eps  # exact, no tolerance
    if pixel_eps == 0:
        torch.testing.assert_close(adv, rain_only, atol=1e-6, rtol=0)
    assert torch.equal(images, images_copy) and torch.equal(masks, masks_copy)
    assert [m.training for m in model.modules()] == flags
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_init_params_are_kept_projected_and_replayed():
    model = _model()
    images, masks = _batch(3)
    draw = sample_rain_params(2, (16, 16), SMALL, generator=torch.Generator().manual_seed(0))
    draw_copy = {key: value.clone() for key, value in draw.items()}
    adv, params = RainAttack(model, ranges=SMALL, steps=0)(images, masks, init_params=draw, return_params=True)
    for key in RAIN_PARAM_KEYS:
        torch.testing.assert_close(params[key], draw[key], atol=1e-5, rtol=0)
        assert torch.equal(draw[key], draw_copy[key])  # not modified in place
    torch.testing.assert_close(adv, render_rain(images, draw), atol=1e-5, rtol=0)

    _, params = RainAttack(model, ranges=SMALL, steps=3)(images, masks, init_params=draw, return_params=True)
    assert torch.equal(params["noise"], draw["noise"])  # the drops stay where they were drawn

    # a draw from other ranges (three layers of long streaks) is projected into the feasible set
    heavy = sample_rain_params(2, (16, 16), "heavy", generator=torch.Generator().manual_seed(1))
    _, params = RainAttack(model, ranges=SMALL, steps=1)(images, masks, init_params=heavy, return_params=True)
    _assert_inside_ranges(params, SMALL)
    assert params["noise"].shape == (2, 3, 16, 16)

    # the kornia augmentation's recorded draw works too (extra kornia keys are ignored)
    augmentation = RandomRainStreaks(**SMALL, p=1.0)
    rainy = augmentation(images)
    adv = RainAttack(model, ranges=SMALL, steps=0)(images, masks, init_params=augmentation._params)
    torch.testing.assert_close(adv, rainy, atol=1e-5, rtol=0)


def test_only_attack_keys_move_and_empty_keys_give_random_rain(trained_tiny, blobs_test):
    images, masks = blobs_test
    images, masks = images[:4], masks[:4]
    draw = sample_rain_params(4, (32, 32), SMALL, generator=torch.Generator().manual_seed(2))
    attack = RainAttack(trained_tiny, ranges=SMALL, steps=3, attack_keys=("intensity", "fog_density"))
    _, params = attack(images, masks, init_params=draw, return_params=True)
    for key in RAIN_PARAM_KEYS:
        if key in ("intensity", "fog_density"):
            assert not torch.equal(params[key], draw[key]), key
        else:
            torch.testing.assert_close(params[key], draw[key], atol=1e-5, rtol=0)
    # nothing to optimise: the attack renders the start draw (random rain from the ranges)
    adv = RainAttack(trained_tiny, ranges=SMALL, steps=3, attack_keys=())(images, masks, init_params=draw)
    torch.testing.assert_close(adv, render_rain(images, draw), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def trained_pixelwise():
    """A 1x1-convolution model: each output pixel sees only its own input pixel."""
    torch.manual_seed(0)
    images, masks = make_blobs(16, 16, seed=0)
    return train_segmenter(PixelwiseNet(), images, masks, steps=60, lr=0.03)


def test_ignored_pixels_have_no_influence(trained_pixelwise):
    model = trained_pixelwise
    images, masks = _batch(5, ignore_frac=0.4)
    ignored = masks == 255
    attack = RainAttack(model, ranges=SMALL, steps=3, eps=8 / 255, random_start=False)
    torch.manual_seed(0)
    adv, params = attack(images, masks, return_params=True)
    # a pixelwise model gives ignored pixels a zero gradient: δ stays 0 there
    delta = (adv - render_rain(images, params)).abs().amax(1)
    assert torch.equal(delta[ignored], torch.zeros(int(ignored.sum())))
    assert delta[~ignored].max() > 0
    # the result does not depend on which id marks them
    remapped = RainAttack(model, ranges=SMALL, steps=3, eps=8 / 255, random_start=False, ignore_index=254)
    torch.manual_seed(0)
    assert torch.equal(remapped(images, torch.where(ignored, 254, masks)), adv)
    # nor on what the image holds there: the rain and the valid pixels come out the same
    other = torch.where(ignored.unsqueeze(1), torch.rand_like(images), images)
    torch.manual_seed(0)
    adv_other, params_other = attack(other, masks, return_params=True)
    assert all(torch.equal(params_other[key], params[key]) for key in params)
    valid = (~ignored).unsqueeze(1).expand_as(adv)
    assert torch.equal(adv_other[valid], adv[valid])


def test_batch_without_valid_pixel_gives_zero_step_not_nan():
    images = torch.rand(2, 3, 16, 16)
    masks = torch.full((2, 16, 16), 255)
    attack = RainAttack(_model(), ranges=SMALL, steps=3, eps=4 / 255, random_start=False)
    adv, stats, params = attack(images, masks, return_stats=True, return_params=True)
    assert torch.isfinite(stats.loss).all()
    resolved = resolve_rain_ranges(SMALL)
    for key in CONTINUOUS_RAIN_PARAMS:  # never moved from the middle of the ranges
        torch.testing.assert_close(params[key], torch.full_like(params[key], sum(resolved[key]) / 2))
    assert torch.equal(adv, render_rain(images, params))


def test_returns_best_iterate_and_its_rain(trained_tiny, blobs_test):
    images, masks = blobs_test
    torch.manual_seed(0)
    # whole-range steps make iterates jump between corners, so the last one is often not the best
    attack = RainAttack(trained_tiny, ranges=SMALL_ONE_LAYER, steps=4, param_step=1.0)
    adv, stats, params = attack(images, masks, return_stats=True, return_params=True)
    assert stats.loss.shape == stats.pixel_accuracy.shape == (5, images.shape[0])
    with torch.no_grad():
        returned = per_image_pixel_accuracy(trained_tiny(adv), masks)
        replayed = per_image_pixel_accuracy(trained_tiny(render_rain(images, params)), masks)
    torch.testing.assert_close(returned, stats.pixel_accuracy.min(0).values)
    torch.testing.assert_close(replayed, returned)


# ----------------------------------------------------------------------------- strength


def test_rain_attack_beats_random_rain_and_rain_plus_pixels_beats_both(trained_tiny, blobs_test):
    images, masks = blobs_test
    n, size = images.shape[0], tuple(images.shape[-2:])
    random_rain = [
        _miou(trained_tiny, render_rain(images, sample_rain_params(n, size, SMALL_ONE_LAYER, generator=g)), masks)
        for g in (torch.Generator().manual_seed(seed) for seed in range(4))
    ]
    torch.manual_seed(0)
    rain = _miou(trained_tiny, RainAttack(trained_tiny, ranges=SMALL_ONE_LAYER, steps=5)(images, masks), masks)
    eps = 4 / 255
    torch.manual_seed(0)
    joint = RainAttack(trained_tiny, ranges=SMALL_ONE_LAYER, steps=5, eps=eps)(images, masks)
    joint = _miou(trained_tiny, joint, masks)
    torch.manual_seed(0)
    pixels = _miou(trained_tiny, NAA(trained_tiny, eps=eps, alpha=None, steps=5)(images, masks), masks)
    torch.manual_seed(0)
    random_rain_and_pixels = RainAttack(trained_tiny, ranges=SMALL_ONE_LAYER, steps=5, eps=eps, attack_keys=())
    random_rain_and_pixels = _miou(trained_tiny, random_rain_and_pixels(images, masks), masks)
    summary = f"random rain {random_rain}, rain attack {rain}, rain+pixels {joint}, NAA {pixels}, random rain+NAA {random_rain_and_pixels}"
    # measured over 6 model seeds: random 0.48-0.72, attack 0.28-0.44, joint 0.24-0.33, NAA 0.59-0.86
    assert rain < min(random_rain) - 0.1, summary
    assert joint < rain - 0.01, summary
    assert joint < pixels - 0.1, summary
    assert joint < random_rain_and_pixels - 0.1, summary


def test_targeted_mode_descends_the_loss_on_the_target(trained_tiny, blobs_test):
    images, masks = blobs_test
    target = (masks + 1) % NUM_CLASSES
    attack = RainAttack(trained_tiny, ranges=SMALL_ONE_LAYER, steps=4, eps=8 / 255)
    attack.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    adv, stats = attack(images, target, return_stats=True)
    with torch.no_grad():
        before = per_image_pixel_accuracy(trained_tiny(images), target).mean()
        after = per_image_pixel_accuracy(trained_tiny(adv), target).mean()
    assert after > before + 0.02
    assert stats.loss[-1].mean() < stats.loss[0].mean()
    torch.testing.assert_close(stats.pixel_accuracy.max(0).values, per_image_pixel_accuracy(trained_tiny(adv), target))


# ----------------------------------------------------------------------------- conventions


def test_depth_is_used_and_replayable():
    model = _model()
    images, masks = _batch(4)
    depth = torch.linspace(5.0, 100.0, 16).view(1, 1, 16, 1).expand(1, 1, 16, 16)
    attack = RainAttack(model, ranges=SMALL, steps=2)
    torch.manual_seed(0)
    adv, params = attack(images, masks, depth=depth, return_params=True)
    torch.testing.assert_close(adv, render_rain(images, params, depth), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    assert not torch.equal(attack(images, masks), adv)  # the ground-plane prior gives other rain
    with pytest.raises(ValueError, match="depth"):
        attack(images, masks, depth=torch.ones(1, 1, 8, 8))
    with pytest.raises(TypeError, match="depth"):
        attack(images, masks, depth=[[1.0]])


def test_normalization_contract_matches_torchattacks():
    model = _model()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    shift, scale = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    class Normalised(nn.Module):
        def forward(self, x):
            return model((x - shift) / scale)

    images, masks = _batch(2)
    torch.manual_seed(0)
    reference = RainAttack(Normalised(), ranges=SMALL, steps=2, eps=4 / 255)(images, masks)
    attack = RainAttack(model, ranges=SMALL, steps=2, eps=4 / 255)
    attack.set_normalization_used(mean, std)
    torch.manual_seed(0)
    back = attack((images - shift) / scale, masks) * scale + shift
    torch.testing.assert_close(back, reference, atol=1e-5, rtol=0)


def test_works_under_no_grad_in_multi_attack_and_as_torchattacks_attack(trained_tiny, blobs_test):
    torchattacks = pytest.importorskip("torchattacks")

    images, masks = blobs_test
    attack = RainAttack(trained_tiny, ranges=SMALL_ONE_LAYER, steps=2)
    assert isinstance(attack, SegAttack) and isinstance(attack, torchattacks.attack.Attack)
    assert "RainAttack" in repr(attack)
    torch.manual_seed(0)
    with torch.no_grad():
        adv = attack(images, masks)
    torch.manual_seed(0)
    assert torch.equal(adv, attack(images, masks))
    worst = SegMultiAttack([attack, NAA(trained_tiny, eps=4 / 255, steps=2)])(images, masks)
    assert worst.shape == images.shape
    assert attack.eps == 0 and RainAttack(trained_tiny, eps=4 / 255).eps == 4 / 255


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ranges": "drizzle"}, ValueError, "preset"),
        ({"ranges": {"intensity": (0.0, 9.0)}}, ValueError, "bounds"),
        ({"ranges": {"rainbow": 1.0}}, ValueError, "unknown keys"),
        ({"attack_keys": ("noise",)}, ValueError, "noise"),
        ({"attack_keys": "intensity"}, TypeError, "attack_keys"),
        ({"param_step": 0.0}, ValueError, "param_step"),
        ({"param_step": 2.0}, ValueError, "param_step"),
        ({"eps": -0.1}, ValueError, "eps"),
        ({"eps": 2.0}, ValueError, "eps"),
        ({"alpha": 0.0}, ValueError, "alpha"),
        ({"steps": -1}, ValueError, "steps"),
        ({"depth_prior": {"horizon": 2.0}}, ValueError, "horizon"),
        ({"depth_prior": {"altitude": 2.0}}, ValueError, "depth_prior"),
        ({"edge_softness": 0.0}, ValueError, "edge_softness"),
        ({"ignore_index": 2.5}, TypeError, "ignore_index"),
    ],
)
def test_bad_arguments_give_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        RainAttack(_model(), **kwargs)


def test_bad_call_inputs_give_clear_error():
    attack = RainAttack(_model(), ranges=SMALL, steps=1)
    images, masks = _batch(0)
    draw = sample_rain_params(2, (16, 16), SMALL)
    with pytest.raises(ValueError, match="missing"):
        attack(images, masks, init_params={"intensity": torch.ones(2)})
    with pytest.raises(ValueError, match="noise"):
        attack(images, masks, init_params={**draw, "noise": torch.rand(2, 2, 8, 8)})
    with pytest.raises(ValueError, match="length"):
        attack(images, masks, init_params={**draw, "length": torch.ones(3, 5)})
    with pytest.raises(TypeError, match="init_params"):
        attack(images, masks, init_params=[1.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(images * 3, masks)
    with pytest.raises(ValueError, match="class ids"):
        attack(images, torch.full_like(masks, 9))


# ----------------------------------------------------------------------------- gallery


def test_gallery_example_adds_the_adversarial_rain_column(tmp_path):
    out = tmp_path / "gallery.png"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "rain_gallery.py"), "--fast", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "adversarial rain" in result.stdout
    with Image.open(out) as picture:
        # six 96-pixel columns with 4-pixel gaps
        assert picture.width == 6 * 96 + 5 * 4
