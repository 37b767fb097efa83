"""SlidingWindow and MultiScaleFlip against plain reference loops, differentiability and attacks end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import NUM_CLASSES, TinySegNet, make_blobs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segrobust.attacks import NAA, ReliableEnsemble
from segrobust.metrics import mean_iou, per_image_confusion
from segrobust.models import MultiScaleFlip, SegmentationModel, SlidingWindow
from segrobust.models.inference import window_grid


def reference_slide(model, images, crop, stride):
    """mmsegmentation's slide_inference, written out as it is there."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    batch, _, h_img, w_img = images.shape
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds, count = None, torch.zeros(batch, 1, h_img, w_img)
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_logits = model(images[:, :, y1:y2, x1:x2])
            padded = F.pad(crop_logits, (x1, w_img - x2, y1, h_img - y2))
            preds = padded if preds is None else preds + padded
            count[:, :, y1:y2, x1:x2] += 1
    assert (count > 0).all()
    return preds / count


def reference_tta(model, images, scales, flip):
    """The average of the softmax over every rescaled (and flipped) copy, resized back, then its log."""
    h, w = images.shape[-2:]
    probs = []
    for scale in scales:
        size = (int(h * scale + 0.5), int(w * scale + 0.5))
        scaled = F.interpolate(images, size, mode="bilinear", align_corners=False) if size != (h, w) else images
        for flipped in [False, True] if flip else [False]:
            logits = model(torch.flip(scaled, [3]) if flipped else scaled)
            logits = torch.flip(logits, [3]) if flipped else logits
            logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False) if size != (h, w) else logits
            probs.append(logits.softmax(1))
    return torch.stack(probs).mean(0).log()


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinySegNet().eval()


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(5, 40),
    width=st.integers(5, 40),
    crop_h=st.integers(4, 24),
    crop_w=st.integers(4, 24),
    data=st.data(),
)
def test_sliding_window_equals_the_reference_loop(height, width, crop_h, crop_w, data):
    stride = (data.draw(st.integers(1, crop_h)), data.draw(st.integers(1, crop_w)))
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 3, padding=1)
    images = torch.rand(2, 3, height, width)
    ours = SlidingWindow(model, (crop_h, crop_w), stride)(images)
    assert torch.allclose(ours, reference_slide(model, images, (crop_h, crop_w), stride), atol=1e-6)
    windows = window_grid((height, width), (crop_h, crop_w), stride)
    assert all(b - t == min(crop_h, height) and r - left == min(crop_w, width) for t, b, left, r in windows)
    assert max(b for _, b, _, _ in windows) == height and max(r for _, _, _, r in windows) == width


def test_sliding_window_handles_small_images_and_low_resolution_heads(net):
    images = torch.rand(1, 3, 12, 20)
    small = SlidingWindow(net, crop=32, stride=16)(images)  # one crop: the image itself, not padded
    assert torch.allclose(small, net(images), atol=1e-6)
    quarter = nn.Conv2d(3, 4, kernel_size=4, stride=4)
    with pytest.raises(ValueError, match=r"logits of size \(4, 4\) for an input of size \(16, 16\).*SegmentationModel"):
        SlidingWindow(quarter, 16, 8)(torch.rand(1, 3, 24, 24))
    composed = SlidingWindow(SegmentationModel(quarter, mean=(0.5,) * 3, std=(0.25,) * 3), 16, 8)
    inner = SegmentationModel(quarter, mean=(0.5,) * 3, std=(0.25,) * 3)
    images = torch.rand(2, 3, 24, 40)
    assert torch.allclose(composed(images), reference_slide(inner, images, (16, 16), (8, 8)), atol=1e-5)
    with pytest.raises(ValueError, match=r"stride \(8, 20\) must not exceed crop \(16, 16\)"):
        SlidingWindow(net, 16, (8, 20))
    with pytest.raises(TypeError, match=r"crop must be an int"):
        SlidingWindow(net, 1.5, 1)


def test_sliding_window_gradients_equal_the_reference_loops(net):
    images = make_blobs(2, 24)[0].requires_grad_()
    labels = torch.randint(0, NUM_CLASSES, (2, 24, 24))
    F.cross_entropy(SlidingWindow(net, 16, 6)(images), labels).backward()
    ours, images.grad = images.grad.clone(), None
    F.cross_entropy(reference_slide(net, images, (16, 16), (6, 6)), labels).backward()
    assert torch.isfinite(ours).all() and ours.abs().sum() > 0
    assert torch.allclose(ours, images.grad, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("scales, flip", [((1.0,), False), ((1.0,), True), ((0.5, 1.0, 1.5), True), ((0.75,), False)])
def test_multiscale_flip_equals_the_reference_average(net, scales, flip):
    images = make_blobs(2, 24)[0].requires_grad_()
    ours = MultiScaleFlip(net, scales, flip)(images)
    reference = reference_tta(net, images, scales, flip)
    assert ours.dtype == torch.float32 and torch.allclose(ours, reference, atol=1e-5)
    assert torch.allclose(ours.exp().sum(1), torch.ones(2, 24, 24), atol=1e-5)
    labels = torch.randint(0, NUM_CLASSES, (2, 24, 24))
    (grad,) = torch.autograd.grad(F.nll_loss(ours, labels), images)
    (expected,) = torch.autograd.grad(F.nll_loss(reference, labels), images)
    assert torch.isfinite(grad).all() and torch.allclose(grad, expected, atol=1e-7, rtol=1e-4)


def test_multiscale_flip_stays_finite_for_saturated_logits():
    saturated = SegmentationModel(nn.Conv2d(3, 3, 1))
    with torch.no_grad():
        saturated.model.weight.fill_(0)
        saturated.model.bias.copy_(torch.tensor([0.0, 500.0, -500.0]))  # softmax underflows to exactly 0
    out = MultiScaleFlip(saturated, (0.5, 1.0), True)(torch.rand(1, 3, 8, 8))
    assert torch.isfinite(out).all() and out.argmax(1).eq(1).all()


def test_multiscale_flip_rejects_bad_arguments(net):
    for bad in ((), "1.0", (0.0,), (float("nan"),), (100.0,)):
        with pytest.raises((TypeError, ValueError), match="scales"):
            MultiScaleFlip(net, bad)
    with pytest.raises(TypeError, match="flip must be True or False"):
        MultiScaleFlip(net, (1.0,), flip="yes")


@pytest.mark.parametrize("wrapper", ["slide", "tta", "both"])
def test_attacks_run_end_to_end_through_the_wrappers(trained_tiny, wrapper):
    images, masks = make_blobs(4, 32, seed=3)
    model = {
        "slide": lambda: SlidingWindow(trained_tiny, 24, 8),
        "tta": lambda: MultiScaleFlip(trained_tiny, (0.75, 1.0), flip=True),
        "both": lambda: MultiScaleFlip(SlidingWindow(trained_tiny, 24, 8), (1.0,), flip=True),
    }[wrapper]()
    with torch.no_grad():
        clean = mean_iou(per_image_confusion(model(images), masks, NUM_CLASSES).sum(0))
    adversarial = NAA(model, eps=8 / 255, alpha=2 / 255, steps=5)(images, masks)
    assert (adversarial - images).abs().max() <= 8 / 255 + 1e-6 and 0 <= adversarial.min() <= adversarial.max() <= 1
    with torch.no_grad():
        attacked = mean_iou(per_image_confusion(model(adversarial), masks, NUM_CLASSES).sum(0))
    assert attacked < clean
    worst = ReliableEnsemble(model, eps=8 / 255, steps=2)(images, masks)
    assert (worst - images).abs().max() <= 8 / 255 + 1e-6
