"""The mmsegmentation recipe of docs/ecosystem/mmseg.md, run as written.

Always against a stand-in segmentor with mmseg 1.x's interface (``data_preprocessor`` with
``mean``/``std``/``channel_conversion``/``pad_val``/``test_cfg``, ``encode_decode(inputs,
batch_img_metas)`` resizing its logits to ``pad_shape``, ``test_cfg``, ``num_classes``), whose
reference is the preprocessing mmseg does (BGR 0-255 in, channel swap, normalisation, padding);
against mmsegmentation itself only when it imports (it needs mmcv, which the normal suite does not).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segrobust.attacks import NAA, ReliableEnsemble
from segrobust.models import SlidingWindow
from segrobust.models.inference import window_grid

PAGE = Path(__file__).resolve().parents[1] / "docs" / "ecosystem" / "mmseg.md"
BLOCKS = {
    match.group(1): match.group(0)
    for match in re.finditer(r"(?<=```python\n)# (recipe|example):.*?(?=```)", PAGE.read_text(), flags=re.S)
}
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # mmseg's ImageNet statistics, 0-255
K = 4
# (x * 255 - m) / s against (x - m / 255) / (s / 255): float32 rounding, measured <= 3e-7 on the stand-in
# logits (about 1 in size); a wrong channel order, statistic order or pad value moves them by 0.1 or more.
CLOSE = {"rtol": 1e-4, "atol": 1e-4}
# Against mmseg's predict (random FCN, logits about 0.14 in size): measured <= 5e-8; the same mistakes
# (channel order, statistics order, pad value, padding left on) move them by 2e-4 to 2e-3.
MMSEG_CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def recipe() -> dict:
    namespace: dict = {"__name__": "segrobust_mmseg"}
    exec(compile(BLOCKS["recipe"], f"{PAGE.name}: recipe", "exec"), namespace)
    return namespace


class StandInPreprocessor(nn.Module):
    """mmseg's ``SegDataPreProcessor`` attributes, and what it does at test time (``reference``)."""

    def __init__(self, mean=MEAN, std=STD, bgr_to_rgb=True, test_cfg=None, pad_val=0.0):
        super().__init__()
        if mean is not None:
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), False)
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), False)
        self.channel_conversion = bgr_to_rgb
        self.test_cfg = test_cfg
        self.pad_val = pad_val

    def reference(self, bgr: torch.Tensor) -> torch.Tensor:
        inputs = bgr.flip(1) if self.channel_conversion else bgr
        if hasattr(self, "mean"):
            inputs = (inputs - self.mean) / self.std
        divisor = (self.test_cfg or {}).get("size_divisor")
        if divisor:
            height, width = inputs.shape[-2:]
            pad_h, pad_w = -height % divisor, -width % divisor
            inputs = F.pad(inputs, (0, pad_w, 0, pad_h), value=self.pad_val)
        return inputs


def _metas(inputs: torch.Tensor) -> list:
    size = tuple(inputs.shape[-2:])
    return [dict(ori_shape=size, img_shape=size, pad_shape=size) for _ in range(len(inputs))]


