"""segrobust.art: the ART estimator, ART's own tools on it, and the ART versions of segrobust's attacks."""

from __future__ import annotations

import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from art.attacks.evasion import (
    AutoProjectedGradientDescent,
    BasicIterativeMethod,
    FastGradientMethod,
    MomentumIterativeMethod,
    ProjectedGradientDescent,
    ProjectedGradientDescentPyTorch,
)
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.defences.preprocessor.spatial_smoothing import SpatialSmoothing
from art.defences.trainer import AdversarialTrainer, AdversarialTrainerMadryPGD
from art.exceptions import EstimatorError
from conftest import NUM_CLASSES, TinySegNet, make_blobs
from torch import nn

import segrobust.art as sart
import segrobust.attacks as tattacks
from segrobust.metrics import ConfusionMatrix, per_image_pixel_accuracy

REPO = Path(__file__).resolve().parents[1]
SIZE = 24
EPS = 8 / 255
ATTACK_NAMES = ["NAA", "AMA", "SegPGD", "CosPGD", "EroSeg"]


class Blur(PreprocessorPyTorch):
    """A differentiable framework defence: 3x3 box blur (replicate padding)."""

    def __init__(self):
        super().__init__(device_type="cpu", is_fitted=True, apply_fit=False, apply_predict=True)

    def forward(self, x, y=None):
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.avg_pool2d(padded, 3, stride=1), y


def _miou(estimator, images, masks):
    matrix = ConfusionMatrix(NUM_CLASSES)
    matrix.update(torch.from_numpy(estimator.predict(images)), torch.as_tensor(masks))
    return matrix.compute().miou


def _assert_bounded(adv, x, eps=EPS):
    assert isinstance(adv, np.ndarray) and adv.dtype == np.float32 and adv.shape == x.shape
    assert np.abs(adv - x).max() <= eps + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    x, y = make_blobs(32, SIZE, seed=0)
    xt, yt = make_blobs(8, SIZE, seed=1)
    yt = yt.clone()
    yt[:, :2] = 255  # a band of void pixels: must be ignored everywhere
    return x.numpy(), y.numpy(), xt.numpy(), yt.numpy()


@pytest.fixture(scope="module")
def trained(data):
    """A TinySegNet trained here through PyTorchSegmenter.fit (which this also tests)."""
    x, y, xt, yt = data
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002 (ART draws from the global generator)
    model = TinySegNet(width=8)
    estimator = sart.PyTorchSegmenter(
        model, input_shape=(3, SIZE, SIZE), optimizer=torch.optim.Adam(model.parameters(), lr=0.02)
    )
    before = estimator.compute_loss(xt, yt)
    estimator.fit(x, y, batch_size=8, nb_epochs=20, verbose=False)
    assert estimator.compute_loss(xt, yt) < 0.5 * before
    model.eval()
    return model


@pytest.fixture(scope="module")
def estimator(trained):
    return sart.PyTorchSegmenter(trained, input_shape=(3, SIZE, SIZE))


@pytest.fixture(scope="module")
def clean_miou(estimator, data):
    return _miou(estimator, data[2], data[3])


def test_fit_gives_a_meaningful_target(clean_miou):
    assert clean_miou > 0.6


