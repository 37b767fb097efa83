"""segrobust.losses: each pixel loss equals its formula (and SegPGD/CosPGD the cospgd package)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segrobust import losses as L
from segrobust.attacks import functional as AF

K = 5


def _case(seed: int, n: int = 2, h: int = 6, w: int = 7, ignore_frac: float = 0.2, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, K, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, K, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < ignore_frac] = 255
    return logits, labels, labels != 255


def _ce(logits, labels, valid):
    return F.cross_entropy(logits, labels.clamp(max=K - 1), reduction="none") * valid


def _holds(logits, labels, valid, targeted):
    correct = logits.argmax(1) == labels
    return ((~correct if targeted else correct) & valid).double()


def _balanced_weights_by_hand(labels):
    flat = labels[labels != 255].tolist()
    present = sorted(set(flat))
    weights = torch.zeros(K, dtype=torch.float64)
    for c in present:
        weights[c] = len(flat) / (len(present) * flat.count(c))
    return weights


def _js_by_definition(logits, labels, valid):
    p = torch.softmax(logits, 1)
    q = F.one_hot(labels.clamp(max=K - 1), K).permute(0, 3, 1, 2).double()
    m = (p + q) / 2
    kl_pm = (p * (p / m).log()).sum(1)
    kl_qm = torch.where(q > 0, q * (q / m).log(), torch.zeros_like(q)).sum(1)
    return 0.5 * (kl_pm + kl_qm) * valid


def _expected(name, logits, labels, valid, targeted):
    ce, holds = _ce(logits, labels, valid), _holds(logits, labels, valid, targeted)
    if name == "ce":
        return ce
    if name == "masked_ce":
        return ce * holds
    if name == "balanced_masked_ce":
        return ce * holds * _balanced_weights_by_hand(labels)[labels.clamp(max=K - 1)]
    if name == "js":
        return _js_by_definition(logits, labels, valid)
    if name == "masked_spherical":
        z_y = logits.gather(1, labels.clamp(max=K - 1).unsqueeze(1)).squeeze(1)
        return -z_y / logits.norm(dim=1) * holds
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["ce", "masked_ce", "balanced_masked_ce", "js", "masked_spherical"])
@given(seed=st.integers(0, 10_000), targeted=st.booleans())
@settings(max_examples=10, deadline=None)
def test_each_loss_equals_its_formula(name, seed, targeted):
    logits, labels, valid = _case(seed)
    loss = L.make_pixel_loss(name, targeted=targeted)
    torch.testing.assert_close(loss(logits, labels, valid, 1, 10), _expected(name, logits, labels, valid, targeted))


@pytest.mark.parametrize("name", sorted(L.PIXEL_LOSSES))
def test_losses_are_zero_on_ignored_pixels_and_have_finite_gradients(name):
    logits, labels, valid = _case(3, ignore_frac=0.4, scale=60.0)  # saturated softmax: p_y underflows
    logits.requires_grad_(True)
    value = L.make_pixel_loss(name)(logits, labels, valid, 2, 5)
    assert value.shape == labels.shape and bool((value[~valid] == 0).all())
    (grad,) = torch.autograd.grad(value.sum(), logits)
    assert torch.isfinite(grad).all()
    none_valid = torch.full_like(labels, 255)
    empty = L.make_pixel_loss(name)(logits, none_valid, none_valid != 255, 1, 5)
    (grad,) = torch.autograd.grad(AF.masked_mean(empty, none_valid != 255), logits)
    assert float(empty.detach().abs().sum()) == 0.0 and torch.isfinite(grad).all() and float(grad.abs().sum()) == 0.0


def test_js_closed_form_is_bounded_by_log_two():
    logits, labels, _valid = _case(5, scale=30.0)
    js = L.js_divergence(logits, labels)
    assert float(js.min()) >= 0 and float(js.max()) <= torch.log(torch.tensor(2.0)).item() + 1e-12


def test_balanced_masked_ce_takes_given_class_weights():
    logits, labels, valid = _case(7)
    weights = torch.tensor([1.0, 2.0, 0.0, 0.5, 3.0])
    loss = L.make_pixel_loss("balanced_masked_ce", class_weights=weights)
    expected = (
        _ce(logits, labels, valid) * _holds(logits, labels, valid, False) * weights.double()[labels.clamp(max=K - 1)]
    )
    torch.testing.assert_close(loss(logits, labels, valid, 1, 1), expected)
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        L.make_pixel_loss("balanced_masked_ce", class_weights=[1.0, 1.0, 1.0])(logits, labels, valid, 1, 1)
    with pytest.raises(ValueError, match="class_weights"):
        L.make_pixel_loss("balanced_masked_ce", class_weights=[1.0, -1.0])


cospgd = pytest.importorskip("cospgd", reason="cospgd (test-only reference) is installed with the dev extra")


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("step", [1, 4, 10])
def test_segpgd_and_cospgd_losses_equal_the_reference_package(targeted, step):
    logits, labels, valid = _case(4, ignore_frac=0.0)
    logits.requires_grad_(True)
    ref_pixel = F.cross_entropy(logits, labels, reduction="none")
    h, w = labels.shape[1:]
    ours = L.make_pixel_loss("segpgd", targeted=targeted)(logits, labels, valid, step, 10).sum() / (h * w)
    ref = cospgd.functions.segpgd_scale(logits, labels, ref_pixel, step - 1, 10, targeted=targeted)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])
    ours = L.make_pixel_loss("cospgd", targeted=targeted)(logits, labels, valid, step, 10).sum()
    ref_pixel = F.cross_entropy(logits, labels, reduction="none")
    ref = cospgd.functions.cospgd_scale(logits, labels, ref_pixel, num_classes=K, targeted=targeted).sum()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])


def test_eroseg_loss_carries_its_attacked_set_per_instance():
    logits, labels, valid = _case(8, ignore_frac=0.0, h=8, w=8)
    loss = L.make_pixel_loss("eroseg", q0=0.2)
    first = loss.weights(logits, labels, valid, 1, 4)
    seeds = AF.lowest_fraction_mask(AF.pixel_confidence(logits, labels), valid, 0.2)
    assert torch.equal(loss.attacked, seeds) and torch.equal(first > 0, seeds)
    loss(logits, labels, valid, 2, 4)
    assert bool((loss.attacked | seeds).equal(loss.attacked)) and loss.attacked.sum() > seeds.sum()
    fresh = L.make_pixel_loss("eroseg", q0=0.2)
    assert fresh.attacked is None and fresh is not loss
    assert L.EroSegLoss.stateful and not L.CELoss.stateful


def test_registry_and_make_pixel_loss_errors():
    assert set(L.PIXEL_LOSSES) == {
        "ce",
        "masked_ce",
        "balanced_masked_ce",
        "js",
        "masked_spherical",
        "segpgd",
        "cospgd",
        "eroseg",
    }
    assert isinstance(L.make_pixel_loss(L.JSLoss), L.JSLoss)

    def custom(logits, labels, valid, step, steps):
        return L.pixel_cross_entropy(logits, labels)

    assert L.make_pixel_loss(custom) is custom
    with pytest.raises(ValueError, match="unknown pixel loss 'dlr'"):
        L.make_pixel_loss("dlr")
    with pytest.raises(TypeError, match="do not fit"):
        L.make_pixel_loss("ce", q0=0.3)
    with pytest.raises(TypeError, match="only apply"):
        L.make_pixel_loss(custom, q0=0.3)
    with pytest.raises(TypeError, match="PixelLoss"):
        L.make_pixel_loss(int)
    with pytest.raises(TypeError, match="loss must be"):
        L.make_pixel_loss(3)


def test_moved_weightings_are_still_exported_by_attacks_functional():
    for name in (
        "segpgd_weights",
        "cospgd_weights",
        "success_mask",
        "pixel_confidence",
        "lowest_fraction_mask",
        "dilate_mask",
    ):
        assert getattr(AF, name) is getattr(L, name)
