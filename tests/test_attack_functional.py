"""The functional core equals the formulas of the papers and the cospgd reference package."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from segrobust.attacks import functional as AF

cospgd = pytest.importorskip("cospgd", reason="cospgd (test-only reference) is installed with the dev extra")


def _random_case(seed: int, n: int = 2, k: int = 5, h: int = 6, w: int = 7, ignore_frac: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < ignore_frac] = 255
    return logits, labels


def test_pixel_cross_entropy_mean_equals_torch_ignore_index_mean():
    logits, labels = _random_case(0)
    ours = AF.masked_mean(AF.pixel_cross_entropy(logits, labels), AF.valid_mask(labels))
    ref = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(ours, ref)


def test_no_valid_pixel_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.full((2, 4, 4), 255)
    loss = AF.weighted_pixel_loss(AF.pixel_cross_entropy(logits, labels), None, AF.valid_mask(labels))
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() == 0.0 and torch.isfinite(grad).all() and grad.abs().sum() == 0


@given(seed=st.integers(0, 10_000), step=st.integers(1, 10), targeted=st.booleans())
@settings(max_examples=25, deadline=None)
def test_segpgd_weights_equal_paper_formula(seed, step, targeted):
    steps = 10
    logits, labels = _random_case(seed)
    weights = AF.segpgd_weights(logits, labels, step, steps, targeted=targeted)
    lam = (step - 1) / (2 * steps)
    correct = (logits.argmax(1) == labels).double()
    expected = lam * correct + (1 - lam) * (1 - correct) if targeted else (1 - lam) * correct + lam * (1 - correct)
    torch.testing.assert_close(weights, expected)


@given(seed=st.integers(0, 10_000), targeted=st.booleans())
@settings(max_examples=25, deadline=None)
def test_cospgd_weights_equal_cosine_similarity_of_softmax_and_one_hot(seed, targeted):
    logits, labels = _random_case(seed)
    valid = labels != 255
    one_hot = F.one_hot(labels.clamp(max=4), 5).permute(0, 3, 1, 2).double()
    cos = F.cosine_similarity(torch.softmax(logits, 1), one_hot, dim=1)
    expected = (1 - cos if targeted else cos) * valid
    torch.testing.assert_close(AF.cospgd_weights(logits, labels, targeted=targeted), expected)


@pytest.mark.parametrize("targeted", [False, True])
def test_cospgd_loss_and_gradient_equal_reference_package(targeted):
    logits, labels = _random_case(3, ignore_frac=0.0)
    logits.requires_grad_(True)
    pixel_loss = AF.pixel_cross_entropy(logits, labels)
    ours = (AF.cospgd_weights(logits, labels, targeted=targeted) * pixel_loss).sum()
    ref_pixel = F.cross_entropy(logits, labels, reduction="none")
    ref = cospgd.functions.cospgd_scale(logits, labels, ref_pixel, num_classes=5, targeted=targeted).sum()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("step", [1, 4, 10])
def test_segpgd_loss_and_gradient_equal_reference_package(targeted, step):
    steps = 10
    logits, labels = _random_case(4, ignore_frac=0.0)
    logits.requires_grad_(True)
    h, w = labels.shape[1:]
    pixel_loss = AF.pixel_cross_entropy(logits, labels)
    ours = (AF.segpgd_weights(logits, labels, step, steps, targeted) * pixel_loss).sum() / (h * w)
    ref_pixel = F.cross_entropy(logits, labels, reduction="none")
    # the reference counts iterations from 0
    ref = cospgd.functions.segpgd_scale(logits, labels, ref_pixel, step - 1, steps, targeted=targeted)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(ref, logits)[0])


@given(seed=st.integers(0, 10_000), eps=st.floats(1e-3, 0.5))
@settings(max_examples=30, deadline=None)
def test_projection_is_inside_ball_and_unit_box_and_idempotent(seed, eps):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 5, 5, generator=g)
    adv = x + 2 * torch.randn(x.shape, generator=g)
    p = AF.project_linf(adv, x, eps)
    assert (p - x).abs().max() <= eps + 1e-6
    assert p.min() >= 0 and p.max() <= 1
    torch.testing.assert_close(AF.project_linf(p, x, eps), p)
    inside = x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps
    inside = inside.clamp(0, 1)
    torch.testing.assert_close(AF.project_linf(inside, x, eps), inside)


def test_sign_step_and_random_start():
    x = torch.full((1, 1, 2, 2), 0.5)
    grad = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
    torch.testing.assert_close(AF.sign_step(x, grad, 0.1), torch.tensor([[[[0.6, 0.4], [0.5, 0.6]]]]))
    start = AF.random_linf_start(torch.rand(4, 3, 8, 8), 0.05, generator=torch.Generator().manual_seed(0))
    assert start.min() >= 0 and start.max() <= 1


def test_lowest_fraction_mask_and_dilation():
    score = torch.arange(16.0).reshape(1, 4, 4)
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, 0, 0] = False  # the lowest score is ignored, so it must not be chosen
    chosen = AF.lowest_fraction_mask(score, valid, 0.2)  # ceil(0.2 * 15) = 3 pixels: scores 1, 2, 3
    assert chosen.sum() == 3 and chosen[0, 0, 1:].all() and not chosen[0, 0, 0]
    grown = AF.dilate_mask(chosen, 3)
    expected = F.max_pool2d(chosen.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1) > 0
    assert torch.equal(grown, expected)
    assert torch.equal(AF.lowest_fraction_mask(score, valid, 1.0), valid)
