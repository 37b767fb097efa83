"""segrobust.losses: each pixel loss equals its formula (and SegPGD/CosPGD the cospgd package)."""

from __future__ import annotations

import math

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
        "tsallis",
        "cosine",
        "masked_margin",
        "masked_dlr",
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


# ---------------------------------------------------------------------------- Tsallis, cosine, margin, DLR
def _p_true(logits, labels):
    return torch.softmax(logits, 1).gather(1, labels.clamp(max=K - 1).unsqueeze(1)).squeeze(1)


@pytest.mark.parametrize("q", [-2.0, -0.5, 0.0, 0.5, 0.999])
def test_tsallis_equals_its_definition_and_scales_the_ce_gradient(q):
    logits, labels, valid = _case(11)
    logits.requires_grad_(True)
    value = L.tsallis_cross_entropy(logits, labels, q)
    p_y = _p_true(logits, labels)
    torch.testing.assert_close(value, (1 - p_y ** (1 - q)) / (1 - q) * valid)
    # the logit gradient is p_y^{1-q} times cross-entropy's, pixel by pixel
    (grad,) = torch.autograd.grad(value.sum(), logits)
    ce = _ce(logits, labels, valid)
    (grad_ce,) = torch.autograd.grad(ce.sum(), logits)
    torch.testing.assert_close(grad, grad_ce * (p_y ** (1 - q)).detach().unsqueeze(1))


def test_tsallis_is_cross_entropy_at_q_one_and_continuous_near_it():
    logits, labels, valid = _case(12, scale=20.0)
    ce = _ce(logits, labels, valid)
    torch.testing.assert_close(L.tsallis_cross_entropy(logits, labels, 1.0), ce)
    torch.testing.assert_close(L.tsallis_cross_entropy(logits, labels, 1.0 - 1e-7), ce)  # the switch
    # near q = 1, float32 in log space keeps float64's value (the naive float32 quotient is off by up to 100 % here)
    q = 1.0 - 1e-4
    near = L.tsallis_cross_entropy(logits.float(), labels, q)
    exact = (1 - _p_true(logits, labels) ** (1 - q)) / (1 - q) * valid
    torch.testing.assert_close(near, exact.float(), rtol=1e-5, atol=1e-6)


def test_tsallis_q_schedules_and_the_loss_follows_them():
    assert [L.tsallis_q(t, 4) for t in (1, 2, 3, 4)] == [-2.0, -1.25, -0.5, 0.25]
    cosine = [L.tsallis_q(t, 4, schedule="cosine") for t in (1, 2, 3, 4)]
    expected = [1 + (-3) * (1 + math.cos(math.pi * (t - 1) / 4)) / 2 for t in (1, 2, 3, 4)]
    assert cosine == pytest.approx(expected) and cosine[0] == -2.0
    assert L.tsallis_q(9, 4) == L.tsallis_q(5, 4) == 1.0  # clamped at the end
    logits, labels, valid = _case(13)
    loss = L.make_pixel_loss("tsallis", q_start=-1.0, q_end=0.0, schedule="linear")
    assert L.TsallisLoss.per_stage and not L.CELoss.per_stage
    torch.testing.assert_close(loss(logits, labels, valid, 3, 4), L.tsallis_cross_entropy(logits, labels, -0.5))
    weights = torch.tensor([1.0, 2.0, 0.0, 0.5, 3.0])
    weighted = L.make_pixel_loss("tsallis", class_weights=weights)(logits, labels, valid, 1, 4)
    unweighted = L.make_pixel_loss("tsallis")(logits, labels, valid, 1, 4)
    torch.testing.assert_close(weighted, unweighted * weights.double()[labels.clamp(max=K - 1)])
    for bad in ({"q_start": 1.5}, {"q_end": float("nan")}, {"schedule": "exp"}, {"class_weights": [-1.0]}):
        with pytest.raises(ValueError):
            L.make_pixel_loss("tsallis", **bad)