class StandInSegmentor(nn.Module):
    """mmseg 1.x ``EncoderDecoder``'s interface: a head at 1/4, ``encode_decode`` resizing to ``pad_shape``."""

    def __init__(self, preprocessor: StandInPreprocessor, test_cfg=None, out_channels: int = K):
        super().__init__()
        self.data_preprocessor = preprocessor
        self.test_cfg = test_cfg
        self.num_classes = max(out_channels, 2)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, out_channels, 4, stride=4))

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list) -> torch.Tensor:
        assert len(batch_img_metas) == len(inputs)
        for meta in batch_img_metas:
            assert {"ori_shape", "img_shape", "pad_shape"} <= set(meta)
            assert tuple(meta["pad_shape"][:2]) == tuple(inputs.shape[-2:])
        size = batch_img_metas[0]["pad_shape"][:2]
        return F.interpolate(self.net(inputs), size=size, mode="bilinear", align_corners=False)

    def reference(self, images: torch.Tensor) -> torch.Tensor:
        """What ``predict`` computes for RGB ``[0, 1]`` images loaded as mmseg loads them (BGR, 0-255)."""
        inputs = self.data_preprocessor.reference(images.flip(1) * 255)
        height, width = images.shape[-2:]
        test_cfg = self.test_cfg or {}
        if test_cfg.get("mode") != "slide":
            return self.encode_decode(inputs, _metas(inputs))[..., :height, :width]
        total = torch.zeros(len(inputs), K, *inputs.shape[-2:])
        count = torch.zeros(1, 1, *inputs.shape[-2:])
        for top, bottom, left, right in window_grid(inputs.shape[-2:], test_cfg["crop_size"], test_cfg["stride"]):
            crop = inputs[..., top:bottom, left:right]
            total[..., top:bottom, left:right] += self.encode_decode(crop, _metas(crop))
            count[..., top:bottom, left:right] += 1
        return (total / count)[..., :height, :width]


@pytest.mark.parametrize("bgr_to_rgb", [True, False])
@pytest.mark.parametrize("divisor", [None, 16])
def test_recipe_logits_equal_mmseg_preprocessing_then_encode_decode(bgr_to_rgb, divisor):
    torch.manual_seed(0)
    test_cfg = None if divisor is None else {"size_divisor": divisor}
    segmentor = StandInSegmentor(StandInPreprocessor(bgr_to_rgb=bgr_to_rgb, test_cfg=test_cfg)).eval()
    images = torch.rand(2, 3, 20, 28)
    logits = recipe()["from_mmseg"](segmentor)(images)
    assert logits.shape == (2, K, 20, 28)
    torch.testing.assert_close(logits, segmentor.reference(images), **CLOSE)


def test_the_channel_order_matters_so_the_comparison_can_tell():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 20, 28)
    rgb = StandInSegmentor(StandInPreprocessor(bgr_to_rgb=True)).eval()
    bgr = copy.deepcopy(rgb)
    bgr.data_preprocessor.channel_conversion = False
    assert not torch.allclose(rgb.reference(images), bgr.reference(images), **CLOSE)


def test_a_preprocessor_without_statistics_feeds_0_255_pixels():
    torch.manual_seed(0)
    segmentor = StandInSegmentor(StandInPreprocessor(mean=None, bgr_to_rgb=False)).eval()
    images = torch.rand(1, 3, 16, 24)
    torch.testing.assert_close(recipe()["from_mmseg"](segmentor)(images), segmentor.reference(images), **CLOSE)


def test_slide_mode_runs_segrobust_sliding_window_with_the_config_crop_and_stride():
    torch.manual_seed(0)
    test_cfg = {"mode": "slide", "crop_size": (16, 16), "stride": (12, 12)}
    segmentor = StandInSegmentor(StandInPreprocessor(test_cfg={"size_divisor": 8}), test_cfg=test_cfg).eval()
    images = torch.rand(1, 3, 30, 37)
    namespace = recipe()
    model = namespace["from_mmseg"](segmentor)
    slide = model.model.network
    assert isinstance(slide, SlidingWindow) and (slide.crop, slide.stride) == ((16, 16), (12, 12))
    torch.testing.assert_close(model(images), segmentor.reference(images), **CLOSE)
    whole = namespace["from_mmseg"](segmentor, slide=False)
    assert not isinstance(whole.model.network, SlidingWindow)


