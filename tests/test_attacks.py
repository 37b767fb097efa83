"""Properties every segmentation attack must have, plus the SegAttack conventions."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import NUM_CLASSES, PixelwiseNet, TinySegNet, make_blobs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segrobust.attacks import (
    AMA,
    NAA,
    TORCHATTACKS_AVAILABLE,
    CosPGD,
    EroSeg,
    SegAttack,
    SegMultiAttack,
    SegPGD,
)
from segrobust.metrics import per_image_confusion, per_image_pixel_accuracy

ATTACKS = [NAA, AMA, SegPGD, CosPGD, EroSeg]


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinySegNet().eval()


def _batch(seed: int, n: int = 2, size: int = 12, ignore_frac: float = 0.25):
    images, masks = make_blobs(n, size, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    masks = masks.clone()
    masks[torch.rand(masks.shape, generator=g) < ignore_frac] = 255
    return images, masks


@pytest.mark.parametrize("attack_cls", ATTACKS)
@given(seed=st.integers(0, 1000), eps=st.sampled_from([1 / 255, 4 / 255, 8 / 255, 0.1]), random_start=st.booleans())
@settings(max_examples=8, deadline=None)
def test_bounds_determinism_and_no_side_effects(attack_cls, seed, eps, random_start):
    model = _model(seed % 3)
    model.train()
    model.body[1].eval()  # a frozen BatchNorm inside a model in training mode must stay as it is
    params = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    requires_grad = [p.requires_grad for p in model.parameters()]
    images, masks = _batch(seed)
    images_copy, masks_copy = images.clone(), masks.clone()

    attack = attack_cls(model, eps=eps, alpha=eps / 3, steps=3, random_start=random_start)
    torch.manual_seed(seed)
    adv = attack(images, masks)
    torch.manual_seed(seed)
    adv_again = attack(images, masks)

    assert adv.shape == images.shape and adv.dtype == images.dtype
    assert (adv - images).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv, adv_again)
    assert torch.equal(images, images_copy) and torch.equal(masks, masks_copy)
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    for name, value in model.state_dict().items():
        assert torch.equal(value, params[name]), name
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("attack_cls", ATTACKS)
def test_ignored_pixels_have_no_influence(attack_cls):
    torch.manual_seed(0)
    model = PixelwiseNet().eval()
    images, masks = _batch(5, ignore_frac=0.4)
    ignored = masks == 255
    attack = attack_cls(model, eps=8 / 255, alpha=2 / 255, steps=4, random_start=False)
    adv = attack(images, masks)
    # a pixelwise model gives ignored pixels a zero gradient: they are never perturbed
    assert torch.equal((adv - images).abs().amax(1)[ignored], torch.zeros(int(ignored.sum())))
    # and the result does not depend on which id marks them
    remapped = attack_cls(model, eps=8 / 255, alpha=2 / 255, steps=4, random_start=False, ignore_index=254)
    assert torch.equal(remapped(images, torch.where(ignored, 254, masks)), adv)


@pytest.mark.parametrize("attack_cls", ATTACKS)
def test_batch_without_valid_pixel_gives_zero_step_not_nan(attack_cls):
    images = torch.rand(2, 3, 8, 8)
    masks = torch.full((2, 8, 8), 255)
    adv, stats = attack_cls(_model(), steps=3, random_start=False)(images, masks, return_stats=True)
    assert torch.equal(adv, images)
    assert torch.isfinite(stats.loss).all()


@pytest.mark.parametrize("attack_cls", [NAA, SegPGD, EroSeg])
def test_returns_best_iterate_not_last(attack_cls, trained_tiny, blobs_test):
    images, masks = blobs_test
    torch.manual_seed(0)
    # a huge step makes iterates oscillate, so the last one is often not the best
    adv, stats = attack_cls(trained_tiny, eps=16 / 255, alpha=16 / 255, steps=6)(images, masks, return_stats=True)
    with torch.no_grad():
        logits = trained_tiny(adv)
    returned = per_image_pixel_accuracy(logits, masks)
    torch.testing.assert_close(returned, stats.pixel_accuracy.min(0).values)
    assert torch.equal(stats.confusion, per_image_confusion(logits, masks, logits.shape[1]))
    assert stats.loss.shape == stats.pixel_accuracy.shape == (7, images.shape[0])
    torch.testing.assert_close(returned, stats.pixel_accuracy.gather(0, stats.best_step[None])[0])


def test_ama_returns_most_accurate_iterate(trained_tiny, blobs_test):
    images, masks = blobs_test
    adv, stats = AMA(trained_tiny, eps=8 / 255, steps=5)(images, masks, return_stats=True)
    with torch.no_grad():
        returned = per_image_pixel_accuracy(trained_tiny(adv), masks)
    torch.testing.assert_close(returned, stats.pixel_accuracy.max(0).values)


class TupleOutput(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x), torch.zeros(x.shape[0], 2)


class DictOutput(TupleOutput):
    def forward(self, x):
        return {"out": self.inner(x), "aux": self.inner(x) * 0}


@pytest.mark.parametrize("wrapper", [TupleOutput, DictOutput])
def test_tuple_and_dict_outputs_use_segmentation_logits(wrapper):
    model = _model()
    images, masks = _batch(1)
    torch.manual_seed(0)
    plain = NAA(model, steps=2)(images, masks)
    torch.manual_seed(0)
    wrapped = NAA(wrapper(model).eval(), steps=2)(images, masks)
    assert torch.equal(plain, wrapped)


def test_normalization_contract_matches_torchattacks():
    model = _model()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    class Normalised(nn.Module):
        def forward(self, x):
            return model((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))

    images, masks = _batch(2)
    torch.manual_seed(0)
    reference = NAA(Normalised(), eps=4 / 255, steps=3)(images, masks)

    attack = NAA(model, eps=4 / 255, steps=3)
    attack.set_normalization_used(mean, std)
    normed = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.manual_seed(0)
    adv_normed = attack(normed, masks)
    back = adv_normed * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    torch.testing.assert_close(back, reference, atol=1e-5, rtol=0)


def test_targeted_random_and_least_likely_targets_are_per_pixel(trained_tiny, blobs_test):
    images, masks = blobs_test
    masks = masks.clone()
    masks[:, :3] = 255
    attack = NAA(trained_tiny)
    attack.set_mode_targeted_random(quiet=True)
    target = attack.get_target_label(images, masks)
    valid = masks != 255
    assert target.shape == masks.shape
    assert (target[valid] != masks[valid]).all() and (target[~valid] == 255).all()
    assert target[valid].max() < NUM_CLASSES
    attack.set_mode_targeted_least_likely(quiet=True)
    target = attack.get_target_label(images, masks)
    with torch.no_grad():
        logits = trained_tiny(images)
    assert (target[valid] != masks[valid]).all() and (target[~valid] == 255).all()
    # the least likely class other than the true one
    excluded = logits.scatter(1, masks.clamp(max=NUM_CLASSES - 1).unsqueeze(1), float("inf"))
    assert torch.equal(target[valid], excluded.argmin(1)[valid])


@pytest.mark.parametrize("mode", ["label", "function", "random", "least_likely"])
def test_targeted_attack_moves_pixels_towards_target(mode, trained_tiny, blobs_test):
    images, masks = blobs_test
    target_fn = lambda x, y: (y + 1) % NUM_CLASSES  # noqa: E731
    attack = SegPGD(trained_tiny, eps=16 / 255, alpha=4 / 255, steps=8)
    if mode == "label":
        attack.set_mode_targeted_by_label(quiet=True)
        target = target_fn(images, masks)
        adv = attack(images, target)
    else:
        if mode == "function":
            attack.set_mode_targeted_by_function(target_fn, quiet=True)
        elif mode == "random":
            attack.set_mode_targeted_random(quiet=True)
        else:
            attack.set_mode_targeted_least_likely(quiet=True)
        torch.manual_seed(0)
        target = attack.get_target_label(images, masks)
        torch.manual_seed(0)
        adv = attack(images, masks)
    with torch.no_grad():
        before = per_image_pixel_accuracy(trained_tiny(images), target).mean()
        after = per_image_pixel_accuracy(trained_tiny(adv), target).mean()
        ce_before = torch.nn.functional.cross_entropy(trained_tiny(images), target, ignore_index=255)
        ce_after = torch.nn.functional.cross_entropy(trained_tiny(adv), target, ignore_index=255)
    assert ce_after < 0.9 * ce_before, "the attack must move the prediction towards the target masks"
    if mode != "least_likely":  # the least likely class is by construction hard to reach within the budget
        assert after > before + 0.05


def test_set_model_training_mode_is_used_and_restored():
    model = _model().eval()
    seen = []
    model.body[3].register_forward_hook(lambda m, i, o: seen.append(m.training))
    attack = NAA(model, steps=1)
    attack.set_model_training_mode(model_training=True, dropout_training=True)
    images, masks = _batch(0)
    attack(images, masks)
    assert seen and all(seen)
    assert not any(m.training for m in model.modules())


def test_seg_multi_attack_keeps_per_image_worst_case(trained_tiny, blobs_test):
    images, masks = blobs_test
    attacks = [NAA(trained_tiny, eps=4 / 255, steps=3), EroSeg(trained_tiny, eps=4 / 255, steps=3)]
    multi = SegMultiAttack(attacks)
    if TORCHATTACKS_AVAILABLE:
        assert isinstance(multi, __import__("torchattacks").MultiAttack)
    torch.manual_seed(0)
    worst = multi(images, masks)
    torch.manual_seed(0)
    singles = [a(images, masks) for a in attacks]
    with torch.no_grad():
        worst_acc = per_image_pixel_accuracy(trained_tiny(worst), masks)
        single_acc = torch.stack([per_image_pixel_accuracy(trained_tiny(a), masks) for a in singles])
    torch.testing.assert_close(worst_acc, single_acc.min(0).values)
    multi.set_normalization_used([0.5] * 3, [0.5] * 3)  # setters reach every attack
    assert all(a.normalization_used is not None for a in attacks)


def test_masks_none_attacks_the_models_own_prediction(trained_tiny, blobs_test):
    images, _ = blobs_test
    with torch.no_grad():
        pred = trained_tiny(images).argmax(1)
    torch.manual_seed(0)
    a = NAA(trained_tiny, steps=2)(images)
    torch.manual_seed(0)
    b = NAA(trained_tiny, steps=2)(images, pred)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("images", "masks", "error", "message"),
    [
        (torch.rand(3, 8, 8), torch.zeros(3, 8, dtype=torch.long), ValueError, "4-D"),
        (torch.randint(0, 255, (1, 3, 8, 8)), torch.zeros(1, 8, 8, dtype=torch.long), TypeError, "floating-point"),
        (torch.rand(1, 3, 8, 8) * 255, torch.zeros(1, 8, 8, dtype=torch.long), ValueError, r"\[0, 1\]"),
        (torch.full((1, 3, 8, 8), float("nan")), torch.zeros(1, 8, 8, dtype=torch.long), ValueError, "NaN"),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8), TypeError, "integer"),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 4, 8, dtype=torch.long), ValueError, "does not match"),
        (torch.rand(1, 3, 8, 8), torch.full((1, 8, 8), 9), ValueError, "class ids"),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long, device="meta"), ValueError, "device"),
        ([[0.0]], None, TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_gives_clear_error(images, masks, error, message):
    with pytest.raises(error, match=message):
        NAA(_model(), steps=1)(images, masks)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eps": 0}, "eps"),
        ({"eps": 2.0}, "eps"),
        ({"steps": -1}, "steps"),
        ({"alpha": -0.1}, "alpha"),
        ({"ignore_index": 2.5}, "ignore_index"),
    ],
)
def test_bad_arguments_give_clear_error(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        NAA(_model(), **kwargs)


def test_eroseg_arguments_are_validated():
    for kwargs in (
        {"q0": 0},
        {"schedule": "step"},
        {"kernel_size": 2},
        {"fooled_weight": 2},
        {"confidence": "entropy"},
    ):
        with pytest.raises(ValueError):
            EroSeg(_model(), **kwargs)


def test_ama_refuses_targeted_mode():
    with pytest.raises(ValueError, match="targeted"):
        AMA(_model()).set_mode_targeted_random()


def test_all_attacks_are_torchattacks_attacks():
    torchattacks = pytest.importorskip("torchattacks")

    for cls in ATTACKS:
        assert issubclass(cls, SegAttack) and issubclass(cls, torchattacks.attack.Attack)