def test_cosine_loss_equals_one_minus_torch_cosine_similarity():
    logits, labels, valid = _case(14)
    one_hot = F.one_hot(labels.clamp(max=K - 1), K).permute(0, 3, 1, 2).double()
    expected = (1 - F.cosine_similarity(logits, one_hot, dim=1)) * valid
    for targeted in (False, True):
        torch.testing.assert_close(
            L.make_pixel_loss("cosine", targeted=targeted)(logits, labels, valid, 1, 1), expected
        )


def _margin_by_hand(logits, labels):
    out = torch.zeros(labels.shape, dtype=logits.dtype)
    for n, i, j in torch.cartesian_prod(*(torch.arange(d) for d in labels.shape)).tolist():
        y = int(labels[n, i, j])
        if y == 255:
            continue
        z = logits[n, :, i, j].tolist()
        out[n, i, j] = max(v for k, v in enumerate(z) if k != y) - z[y]
    return out


@pytest.mark.parametrize("targeted", [False, True])
def test_masked_margin_and_dlr_equal_their_formulas(targeted):
    logits, labels, valid = _case(15, h=4, w=5)
    holds = _holds(logits, labels, valid, targeted)
    margin = _margin_by_hand(logits, labels)
    torch.testing.assert_close(L.logit_margin(logits, labels), margin)
    got = L.make_pixel_loss("masked_margin", targeted=targeted)(logits, labels, valid, 1, 1)
    torch.testing.assert_close(got, margin * holds)
    top = logits.sort(dim=1, descending=True).values
    dlr = margin / (top[:, 0] - top[:, 2] + 1e-12) * holds
    torch.testing.assert_close(L.make_pixel_loss("masked_dlr", targeted=targeted)(logits, labels, valid, 1, 1), dlr)
    # the DLR denominator is detached: the gradient is the margin's, rescaled per pixel
    logits.requires_grad_(True)
    (grad,) = torch.autograd.grad(L.make_pixel_loss("masked_dlr")(logits, labels, valid, 1, 1).sum(), logits)
    (grad_margin,) = torch.autograd.grad(L.make_pixel_loss("masked_margin")(logits, labels, valid, 1, 1).sum(), logits)
    scale = (top[:, 0] - top[:, 2] + 1e-12).unsqueeze(1)
    torch.testing.assert_close(grad, grad_margin / scale)
    with pytest.raises(ValueError, match="3 classes"):
        L.make_pixel_loss("masked_dlr")(logits[:, :2], labels.clamp(max=1), valid, 1, 1)


def test_sea_class_weights_are_normalised_inverse_frequencies_over_the_whole_set():
    g = torch.Generator().manual_seed(16)
    batches = [torch.randint(0, K - 1, (2, 6, 7), generator=g) for _ in range(3)]  # class K-1 never occurs
    batches[0][0, :2] = 255
    flat = [v for b in batches for v in b[b != 255].tolist()]
    counts = [flat.count(c) for c in range(K)]
    inverse = [1 / n if n else 0.0 for n in counts]
    expected = torch.tensor([w / sum(inverse) for w in inverse])
    weights = L.sea_class_weights(batches, K)
    torch.testing.assert_close(weights, expected.float())
    assert weights[K - 1] == 0 and float(weights.sum()) == pytest.approx(1.0)
    assert L.class_pixel_counts(batches, K).tolist() == counts
    torch.testing.assert_close(L.sea_class_weights(torch.cat(batches), K), weights)  # one tensor or batches
    # the same weights up to scale as the per-batch balanced weights of the whole set
    balanced = L.balanced_class_weights(torch.cat(batches), K)
    torch.testing.assert_close(balanced / balanced.sum(), weights)
    with pytest.raises(ValueError, match="class ids"):
        L.sea_class_weights(torch.tensor([[7]]), K)
    with pytest.raises(TypeError, match="integer"):
        L.sea_class_weights([torch.zeros(2, 2)], K)
    assert L.sea_class_weights(torch.full((2, 2), 255), K).tolist() == [0.0] * K