# ---------------------------------------------------------------------------- estimator
def test_predict_is_batched_numpy_logits_and_keeps_model_mode(trained, data):
    estimator = sart.PyTorchSegmenter(trained, input_shape=(3, SIZE, SIZE))
    xt = data[2]
    trained.train()
    trained.body[1].eval()
    flags = [m.training for m in trained.modules()]
    try:
        logits = estimator.predict(xt, batch_size=3)
        assert [m.training for m in trained.modules()] == flags
    finally:
        trained.eval()
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32
    assert logits.shape == (8, NUM_CLASSES, SIZE, SIZE)
    with torch.no_grad():
        expected = trained(torch.from_numpy(xt)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_array_equal(estimator.predict(torch.from_numpy(xt)), estimator.predict(xt, batch_size=128))
    assert estimator.nb_classes == NUM_CLASSES and estimator.input_shape == (3, SIZE, SIZE)
    assert estimator.device_type == "cpu" and estimator.clip_values.tolist() == [0.0, 1.0]


def test_model_output_tuple_and_dict_are_handled(trained, data):
    class TupleOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = trained

        def forward(self, x):
            return self.net(x), torch.zeros(x.shape[0], 2)

    class DictOut(TupleOut):
        def forward(self, x):
            return {"out": self.net(x), "aux": self.net(x)}

    xt, yt = data[2], data[3]
    reference = sart.PyTorchSegmenter(trained, input_shape=(3, SIZE, SIZE))
    for wrapper in (TupleOut(), DictOut()):
        est = sart.PyTorchSegmenter(wrapper, input_shape=(3, SIZE, SIZE))
        assert est.nb_classes == NUM_CLASSES
        np.testing.assert_array_equal(est.predict(xt), reference.predict(xt))
        np.testing.assert_array_equal(est.loss_gradient(xt[:2], yt[:2]), reference.loss_gradient(xt[:2], yt[:2]))


def _reference_gradient(model, defence, mean, std, x, y):
    """Autograd through defence → standardisation → model → cross-entropy (mean over valid pixels)."""
    x = torch.as_tensor(x).clone().requires_grad_(True)
    inputs = defence.forward(x)[0]
    inputs = (inputs - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    loss = F.cross_entropy(model(inputs), torch.as_tensor(y).long(), ignore_index=255)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def test_loss_gradient_equals_autograd_through_defence_standardisation_and_model(trained, data):
    xt, yt = data[2][:3], data[3][:3]
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    defence = Blur()
    est = sart.PyTorchSegmenter(
        trained, input_shape=(3, SIZE, SIZE), preprocessing=(mean, std), preprocessing_defences=[defence]
    )
    assert est.all_framework_preprocessing
    expected = _reference_gradient(trained, defence, mean, std, xt, yt)
    assert float(expected.abs().max()) > 0

    grad_np = est.loss_gradient(xt, yt)  # numpy in, numpy out (numpy-path attacks)
    assert isinstance(grad_np, np.ndarray) and grad_np.shape == xt.shape and grad_np.dtype == np.float32
    np.testing.assert_allclose(grad_np, expected.numpy(), rtol=1e-4, atol=1e-8)

    x_t = torch.from_numpy(xt.copy())  # torch in, torch out; PGD-PyTorch passes float32 labels
    grad_t = est.loss_gradient(x_t, torch.from_numpy(yt).float())
    assert isinstance(grad_t, torch.Tensor) and grad_t.dtype == torch.float32
    torch.testing.assert_close(grad_t, expected, rtol=1e-4, atol=1e-8)
    assert x_t.grad is None and all(p.grad is None for p in trained.parameters())

    # (N, K, H, W) labels (ART's y=None convention) are reduced by argmax: no ignored pixel then
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[np.where(yt == 255, 0, yt)].transpose(0, 3, 1, 2)
    expected_full = _reference_gradient(trained, defence, mean, std, xt, np.where(yt == 255, 0, yt))
    np.testing.assert_allclose(est.loss_gradient(xt, one_hot), expected_full.numpy(), rtol=1e-4, atol=1e-8)

    # the loss is the mean over valid pixels: ignored pixels contribute nothing
    all_void = np.full_like(yt, 255)
    assert np.abs(est.loss_gradient(xt, all_void)).max() == 0.0
    with torch.no_grad():
        inputs = defence.forward(torch.from_numpy(xt))[0]
        inputs = (inputs - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        expected_loss = F.cross_entropy(trained(inputs), torch.from_numpy(yt), ignore_index=255)
    assert float(est.compute_loss(xt, yt)) == pytest.approx(float(expected_loss), rel=1e-5)
    per_image = est.compute_loss(xt, yt, reduction="none")
    assert per_image.shape == (3,)


def test_numpy_defence_uses_arts_gradient_path(trained, data):
    xt, yt = data[2][:2], data[3][:2]
    est = sart.PyTorchSegmenter(
        trained, input_shape=(3, SIZE, SIZE), preprocessing_defences=[SpatialSmoothing(window_size=3)]
    )
    assert not est.all_framework_preprocessing
    grad = est.loss_gradient(xt, yt)
    assert grad.shape == xt.shape and np.isfinite(grad).all() and np.abs(grad).max() > 0
    assert est.predict(xt).shape == (2, NUM_CLASSES, SIZE, SIZE)
    with pytest.raises(NotImplementedError, match="PreprocessorPyTorch"):
        sart.NAA(est, steps=1).generate(xt, yt)


def test_standardisation_is_per_channel_even_for_images_as_wide_as_their_channel_count(trained):
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    x = np.random.default_rng(0).random((2, 3, 5, 3), dtype=np.float32)  # W == C == 3
    with torch.no_grad():
        expected = trained(
            (torch.from_numpy(x) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        ).numpy()
    est = sart.PyTorchSegmenter(trained, input_shape=(3, 5, 3), preprocessing=(mean, std))
    np.testing.assert_allclose(est.predict(x), expected, atol=1e-5)
    later = sart.PyTorchSegmenter(trained, input_shape=(3, 5, 3))
    later.set_params(preprocessing=(mean, std))
    assert later.all_framework_preprocessing
    np.testing.assert_allclose(later.predict(x), expected, atol=1e-5)


def test_bad_inputs_raise_clear_errors(estimator, data):
    xt, yt = data[2][:2], data[3][:2]
    with pytest.raises(ValueError, match=r"4-D batch"):
        estimator.predict(xt[0])
    with pytest.raises(ValueError, match="channels"):
        estimator.predict(xt[:, :2])
    with pytest.raises(TypeError, match="floating point"):
        estimator.predict((xt * 255).astype(np.uint8))
    with pytest.raises(ValueError, match=r"clip_values"):
        estimator.predict(xt * 4 - 2)
    with pytest.raises(ValueError, match="NaN"):
        estimator.predict(np.where(xt > 0.5, np.nan, xt).astype(np.float32))
    with pytest.raises(TypeError, match=r"numpy array or torch\.Tensor"):
        estimator.predict(xt.tolist())
    with pytest.raises(ValueError, match="does not match"):
        estimator.loss_gradient(xt, yt[:, :-1])
    with pytest.raises(ValueError, match="non-integer"):
        estimator.loss_gradient(xt, yt + 0.5)
    with pytest.raises(ValueError, match=r"class ids \[9\]"):
        estimator.loss_gradient(xt, np.full_like(yt, 9))
    with pytest.raises(TypeError, match="integer class ids"):
        estimator.loss_gradient(xt, yt > 0)
    with pytest.raises(ValueError, match="optimizer"):
        estimator.fit(xt, yt)
    with pytest.raises(ValueError, match="batch_size"):
        estimator.predict(xt, batch_size=0)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        sart.PyTorchSegmenter(lambda x: x, input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        sart.PyTorchSegmenter(estimator.model, input_shape=(8, 8))
    with pytest.raises(ValueError, match="channels_first"):
        sart.PyTorchSegmenter(estimator.model, input_shape=(3, 8, 8), channels_first=False)
    with pytest.raises(ValueError, match="K ≥ 2"):
        sart.PyTorchSegmenter(nn.Conv2d(3, 1, 1), input_shape=(3, 8, 8))
    with pytest.raises(ValueError, match="preprocessing"):
        sart.PyTorchSegmenter(estimator.model, input_shape=(3, 8, 8), preprocessing=((0.5, 0.5), (1.0, 1.0)))


def test_fit_accepts_art_keywords_and_keeps_model_mode(trained, data):
    x, y = data[0][:8], data[1][:8]
    model = copy.deepcopy(trained).train()
    model.body[1].eval()
    flags = [m.training for m in model.modules()]
    est = sart.PyTorchSegmenter(
        model, input_shape=(3, SIZE, SIZE), optimizer=torch.optim.SGD(model.parameters(), lr=0.01)
    )
    before = copy.deepcopy(model.state_dict())
    est.fit(x, torch.from_numpy(y).float(), batch_size=3, nb_epochs=2, verbose=False, validation_data=None)
    assert [m.training for m in model.modules()] == flags
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.warns(UserWarning, match="ignores"):
        est.fit(x, y, batch_size=4, nb_epochs=1, not_an_art_argument=1)


def test_get_activations(estimator, data):
    xt = data[2][:3]
    assert estimator.layer_names[0] == "body"
    hidden = estimator.get_activations(xt, "body.2", batch_size=2)
    assert hidden.shape == (3, 8, SIZE, SIZE) and hidden.min() >= 0  # after the ReLU
    last = estimator.get_activations(xt, len(estimator.layer_names) - 1)
    np.testing.assert_allclose(last, estimator.predict(xt), atol=1e-6)
    with pytest.raises(ValueError, match="unknown layer"):
        estimator.get_activations(xt, "nope")


# ---------------------------------------------------------------------------- ART's own tools
def test_art_fgm_and_pgd_on_masks(estimator, data, clean_miou):
    xt, yt = data[2], data[3]
    fgm = FastGradientMethod(estimator, norm=np.inf, eps=EPS, batch_size=4)
    pgd_numpy = ProjectedGradientDescent(estimator, eps=EPS, eps_step=2 / 255, max_iter=5, verbose=False)
    for attack in (fgm, pgd_numpy):
        adv = attack.generate(xt, yt)
        _assert_bounded(adv, xt)
        assert _miou(estimator, adv, yt) < clean_miou - 0.15, type(attack).__name__
    # y=None: ART passes predictions (N, K, H, W) to loss_gradient, which argmaxes them
    _assert_bounded(fgm.generate(xt), xt)
    for attack in (  # iterative variants of the numpy path, and L2
        BasicIterativeMethod(estimator, eps=EPS, eps_step=2 / 255, max_iter=2, verbose=False),
        MomentumIterativeMethod(estimator, eps=EPS, eps_step=2 / 255, max_iter=2, verbose=False),
    ):
        _assert_bounded(attack.generate(xt, yt), xt)
    adv_l2 = FastGradientMethod(estimator, norm=2, eps=0.5).generate(xt, yt)
    assert np.linalg.norm((adv_l2 - xt).reshape(len(xt), -1), axis=1).max() <= 0.5 + 1e-5
    # what stock ART cannot do, and the adapters fix (or not: classifier-only attacks)
    for classifier_only in (ProjectedGradientDescentPyTorch, AutoProjectedGradientDescent):
        with pytest.raises(EstimatorError):
            classifier_only(estimator, eps=EPS, eps_step=2 / 255, max_iter=1, verbose=False)
    with pytest.raises(ValueError, match="Random initialisation is only supported for classification"):
        ProjectedGradientDescent(
            estimator, eps=EPS, eps_step=2 / 255, max_iter=1, num_random_init=1, verbose=False
        ).generate(xt, yt)


@pytest.mark.parametrize("implementation", ["pytorch", "numpy"])
def test_segmentation_pgd_random_init_restarts_and_targeted(estimator, data, clean_miou, implementation):
    xt, yt = data[2], data[3]
    np.random.seed(0)  # noqa: NPY002 (ART draws from the global generator)
    pgd = sart.SegmentationPGD(
        estimator, eps=EPS, eps_step=2 / 255, max_iter=4, num_random_init=2, batch_size=5, verbose=False,
        implementation=implementation,
    )  # fmt: skip
    expected_cls = sart.SegmentationPGDPyTorch if implementation == "pytorch" else sart.SegmentationPGDNumpy
    assert type(pgd._attack) is expected_cls
    adv = pgd.generate(xt, yt)
    _assert_bounded(adv, xt)
    assert _miou(estimator, adv, yt) < clean_miou - 0.15
    # y=None attacks the model's own prediction
    _assert_bounded(pgd.generate(xt), xt)

    # ART's perturbation mask still applies: nothing changes where it is zero
    keep = np.ones_like(xt)
    keep[:, :, : SIZE // 2] = 0
    adv_masked = pgd.generate(xt, yt, mask=keep)
    assert np.array_equal(adv_masked[:, :, : SIZE // 2], xt[:, :, : SIZE // 2])
    assert np.abs(adv_masked - xt).max() > 0

    # targeted: push every pixel to class 1; accuracy on the target masks rises
    target = np.full_like(yt, 1)
    targeted = sart.SegmentationPGD(
        estimator, eps=EPS, eps_step=2 / 255, max_iter=4, num_random_init=2, targeted=True, verbose=False,
        implementation=implementation,
    )  # fmt: skip
    adv_t = targeted.generate(xt, target)
    _assert_bounded(adv_t, xt)

    def on_target(images):
        return per_image_pixel_accuracy(torch.from_numpy(estimator.predict(images)), torch.from_numpy(target)).mean()

    assert on_target(adv_t) > on_target(xt) + 0.1


def test_segmentation_pgd_pytorch_keeps_the_best_restart(estimator, data):
    xt, yt = data[2][:4], data[3][:4]
    single = sart.SegmentationPGDPyTorch(
        estimator, eps=EPS, eps_step=2 / 255, max_iter=2, num_random_init=1, verbose=False
    )
    multi = sart.SegmentationPGDPyTorch(
        estimator, eps=EPS, eps_step=2 / 255, max_iter=2, num_random_init=3, verbose=False
    )
    np.random.seed(3)  # noqa: NPY002 (ART draws from the global generator)
    first = single.generate(xt, yt)
    np.random.seed(3)  # noqa: NPY002 (ART draws from the global generator)
    best = multi.generate(xt, yt)  # its first restart is `first`; the others may only improve it

    def accuracy(images):
        return per_image_pixel_accuracy(torch.from_numpy(estimator.predict(images)), torch.from_numpy(yt))

    assert bool((accuracy(best) <= accuracy(first)).all())


def test_adversarial_trainers_run_on_masks(trained, data):
    x, y = data[0][:8], data[1][:8]

    def fresh():
        model = copy.deepcopy(trained)
        est = sart.PyTorchSegmenter(
            model, input_shape=(3, SIZE, SIZE), optimizer=torch.optim.SGD(model.parameters(), lr=0.05)
        )
        return model, est, copy.deepcopy(model.state_dict())

    def changed(model, before):
        return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())

    model, est, before = fresh()
    AdversarialTrainer(est, FastGradientMethod(est, eps=EPS), ratio=0.5).fit(x, y, nb_epochs=1, batch_size=4)
    assert changed(model, before) and not model.training

    model, est, before = fresh()
    AdversarialTrainer(est, sart.NAA(est, eps=EPS, steps=2), ratio=1.0).fit(x, y, nb_epochs=1, batch_size=4)
    assert changed(model, before)

    model, est, before = fresh()  # stock Madry trainer: only without random init (see docs)
    AdversarialTrainerMadryPGD(
        est, nb_epochs=1, batch_size=4, eps=EPS, eps_step=2 / 255, max_iter=2, num_random_init=0
    ).fit(x, y)
    assert changed(model, before)

    model, est, before = fresh()
    trainer = sart.SegmentationAdversarialTrainerMadryPGD(est, nb_epochs=1, batch_size=4, max_iter=2)
    assert trainer.attack.num_random_init == 1 and trainer.attack.eps == pytest.approx(8 / 255)
    np.random.seed(0)  # noqa: NPY002 (ART draws from the global generator)
    trainer.fit(x, y)
    assert changed(model, before)
    assert trainer.get_classifier() is est


# ---------------------------------------------------------------------------- segrobust.art attacks
@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_art_attack_is_bit_identical_to_torch_attack(name, estimator, data, clean_miou):
    xt, yt = data[2], data[3]
    art_attack = getattr(sart, name)(estimator, eps=EPS, alpha=2 / 255, steps=5, batch_size=8)
    torch_attack = getattr(tattacks, name)(estimator.model, eps=EPS, alpha=2 / 255, steps=5)
    torch.manual_seed(0)
    adv = art_attack.generate(xt, yt)
    torch.manual_seed(0)
    expected = torch_attack(torch.from_numpy(xt), torch.from_numpy(yt)).numpy()
    np.testing.assert_array_equal(adv, expected)
    _assert_bounded(adv, xt)
    assert art_attack.stats is not None and art_attack.stats.loss.shape == (6, 8)
    if name == "AMA":
        assert _miou(estimator, adv, yt) > clean_miou
    else:
        assert _miou(estimator, adv, yt) < clean_miou - 0.15

    # y=None attacks the model's own prediction, as the torch attack with masks=None does
    torch.manual_seed(1)
    adv_none = art_attack.generate(xt)
    torch.manual_seed(1)
    np.testing.assert_array_equal(adv_none, torch_attack(torch.from_numpy(xt)).numpy())


def test_art_attack_batches_and_accepts_torch_and_float_labels(estimator, data):
    xt, yt = data[2], data[3]
    attack = sart.SegPGD(estimator, eps=EPS, alpha=2 / 255, steps=3, batch_size=3)
    torch_attack = tattacks.SegPGD(estimator.model, eps=EPS, alpha=2 / 255, steps=3)
    torch.manual_seed(0)
    adv = attack.generate(torch.from_numpy(xt), torch.from_numpy(yt).float())
    torch.manual_seed(0)
    parts = [torch_attack(torch.from_numpy(xt[i : i + 3]), torch.from_numpy(yt[i : i + 3])) for i in range(0, 8, 3)]
    np.testing.assert_array_equal(adv, torch.cat(parts).numpy())
    assert attack.stats.best_step.shape == (8,)


def test_art_attack_with_preprocessing_matches_torch_attack_on_the_same_chain(trained, data):
    xt, yt = data[2][:4], data[3][:4]
    mean, std = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)
    defence = Blur()
    est = sart.PyTorchSegmenter(
        trained, input_shape=(3, SIZE, SIZE), preprocessing=(mean, std), preprocessing_defences=[defence]
    )

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = trained

        def forward(self, x):
            x = defence.forward(x)[0]
            return self.model((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))

    torch.manual_seed(0)
    adv = sart.EroSeg(est, eps=EPS, alpha=2 / 255, steps=3, q0=0.3).generate(xt, yt)
    torch.manual_seed(0)
    expected = tattacks.EroSeg(Chain(), eps=EPS, alpha=2 / 255, steps=3, q0=0.3)(
        torch.from_numpy(xt), torch.from_numpy(yt)
    )
    np.testing.assert_allclose(adv, expected.numpy(), atol=1e-6)


def test_art_attack_targeted_matches_torch_targeted_by_label(estimator, data):
    xt = data[2][:4]
    target = np.zeros(xt.shape[:1] + xt.shape[2:], dtype=np.int64)
    attack = sart.NAA(estimator, eps=EPS, alpha=2 / 255, steps=3, targeted=True)
    torch_attack = tattacks.NAA(estimator.model, eps=EPS, alpha=2 / 255, steps=3)
    torch_attack.set_mode_targeted_by_label(quiet=True)
    torch.manual_seed(0)
    adv = attack.generate(xt, target)
    torch.manual_seed(0)
    np.testing.assert_array_equal(adv, torch_attack(torch.from_numpy(xt), torch.from_numpy(target)).numpy())
    with pytest.raises(ValueError, match="target masks"):
        attack.generate(xt)
    with pytest.raises(ValueError, match="targeted"):
        sart.AMA(estimator, targeted=True)


def test_budgets_are_in_clip_value_units(trained, data):
    xt, yt = data[2][:3], data[3][:3]

    class FromBytes(nn.Module):  # a model fed 0..255 images
        def __init__(self):
            super().__init__()
            self.model = trained

        def forward(self, x):
            return self.model(x / 255)

    est = sart.PyTorchSegmenter(FromBytes(), input_shape=(3, SIZE, SIZE), clip_values=(0.0, 255.0))
    torch.manual_seed(0)
    adv = sart.NAA(est, eps=8.0, alpha=2.0, steps=3).generate(xt * 255, yt)
    assert np.abs(adv - xt * 255).max() <= 8.0 + 1e-3 and adv.min() >= 0 and adv.max() <= 255
    torch.manual_seed(0)
    unit = tattacks.NAA(trained, eps=8 / 255, alpha=2 / 255, steps=3)(torch.from_numpy(xt), torch.from_numpy(yt))
    np.testing.assert_allclose(adv / 255, unit.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(0, 255\]"):
        sart.NAA(est, eps=300.0)


def test_attack_params_set_params_and_registration(estimator, data):
    attack = sart.EroSeg(estimator, eps=4 / 255, steps=2, q0=0.5, schedule="cosine")
    assert attack.attack_params == [
        "eps", "alpha", "steps", "loss", "random_start", "ignore_index", "nonfinite", "amp", "radius_schedule",
        "step_rule", "q0", "schedule", "kernel_size", "fooled_weight", "confidence", "batch_size", "targeted",
        "verbose",
    ]  # fmt: skip
    assert list(inspect.signature(sart.EroSeg).parameters)[:3] == ["estimator", "eps", "alpha"]
    assert attack.ignore_index is None and attack._torch_attack().ignore_index == estimator.ignore_index
    attack.set_params(steps=3, kernel_size=5)
    torch_attack = attack._torch_attack()
    assert (torch_attack.steps, torch_attack.kernel_size, torch_attack.q0, torch_attack.schedule) == (
        3,
        5,
        0.5,
        "cosine",
    )
    with pytest.raises(ValueError, match="kernel_size"):
        attack.set_params(kernel_size=4)
    with pytest.raises(ValueError, match="cannot be set"):
        attack.set_params(not_a_param=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epsilon'"):
        sart.NAA(estimator, epsilon=0.1)
    with pytest.raises(ValueError, match="batch_size"):
        sart.NAA(estimator, batch_size=0)
    with pytest.raises(ValueError, match="perturbation mask"):
        sart.NAA(estimator, steps=1).generate(data[2][:1], data[3][:1], mask=np.ones((1, 3, SIZE, SIZE)))
    with pytest.raises(Exception, match="PyTorchSegmenter"):
        sart.NAA(object())
    assert set(ATTACK_NAMES) <= set(sart.ART_ATTACKS)

    class Doubled(tattacks.NAA):  # "a new torch attack"
        pass

    DoubledART = sart.make_art_attack(Doubled)  # the one-liner
    assert type(sart.ART_ATTACKS) is dict and "Doubled" not in sart.ART_ATTACKS  # a plain dict: nothing self-registers
    torch.manual_seed(0)
    adv = DoubledART(estimator, eps=EPS, steps=2).generate(data[2][:2], data[3][:2])
    torch.manual_seed(0)
    np.testing.assert_array_equal(
        adv,
        Doubled(estimator.model, eps=EPS, steps=2)(
            torch.from_numpy(data[2][:2]), torch.from_numpy(data[3][:2])
        ).numpy(),
    )


def test_example_runs_fast():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "art_quickstart.py"), "--fast"],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "segrobust.art.EroSeg" in result.stdout and "after adversarial fine-tuning" in result.stdout


def test_art_rain_attack_is_bit_identical_to_torch_rain_attack(estimator, data):
    xt, yt = data[2], data[3]
    art_attack = sart.RainAttack(estimator, ranges="light", steps=2, eps=2 / 255, batch_size=8)
    torch_attack = tattacks.RainAttack(estimator.model, ranges="light", steps=2, eps=2 / 255)
    torch.manual_seed(0)
    adv = art_attack.generate(xt, yt)
    torch.manual_seed(0)
    np.testing.assert_array_equal(adv, torch_attack(torch.from_numpy(xt), torch.from_numpy(yt)).numpy())
    assert adv.min() >= 0 and adv.max() <= 1


def test_pearl_preprocessor_matches_the_torch_pearl_pipeline(trained, data):
    from segrobust.defenses import PEARL
    from segrobust.defenses.derain import ResidualUNet

    torch.manual_seed(0)
    derainer = ResidualUNet(width=8)
    torch.nn.init.normal_(derainer.out.weight, std=0.02)
    model = trained
    est = sart.PyTorchSegmenter(
        model,
        input_shape=(3, SIZE, SIZE),
        nb_classes=NUM_CLASSES,
        preprocessing_defences=[sart.PEARLPreprocessor(derainer, device_type="cpu")],
    )
    xt, yt = data[2][:4], data[3][:4]
    pearl = PEARL(model, derainer).eval()
    with torch.no_grad():
        expected = pearl(torch.from_numpy(xt)).numpy()
    np.testing.assert_allclose(est.predict(xt), expected, rtol=1e-5, atol=1e-5)
    grad = est.loss_gradient(xt, yt)
    x = torch.from_numpy(xt).requires_grad_(True)
    logits = pearl(x)
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(yt).long(), ignore_index=255)
    (expected_grad,) = torch.autograd.grad(loss, x)
    np.testing.assert_allclose(grad, expected_grad.numpy(), rtol=1e-4, atol=1e-6)
    assert np.abs(grad).sum() > 0
