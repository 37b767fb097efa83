"""Query-based models (Mask2Former, MaskFormer, OneFormer) through SegmentationModel, and num_classes checks.

The reference is the models' own semantic post-processing: softmax over the
classes without the no-object class times the sigmoid masks, summed over the
queries (Hugging Face's ``post_process_semantic_segmentation``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_blobs
from torch import nn

from segrobust.attacks import NAA
from segrobust.metrics import mean_iou, per_image_confusion
from segrobust.models import ModelLoadError, SegmentationModel, load_model
from segrobust.models.huggingface import QUERY_SCORE_FLOOR, query_semantic_log_probs
from segrobust.utils import segmentation_logits

QUERIES, CLASSES = 6, 4


class QueryNet(nn.Module):
    """A tiny query-based segmenter: query ``q`` leans to class ``q % K`` and claims pixels whose colour
    (pooled 4 x 4, so the mask logits are at 1/4 resolution) lies along its own direction."""

    def __init__(self, queries: int = QUERIES, classes: int = CLASSES, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.masks = nn.Conv2d(3, queries, 1)
        self.classes = nn.Parameter(torch.randn(queries, classes + 1, generator=generator))
        with torch.no_grad():
            self.masks.weight.copy_(torch.randn(queries, 3, 1, 1, generator=generator))
            self.masks.bias.zero_()
            self.classes[torch.arange(queries), torch.arange(queries) % classes] += 4.0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        colour = F.avg_pool2d(x - 0.5, 4)
        class_logits = self.classes.expand(x.shape[0], -1, -1)
        return {"class_queries_logits": class_logits, "masks_queries_logits": 40 * self.masks(colour)}


def reference_semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor, size) -> torch.Tensor:
    """The post-processing as Mask2Former writes it: upsample mask logits, sigmoid, einsum with class softmax."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    return torch.einsum("bqc,bqhw->bchw", class_logits.softmax(-1)[..., :-1], masks)


def _argmax_agrees_except_near_ties(ours: torch.Tensor, scores: torch.Tensor) -> None:
    top2 = scores.topk(2, dim=1).values
    near_tie = (top2[:, 0] - top2[:, 1]) <= 1e-5 * top2[:, 0].abs().clamp_min(1e-6)
    differ = ours.argmax(1) != scores.argmax(1)
    assert not bool((differ & ~near_tie).any()), f"{int(differ.sum())} pixels differ away from ties"


def test_query_outputs_become_the_models_semantic_prediction():
    torch.manual_seed(0)
    net = QueryNet().eval()
    model = SegmentationModel(net)
    images = torch.rand(3, 3, 40, 56)
    out = model(images)
    raw = net(images)
    scores = reference_semantic_scores(raw["class_queries_logits"], raw["masks_queries_logits"], (40, 56))
    assert out.shape == (3, CLASSES, 40, 56) and out.dtype == torch.float32
    _argmax_agrees_except_near_ties(out, scores)
    floored = scores + QUERY_SCORE_FLOOR
    expected = floored / floored.sum(1, keepdim=True)
    assert torch.allclose(out.softmax(1), expected, rtol=1e-4, atol=1e-6)  # softmax(returned) = normalised scores
    assert torch.allclose(out.exp().sum(1), torch.ones(3, 40, 56), atol=1e-5)  # log-probabilities


def test_argmax_equals_hugging_face_post_processing():
    transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install segrobust[hf])")
    from types import SimpleNamespace

    torch.manual_seed(1)
    # Mask2Former's processor upsamples the mask logits to 384 x 384 (its input size) before the sigmoid.
    outputs = SimpleNamespace(
        class_queries_logits=3 * torch.randn(2, QUERIES, CLASSES + 1),
        masks_queries_logits=4 * torch.randn(2, QUERIES, 96, 96),
    )
    theirs = transformers.Mask2FormerImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=[(384, 384)] * 2
    )
    ours = query_semantic_log_probs(
        outputs.class_queries_logits,
        F.interpolate(outputs.masks_queries_logits, size=(384, 384), mode="bilinear", align_corners=False),
    )
    scores = reference_semantic_scores(outputs.class_queries_logits, outputs.masks_queries_logits, (384, 384))
    assert torch.equal(torch.stack(theirs), scores.argmax(1))  # the reference is theirs
    _argmax_agrees_except_near_ties(ours, scores)


