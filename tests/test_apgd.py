"""APGD for segmentation: checkpoints, the halving rule, the attack contract, strength, ART twin."""

from __future__ import annotations

import copy
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import NUM_CLASSES, PixelwiseNet, TinySegNet, make_blobs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segrobust.attacks import APGD, APGDStep, NonFiniteGradientError, SegAttack
from segrobust.attacks import functional as AF
from segrobust.attacks.apgd import apgd_checkpoints, apgd_should_halve, radius_stages
from segrobust.losses import PIXEL_LOSSES, make_pixel_loss
from segrobust.metrics import ConfusionMatrix, per_image_pixel_accuracy

LOSSES = sorted(PIXEL_LOSSES)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinySegNet(width=8).eval()


def _batch(seed: int, n: int = 2, size: int = 10, ignore_frac: float = 0.25):
    images, masks = make_blobs(n, size, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    masks = masks.clone()
    masks[torch.rand(masks.shape, generator=g) < ignore_frac] = 255
    return images, masks


def _miou(model, images, masks):
    matrix = ConfusionMatrix(NUM_CLASSES)
    with torch.no_grad():
        matrix.update(model(images), masks)
    return matrix.compute().miou


# ---------------------------------------------------------------------------- pure functions
def _checkpoints_exact(steps: int) -> list[int]:
    """The recursion in exact arithmetic: p0 = 0, p1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * steps) for q in p if q <= 1 and math.ceil(q * steps) <= steps})


@pytest.mark.parametrize("steps", [0, 1, 5, 10, 37, 50, 100, 300, 1000])
def test_checkpoints_equal_the_formula(steps):
    assert apgd_checkpoints(steps) == _checkpoints_exact(steps)


def test_checkpoints_of_100_steps_match_autoattack_intervals():
    # AutoAttack's APGD checks after 22, 19, 16, 13, 10, 7, 6, 6 iterations for n_iter = 100
    gaps = np.diff(apgd_checkpoints(100)).tolist()
    assert gaps == [22, 19, 16, 13, 10, 7, 6, 6]


def test_halving_rule_on_constructed_loss_histories():
    # 4 steps since the last checkpoint; columns are images
    losses = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0, 5.0],
            [2.0, 2.0, 0.5, 2.0, 4.0],
            [3.0, 3.0, 0.6, 1.0, 3.0],
            [4.0, 2.5, 0.7, 3.0, 2.0],
            [5.0, 2.6, 0.8, 4.0, 1.0],
        ]
    )
    best = torch.tensor([5.0, 3.0, 1.0, 4.0, 5.0])
    best_before = torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0])
    halved = torch.tensor([False, False, False, True, False])
    out = apgd_should_halve(losses, best, best_before, halved)
    # image 0: 4/4 rises; 1: 3/4 = 75 % is not fewer than 75 %; 2: 3/4 rises but the best (1.0)
    # did not improve and it was not halved last time; 3: 3/4 rises, improved; 4: no rise at all
    assert out.tolist() == [False, False, True, False, True]
    # condition 2 is off for an image that was halved at the last checkpoint
    assert apgd_should_halve(losses, best, best_before, torch.ones(5, dtype=torch.bool)).tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert apgd_should_halve(losses, best, best_before, halved, rho=0.5).tolist() == [False, False, True, False, True]
    with pytest.raises(ValueError, match="m >= 1"):
        apgd_should_halve(losses[:1], best, best_before, halved)


def test_radius_stages():
    assert radius_stages("sea", 10) == [(2.0, 3), (1.5, 3), (1.0, 4)]
    assert radius_stages("sea", 3) == [(2.0, 0), (1.5, 0), (1.0, 3)]
    assert radius_stages([(3.0, 0.5), (1.0, 0.5)], 7) == [(3.0, 3), (1.0, 4)]
    for bad in ("large", [(2.0, 1.0)], [(1.0, 0.5)], [(0.5, 0.5), (1.0, 0.5)], [1, 2]):
        with pytest.raises(ValueError, match="radius_schedule"):
            radius_stages(bad, 10)


# ---------------------------------------------------------------------------- attack contract
@given(
    seed=st.integers(0, 1000),
    eps=st.sampled_from([1 / 255, 8 / 255, 0.1]),
    loss=st.sampled_from(LOSSES),
    schedule=st.sampled_from([None, "sea"]),
    random_start=st.booleans(),
)
@settings(max_examples=10, deadline=None)
def test_bounds_determinism_and_no_side_effects(seed, eps, loss, schedule, random_start):
    model = _model(seed % 3)
    model.train()
    model.body[1].eval()
    params = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    images, masks = _batch(seed)
    images_copy, masks_copy = images.clone(), masks.clone()
    attack = APGD(model, eps=eps, steps=5, loss=loss, radius_schedule=schedule, random_start=random_start)
    torch.manual_seed(seed)
    adv, stats = attack(images, masks, return_stats=True)
    torch.manual_seed(seed)
    adv_again = attack(images, masks)
    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert (adv - images).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv, adv_again)
    assert torch.equal(images, images_copy) and torch.equal(masks, masks_copy)
    assert [m.training for m in model.modules()] == flags
    for name, value in model.state_dict().items():
        assert torch.equal(value, params[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert bool(stats.scored[stats.best_step].all()), "only iterates of the eps stage may be returned"


def test_one_forward_and_one_backward_per_iteration_and_stats():
    model = _model()
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(torch.is_grad_enabled()))
    images, masks = _batch(1, n=3)
    steps = 12
    adv, stats = APGD(model, eps=8 / 255, steps=steps, loss="masked_ce", radius_schedule="sea")(
        images, masks, return_stats=True
    )
    assert len(forwards) == steps + 1 and sum(forwards) == steps  # the last iterate is scored without gradient
    assert stats.forward_passes.tolist() == [steps + 1] * 3 and stats.backward_passes.tolist() == [steps] * 3
    for field in ("loss", "pixel_accuracy", "objective", "step_size"):
        assert getattr(stats, field).shape == (steps + 1, 3), field
    assert stats.radius.tolist() == pytest.approx([16 / 255] * 3 + [12 / 255] * 3 + [8 / 255] * 7)
    assert stats.scored.tolist() == [False] * 6 + [True] * 7
    # step sizes start at 2·radius in each stage and only ever halve
    assert stats.step_size[0].tolist() == pytest.approx([32 / 255] * 3)
    assert stats.step_size[6].tolist() == pytest.approx([16 / 255] * 3)
    with torch.no_grad():
        returned = per_image_pixel_accuracy(model(adv), masks)
    torch.testing.assert_close(returned, stats.pixel_accuracy.gather(0, stats.best_step[None])[0])
    torch.testing.assert_close(returned, stats.pixel_accuracy[stats.scored].min(0).values)


def test_step_size_halves_and_restarts_from_best_point():
    # a model whose loss can only go down after the first step: every checkpoint halves the step size
    images, masks = _batch(2, n=2)
    model = PixelwiseNet().eval()
    _, stats = APGD(model, eps=8 / 255, steps=20, random_start=False)(images, masks, return_stats=True)
    eta = stats.step_size[:20]
    ratios = (eta[1:] / eta[:-1]).unique().tolist()
    assert set(ratios) <= {0.5, 1.0}
    changes = {int(t) for t in (eta[1:] != eta[:-1]).nonzero()[:, 0]}  # halved at checkpoint t
    assert changes and changes <= set(apgd_checkpoints(20))


def test_ignored_pixels_have_no_influence():
    torch.manual_seed(0)
    model = PixelwiseNet().eval()
    images, masks = _batch(5, ignore_frac=0.4)
    ignored = masks == 255
    for loss in ("ce", "js", "balanced_masked_ce"):
        adv = APGD(model, eps=8 / 255, steps=4, loss=loss, random_start=False)(images, masks)
        assert torch.equal((adv - images).abs().amax(1)[ignored], torch.zeros(int(ignored.sum())))
        remapped = APGD(model, eps=8 / 255, steps=4, loss=loss, random_start=False, ignore_index=254)
        assert torch.equal(remapped(images, torch.where(ignored, 254, masks)), adv)


def test_gradient_masking_flags():
    images, masks = _batch(3, n=2)

    class Constant(nn.Module):  # ignores its input: zero gradient, the loss never moves
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(NUM_CLASSES))

        def forward(self, x):
            out = x[:, :1] * 0 + self.bias.view(1, -1, 1, 1)
            out = out.clone()
            out[:, 0] += 1.0
            return out

    masks0 = torch.zeros_like(masks)  # every pixel is class 0, which Constant predicts
    adv, stats = APGD(Constant(), eps=8 / 255, steps=6, random_start=False)(images, masks0, return_stats=True)
    assert torch.equal(adv, images)
    assert stats.zero_gradient.all() and stats.loss_never_rose.all() and not stats.nonfinite_gradient.any()

    class LogAtZero(nn.Module):  # NaN gradient where a pixel is exactly 0 (the unused log branch)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, NUM_CLASSES, 1)

        def forward(self, x):
            return self.conv(torch.where(x > 2, x.log(), x))

    torch.manual_seed(0)
    dark = images.clone()
    dark[0, :, :2, :2] = 0.0
    with pytest.raises(NonFiniteGradientError, match=r"APGD.*images \[0\]"):
        APGD(LogAtZero(), eps=8 / 255, steps=4, random_start=False)(dark, masks)
    with pytest.warns(RuntimeWarning, match=r"NaN or infinite for images \[0\]"):
        adv, stats = APGD(LogAtZero(), eps=8 / 255, steps=4, random_start=False, nonfinite="warn")(
            dark, masks, return_stats=True
        )
    assert stats.nonfinite_gradient.tolist() == [True, False]
    assert torch.isfinite(adv).all() and (adv - dark).abs().max() <= 8 / 255 + 1e-6


def test_targeted_by_label_and_masks_none(trained_tiny, blobs_test):
    images, masks = blobs_test
    images, masks = images[:4], masks[:4]
    target = torch.full_like(masks, 2)
    attack = APGD(trained_tiny, eps=8 / 255, steps=10, loss="masked_ce")
    attack.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    adv = attack(images, target)
    with torch.no_grad():
        before = per_image_pixel_accuracy(trained_tiny(images), target)
        after = per_image_pixel_accuracy(trained_tiny(adv), target)
    assert (after >= before).all() and after.mean() > before.mean() + 0.05
    with torch.no_grad():
        pred = trained_tiny(images).argmax(1)
    torch.manual_seed(0)
    a = APGD(trained_tiny, steps=3)(images)
    torch.manual_seed(0)
    assert torch.equal(a, APGD(trained_tiny, steps=3)(images, pred))


def test_bad_arguments_give_clear_errors():
    model = _model()
    for build, message in [(lambda: APGDStep(momentum=1.5), "momentum"), (lambda: APGDStep(rho=0.0), "rho")]:
        with pytest.raises(ValueError, match=message):
            build()
    for kwargs, message in [
        ({"loss": "dlr"}, "unknown pixel loss"),
        ({"loss_options": {"q0": 2.0}, "loss": "eroseg"}, "q0"),
        ({"radius_schedule": "big"}, "radius_schedule"),
        ({"step_rule": APGDStep(momentum=0.5), "loss": "nope"}, "unknown pixel loss"),
        ({"alpha": 0.0}, "alpha"),
        ({"eps": 0.0}, "eps"),
        ({"steps": -1}, "steps"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            APGD(model, **kwargs)
    with pytest.raises(ValueError, match="class ids"):
        APGD(model, steps=1)(torch.rand(1, 3, 8, 8), torch.full((1, 8, 8), 9))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        APGD(model, steps=1)(torch.rand(1, 3, 8, 8) * 255, torch.zeros(1, 8, 8, dtype=torch.long))
    assert issubclass(APGD, SegAttack)


# ---------------------------------------------------------------------------- strength
def _sign_pgd(model, images, masks, loss_name, eps, steps):
    """NAA-style sign PGD on the same pixel loss: α = 2.5·eps/steps, random start, best iterate by accuracy."""
    alpha = 2.5 * eps / steps
    valid = masks != 255
    loss_fn = make_pixel_loss(loss_name)
    adv = AF.random_linf_start(images, eps)
    best, best_acc = adv.clone(), torch.full((images.shape[0],), 2.0)
    for step in range(1, steps + 2):
        adv.requires_grad_(True)
        logits = model(adv)
        objective = AF.masked_mean(loss_fn(logits, masks, valid, min(step, steps), steps), valid)
        grad = torch.autograd.grad(objective, adv)[0]
        adv = adv.detach()
        acc = per_image_pixel_accuracy(logits.detach(), masks)
        better = acc < best_acc
        best[better], best_acc = adv[better], torch.minimum(acc, best_acc)
        adv = AF.project_linf(adv + alpha * grad.sign(), images, eps)
    return best


# Upper bounds on mean over 3 attack seeds of d = mIoU(APGD) − mIoU(sign PGD), same loss, measured
# (see the test's docstring): the largest 3-seed mean over 4 trained fixtures plus the range of those
# means, rounded up to 0.001. Negative measured means: APGD is stronger; positive: weaker.
BOUND = {
    "ce": 0.001,  # measured 3-seed means -0.0082 .. -0.0037
    "js": 0.001,  # -0.0050 .. -0.0022
    "segpgd": 0.005,  # -0.0128 .. -0.0039
    "cospgd": 0.007,  # -0.0095 .. -0.0014
    "masked_spherical": 0.002,  # -0.0042 .. -0.0015
    "eroseg": 0.002,  # -0.0022 .. -0.0004
    "balanced_masked_ce": 0.006,  # +0.0019 .. +0.0038: APGD slightly weaker
    "masked_ce": 0.011,  # +0.0015 .. +0.0062: APGD weaker
    "tsallis": 0.006,  # -0.0037 .. +0.0011
}
# cosine, masked_margin and masked_dlr: not measured (the 4-fixture x 5-seed measurement did not fit the
# session that added them); tests/test_step_rules.py checks that APGD and PAdam lower accuracy with each.


@pytest.mark.parametrize("loss", sorted(BOUND))
def test_apgd_is_level_with_or_stronger_than_pgd_with_the_same_loss(loss, trained_tiny, blobs_test):
    """APGD vs sign PGD (α = 2.5·ε/steps, best iterate) on the same loss, 50 iterations at 4/255.

    The claim is statistical, so it is checked on the mean over three attack
    seeds, against a bound taken from a measurement (8 images 16×16 of
    ``blobs_test``, ``trained_tiny`` retrained with fixture seeds 0–3 as a
    stand-in for other CPUs' kernels, attack seeds 0–4; 1 and 2 torch threads
    gave bit-identical numbers on the measuring machine). Per-seed d ranged
    over: ce [−0.0094, −0.0012], js [−0.0079, +0.0002], segpgd [−0.0140,
    −0.0018], cospgd [−0.0105, +0.0002], masked_spherical [−0.0071, +0.0013],
    eroseg [−0.0041, +0.0026], balanced_masked_ce [−0.0009, +0.0065],
    masked_ce [−0.0005, +0.0107], tsallis [−0.0065, +0.0023]. So APGD is stronger with CE, JS, SegPGD,
    CosPGD and the masked spherical loss, level with EroSeg, and slightly
    *weaker* with the masked CE losses: they drop as pixels flip (the pixels
    leave the mask), so APGD's best-loss restarts can send an image back to an
    earlier point. A single seed with a 0.001–0.003 margin (the earlier test)
    failed on another machine.
    """
    images, masks = blobs_test
    images, masks = images[:, :, :16, :16].contiguous(), masks[:, :16, :16].contiguous()
    eps, steps = 4 / 255, 50
    differences = []
    for seed in range(3):
        torch.manual_seed(seed)
        apgd = _miou(trained_tiny, APGD(trained_tiny, eps=eps, steps=steps, loss=loss)(images, masks), masks)
        torch.manual_seed(seed)
        pgd = _miou(trained_tiny, _sign_pgd(trained_tiny, images, masks, loss, eps, steps), masks)
        differences.append(apgd - pgd)
        assert apgd < _miou(trained_tiny, images, masks) - 0.05
    mean = sum(differences) / len(differences)
    assert mean <= BOUND[loss], (loss, differences)


# ---------------------------------------------------------------------------- ART twin
def test_art_apgd_is_bit_identical_to_the_torch_attack():
    import segrobust.art as sart

    model = _model(1)
    estimator = sart.PyTorchSegmenter(model, input_shape=(3, 10, 10), nb_classes=NUM_CLASSES)
    images, masks = _batch(4, n=3)
    art_attack = sart.APGD(estimator, eps=8 / 255, steps=6, loss="js", radius_schedule="sea", batch_size=3)
    torch_attack = APGD(model, eps=8 / 255, steps=6, loss="js", radius_schedule="sea")
    torch.manual_seed(0)
    adv = art_attack.generate(images.numpy(), masks.numpy())
    torch.manual_seed(0)
    expected = torch_attack(images, masks)
    np.testing.assert_array_equal(adv, expected.numpy())
    assert art_attack.stats.loss.shape == (7, 3)
    assert "radius_schedule" in art_attack.attack_params and art_attack.attack_params[:3] == ["eps", "alpha", "steps"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="eps"):
            sart.APGD(estimator, eps=2.0)
