"""Bad input gets a clear error naming the argument: metrics, rain, losses, ART, and the shared checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from segrobust import validation as V
from segrobust.losses import masked_cross_entropy
from segrobust.metrics import ConfusionMatrix, confusion_matrix
from segrobust.rain import render_rain, sample_rain_params
from segrobust.rain.functional import line_kernel, streak_layer

# ----------------------------------------------------------------------------- items 6/7: ConfusionMatrix


def _target(n: int = 1) -> torch.Tensor:
    return torch.randint(0, 5, (n, 4, 4), generator=torch.Generator().manual_seed(0))


def test_confusion_matrix_rejects_non_finite_logits_naming_the_batch():
    cm = ConfusionMatrix(5)
    cm.update(torch.randn(1, 5, 4, 4), _target())
    logits = torch.randn(1, 5, 4, 4)
    logits[0, 2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf.*batch 1"):
        cm.update(logits, _target())
    assert int(cm.matrix.sum()) == 16  # the bad batch added nothing
    logits[0, 2, 1, 1] = float("inf")
    with pytest.raises(ValueError, match="batch 1"):
        cm.update(logits, _target())


@pytest.mark.parametrize(
    ("pred", "error", "message"),
    [
        (torch.randn(1, 3, 4, 4), ValueError, r"logits for 3 classes but num_classes is 5"),
        (torch.full((1, 4, 4), 2.7), TypeError, "integer class ids"),
        (np.zeros((1, 4, 4), dtype=np.int64), TypeError, r"torch.Tensor.*numpy|ndarray"),
        (torch.zeros(1, 5, 4, 4, dtype=torch.long), TypeError, "float logits"),
    ],
)
def test_confusion_matrix_rejects_bad_predictions(pred, error, message):
    cm = ConfusionMatrix(5)
    with pytest.raises(error, match=message):
        cm.update(pred, _target())
    with pytest.raises(error, match=message):
        confusion_matrix(pred, _target(), 5)
    assert int(cm.matrix.sum()) == 0


def test_confusion_matrix_rejects_numpy_target_and_bad_num_classes():
    with pytest.raises(TypeError, match=r"target must be a torch\.Tensor"):
        ConfusionMatrix(5).update(torch.zeros(1, 4, 4, dtype=torch.long), np.zeros((1, 4, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="num_classes must be an int, got bool"):
        ConfusionMatrix(True)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)
    with pytest.raises(TypeError, match="ignore_index"):
        ConfusionMatrix(5, ignore_index=2.5)


def test_confusion_matrix_batch_count_restarts_on_reset():
    cm = ConfusionMatrix(5)
    cm.update(torch.randn(1, 5, 4, 4), _target())
    cm.reset()
    with pytest.raises(ValueError, match="batch 0"):
        cm.update(torch.full((1, 5, 4, 4), float("nan")), _target())


# ----------------------------------------------------------------------------- item 7: ART nb_classes


def test_art_segmenter_checks_nb_classes_against_the_model():
    pytest.importorskip("art")
    from segrobust.art import PyTorchSegmenter

    model = nn.Conv2d(3, 5, 1)
    estimator = PyTorchSegmenter(model, input_shape=(3, 8, 8), nb_classes=3)
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"predicts 5 classes .* nb_classes=3"):
        estimator.predict(x)
    with pytest.raises(ValueError, match="nb_classes=3"):
        estimator.loss_gradient(x, np.zeros((1, 8, 8), dtype=np.int64))
    assert PyTorchSegmenter(model, input_shape=(3, 8, 8)).predict(x).shape == (1, 5, 8, 8)


# ----------------------------------------------------------------------------- item 8: edge_softness


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0.0, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
    ],
)
def test_edge_softness_is_validated_in_the_functional_core(value, error):
    images = torch.rand(1, 3, 8, 8)
    params = sample_rain_params(1, (8, 8), "heavy", generator=torch.Generator().manual_seed(0))
    with pytest.raises(error, match="edge_softness"):
        render_rain(images, params, edge_softness=value)
    with pytest.raises(error, match="edge_softness"):
        line_kernel(torch.zeros(1), torch.ones(1), torch.ones(1), (5, 5), edge_softness=value)
    with pytest.raises(error, match="edge_softness"):
        streak_layer(
            params["noise"],
            params["density"],
            params["angle"],
            params["length"],
            params["width"],
            params["intensity"],
            edge_softness=value,
        )


def test_small_positive_edge_softness_gives_finite_gradients():
    images = torch.rand(1, 3, 8, 8)
    params = sample_rain_params(1, (8, 8), "heavy", generator=torch.Generator().manual_seed(0))
    length = params["length"].clone().requires_grad_(True)
    render_rain(images, {**params, "length": length}, edge_softness=0.05).sum().backward()
    assert bool(torch.isfinite(length.grad).all())


# ----------------------------------------------------------------------------- item 11: labels >= K


def test_masked_cross_entropy_rejects_class_ids_beyond_the_logits():
    logits = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"target contains class ids \[7\].*3 classes"):
        masked_cross_entropy(logits, torch.tensor([[[0, 7], [255, 1]]]))
    with pytest.raises(ValueError, match="class ids"):
        masked_cross_entropy(logits, torch.tensor([[[0, -1], [255, 1]]]))
    assert float(masked_cross_entropy(logits, torch.tensor([[[0, 255], [2, 1]]]))) == pytest.approx(math.log(3))


def test_depth_multitask_loss_rejects_mask_ids_beyond_the_classes():
    from segrobust.defenses.depth import DepthMultiTaskOutput, depth_multitask_loss

    output = DepthMultiTaskOutput(torch.zeros(1, 3, 4, 4), torch.full((1, 1, 4, 4), 0.5), None)
    with pytest.raises(ValueError, match=r"class ids \[4\].*3 classes"):
        depth_multitask_loss(output, {"mask": torch.full((1, 4, 4), 4)})


# ----------------------------------------------------------------------------- shared checks


def test_check_images_options_cover_the_rain_rules():
    with pytest.raises(ValueError, match="is empty"):
        V.check_images(torch.rand(0, 3, 4, 4))
    assert V.check_images(torch.rand(0, 3, 4, 4), allow_empty=True).shape[0] == 0
    slightly_above = torch.full((1, 1, 2, 2), 1 + 1e-6)
    V.check_images(slightly_above)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*before normalisation"):
        V.check_images(slightly_above, tol=0.0, hint="apply rain before normalisation")


def test_check_number_and_shape():
    assert V.check_number(2, "x", low=0, high=2) == 2.0
    with pytest.raises(ValueError, match="x must be a finite number < 2"):
        V.check_number(2, "x", high=2, high_inclusive=False)
    with pytest.raises(TypeError, match="x must be"):
        V.check_number(None, "x")
    with pytest.raises(ValueError, match=r"masks must have shape \(N, H, W\)"):
        V.check_shape(torch.zeros(2, 2), (None, None, None), "masks")
