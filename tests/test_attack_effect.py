"""On a small smp model trained here, attacks lower mIoU and AMA raises it."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from conftest import NUM_CLASSES

from segrobust.attacks import AMA, NAA, CosPGD, EroSeg, SegPGD
from segrobust.attacks import functional as AF
from segrobust.losses import EroSegLoss
from segrobust.metrics import ConfusionMatrix


def _miou(model, images, masks):
    cm = ConfusionMatrix(NUM_CLASSES)
    with torch.no_grad():
        cm.update(model(images), masks)
    return cm.compute().miou


@pytest.fixture(scope="module")
def clean_miou(trained_smp, blobs_test):
    return _miou(trained_smp, *blobs_test)


def test_trained_model_is_a_meaningful_target(clean_miou):
    assert clean_miou > 0.75


@pytest.mark.parametrize("attack_cls", [NAA, SegPGD, CosPGD, EroSeg])
def test_attacks_lower_miou(attack_cls, trained_smp, blobs_test, clean_miou):
    images, masks = blobs_test
    torch.manual_seed(0)
    adv = attack_cls(trained_smp, eps=4 / 255, alpha=1 / 255, steps=10)(images, masks)
    assert _miou(trained_smp, adv, masks) < clean_miou - 0.05


def test_naa_lowers_and_ama_raises_miou_and_both_beat_doing_nothing(trained_smp, blobs_test, clean_miou):
    images, masks = blobs_test
    torch.manual_seed(0)
    naa = _miou(trained_smp, NAA(trained_smp, eps=4 / 255, alpha=1 / 255, steps=10)(images, masks), masks)
    ama = _miou(trained_smp, AMA(trained_smp, eps=4 / 255, alpha=1 / 255, steps=10)(images, masks), masks)
    assert naa < clean_miou - 0.05
    assert ama > clean_miou + 0.02 or ama > 0.99


class _RecordingErosion(EroSegLoss):
    """EroSeg's loss, recording the attacked set and the logits at every call."""

    history: ClassVar[list] = []

    def weights(self, logits, labels, valid, step, steps):
        weights = super().weights(logits, labels, valid, step, steps)
        type(self).history.append((self.attacked.clone(), logits.detach().clone()))
        return weights


def test_eroseg_attacked_set_grows_monotonically_from_least_confident_pixels(trained_smp, blobs_test):
    images, masks = blobs_test
    masks = masks.clone()
    masks[:, :4] = 255
    _RecordingErosion.history = []
    attack = EroSeg(trained_smp, eps=4 / 255, steps=6, q0=0.2, random_start=False, loss=_RecordingErosion)
    attack(images, masks)
    history = _RecordingErosion.history
    sets = [s for s, _ in history]
    valid = masks != 255
    for before, after in zip(sets, sets[1:]):
        assert (after | before).equal(after), "a pixel left the attacked set"
        assert after.sum() >= before.sum()
    assert sets[-1].equal(valid), "by the last step every valid pixel is attacked"
    assert not (sets[0] & ~valid).any()
    # the first set holds the least confident 20% of valid pixels of each image
    conf = AF.pixel_confidence(history[0][1], masks)
    for i in range(images.shape[0]):
        chosen, rest = conf[i][sets[0][i]], conf[i][valid[i] & ~sets[0][i]]
        assert chosen.max() <= rest.min()
        fraction = sets[0][i].sum() / valid[i].sum()
        assert 0.2 <= fraction < 0.2 + 0.05


def test_eroseg_schedules():
    model = torch.nn.Conv2d(3, NUM_CLASSES, 1)
    linear = EroSeg(model, steps=5, q0=0.2)
    assert [round(linear.quantile_at(t), 3) for t in range(1, 6)] == [0.2, 0.4, 0.6, 0.8, 1.0]
    cosine = EroSeg(model, steps=5, q0=0.2, schedule="cosine")
    qs = [cosine.quantile_at(t) for t in range(1, 6)]
    assert qs[0] == pytest.approx(0.2) and qs[-1] == pytest.approx(1.0) and qs == sorted(qs)
    custom = EroSeg(model, steps=3, q0=0.1, schedule=lambda p: p**2)
    assert custom.quantile_at(3) == 1.0