def test_gradients_are_finite_even_where_no_query_claims_a_pixel():
    torch.manual_seed(0)
    net = QueryNet().eval()
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    labels = torch.randint(0, CLASSES, (2, 32, 32))
    F.cross_entropy(SegmentationModel(net)(images), labels).backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    # Every query says "no object" and every mask is off: all scores underflow to 0.
    class_logits = torch.zeros(1, QUERIES, CLASSES + 1)
    class_logits[..., -1] = 200.0
    mask_logits = torch.full((1, QUERIES, 8, 8), -200.0, requires_grad=True)
    out = query_semantic_log_probs(class_logits.requires_grad_(), mask_logits)
    assert torch.isfinite(out).all() and torch.allclose(out.exp(), torch.full_like(out, 1 / CLASSES))
    out[:, 0].sum().backward()
    assert torch.isfinite(mask_logits.grad).all() and torch.isfinite(class_logits.grad).all()


def test_an_attack_through_the_adapter_lowers_the_miou_of_a_query_model():
    model = SegmentationModel(QueryNet().eval())
    images = make_blobs(4, 32)[0]
    with torch.no_grad():
        labels = model(images).argmax(1)  # the clean prediction: clean mIoU is 1
    adversarial = NAA(model, eps=8 / 255, alpha=2 / 255, steps=10)(images, labels)
    assert (adversarial - images).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        confusion = per_image_confusion(model(adversarial), labels, CLASSES).sum(0)
    assert mean_iou(confusion) < 0.9


# ----------------------------------------------------------------------------- output_key and num_classes
def test_output_key_naming_query_masks_is_refused():
    # issue 22: following the old hint (output_key="masks_queries_logits") treated 20 queries as classes, silently.
    model = SegmentationModel(QueryNet(queries=20, classes=11), output_key="masks_queries_logits")
    with pytest.raises(ValueError, match=r"output_key='masks_queries_logits' names a tensor of a query-based model"):
        model(torch.rand(1, 3, 32, 32))


def test_the_hint_for_query_outputs_names_the_real_remedy():
    with pytest.raises(TypeError, match=r"query-based outputs .*wrap it in segrobust.models.SegmentationModel") as info:
        segmentation_logits(QueryNet()(torch.rand(1, 3, 16, 16)))
    assert "SegmentationModel(model, output_key" not in str(info.value)


class AuxNet(nn.Module):
    def __init__(self, classes: int = 11, aux: int = 20):
        super().__init__()
        self.head, self.aux = nn.Conv2d(3, classes, 1), nn.Conv2d(3, aux, 1)

    def forward(self, x):
        return {"seg": self.head(x), "aux": self.aux(x), "extra": x}


def test_output_key_with_another_channel_count_than_num_classes_is_refused():
    images = torch.rand(1, 3, 8, 8)
    assert SegmentationModel(AuxNet(), output_key="seg", num_classes=11)(images).shape == (1, 11, 8, 8)
    with pytest.raises(ValueError, match=r"output_key='aux' has 20 classes but num_classes=11"):
        SegmentationModel(AuxNet(), output_key="aux", num_classes=11)(images)
    with pytest.raises(
        ValueError, match=r"class_queries_logits \(K \+ 1 with no-object\) has 4 classes but num_classes=11"
    ):
        SegmentationModel(QueryNet(), num_classes=11)(images)
    with pytest.raises(ValueError, match=r"num_classes must be a positive int"):
        SegmentationModel(AuxNet(), num_classes=0)


def build_aux_net(num_classes: int = 11, aux: int = 20) -> nn.Module:
    return AuxNet(num_classes, aux)


def test_load_model_passes_num_classes_and_output_key(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aux_models", sys.modules[__name__])
    model = load_model("aux_models:build_aux_net", num_classes=11, output_key="seg")
    assert isinstance(model, SegmentationModel) and model.num_classes == 11
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 11, 8, 8)
    wrong = load_model("aux_models:build_aux_net", num_classes=11, output_key="aux")
    with pytest.raises(ValueError, match=r"output_key='aux' has 20 classes but num_classes=11"):
        wrong(torch.rand(1, 3, 8, 8))
    spec = load_model(
        "unet:resnet18:encoder_depth=3:decoder_channels=16,8,8", num_classes=4, mean=[0.5] * 3, std=[0.2] * 3
    )
    assert spec.num_classes == 4
    with pytest.raises(ModelLoadError, match=r"output_key must be a string"):
        load_model("aux_models:build_aux_net", output_key=3)