def test_attacks_run_through_the_recipe_within_eps_and_leave_the_segmentor_alone():
    torch.manual_seed(0)
    test_cfg = {"mode": "slide", "crop_size": (16, 16), "stride": (12, 12)}
    segmentor = StandInSegmentor(StandInPreprocessor(bgr_to_rgb=False), test_cfg=test_cfg).eval()
    before = copy.deepcopy(segmentor.state_dict())
    model = recipe()["from_mmseg"](segmentor)
    images, masks = torch.rand(1, 3, 24, 32), torch.randint(0, K, (1, 24, 32))
    probe = images.clone().requires_grad_(True)
    F.cross_entropy(model(probe), masks).backward()
    assert probe.grad is not None and probe.grad.abs().sum() > 0 and torch.isfinite(probe.grad).all()
    eps = 4 / 255
    for attack in (NAA(model, eps=eps, alpha=1 / 255, steps=2), ReliableEnsemble(model, eps=eps, steps=1)):
        adversarial = attack(images, masks)
        assert (adversarial - images).abs().max() <= eps + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert not segmentor.training
    for name, tensor in segmentor.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_a_binary_sigmoid_head_is_refused_with_the_class_count():
    segmentor = StandInSegmentor(StandInPreprocessor(), out_channels=1).eval()
    with pytest.raises(ValueError, match="1 classes but num_classes=2"):
        recipe()["from_mmseg"](segmentor)(torch.rand(1, 3, 16, 16))


# --- mmsegmentation itself, when it imports -------------------------------------------------------


def _mmseg_missing() -> str:
    try:
        import mmseg.models  # noqa: F401
    except Exception as error:  # ImportError, or mmseg's own assertion on the mmcv version
        return f"mmsegmentation (with a compatible mmcv) is not importable: {type(error).__name__}: {error}"
    return ""


MMSEG_MISSING = _mmseg_missing()
needs_mmseg = pytest.mark.skipif(bool(MMSEG_MISSING), reason=MMSEG_MISSING or "mmseg importable")


@pytest.fixture(scope="module")
def example() -> dict:
    namespace = recipe()
    exec(compile(BLOCKS["example"], f"{PAGE.name}: example", "exec"), namespace)
    return namespace


@needs_mmseg
def test_the_example_runs_naa_and_the_reliable_ensemble(example):
    assert isinstance(example["model"].model.network, SlidingWindow)
    assert not any(module.training for module in example["segmentor"].modules())


def _mmseg_logits(segmentor: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """mmseg's own path: BGR 0-255 images through ``SegDataPreProcessor`` and ``predict``."""
    from mmseg.structures import SegDataSample

    size = tuple(images.shape[-2:])
    bgr = [image.flip(0) * 255 for image in images]
    samples = [SegDataSample(metainfo=dict(ori_shape=size, img_shape=size)) for _ in bgr]
    data = segmentor.data_preprocessor(dict(inputs=bgr, data_samples=samples), False)
    with torch.no_grad():
        return torch.stack([s.seg_logits.data for s in segmentor.predict(data["inputs"], data["data_samples"])])


@needs_mmseg
@pytest.mark.parametrize(
    ("mode", "padding"),
    [("whole", {"size_divisor": 32}), ("slide", None), ("slide", {"size_divisor": 32}), ("whole", None)],
)
@pytest.mark.parametrize("bgr_to_rgb", [True, False])
def test_recipe_logits_equal_mmseg_predict(example, mode, padding, bgr_to_rgb):
    from mmengine.config import ConfigDict
    from mmseg.registry import MODELS

    config = copy.deepcopy(example["config"])
    config["data_preprocessor"].update(test_cfg=padding, bgr_to_rgb=bgr_to_rgb)
    config["test_cfg"]["mode"] = mode
    segmentor = MODELS.build(ConfigDict(config)).eval()
    segmentor.load_state_dict(example["segmentor"].state_dict())
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    logits = example["from_mmseg"](segmentor)(images)
    torch.testing.assert_close(logits.detach(), _mmseg_logits(segmentor, images), **MMSEG_CLOSE)


@needs_mmseg
def test_gradients_reach_the_image_through_mmseg(example):
    images = torch.rand(1, 3, 40, 56, requires_grad=True)
    masks = torch.randint(0, example["K"], (1, 40, 56))
    F.cross_entropy(example["model"](images), masks).backward()
    assert images.grad.abs().sum() > 0 and torch.isfinite(images.grad).all()
