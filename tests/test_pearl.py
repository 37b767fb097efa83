"""PEARL: the wrapper is transparent, the segmenter stays frozen, AMA targets help and are cached."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import NUM_CLASSES

from segrobust.attacks import NAA
from segrobust.defenses import PEARL, RECIPES
from segrobust.defenses.derain import PReNet, ResidualUNet, build_derainer
from segrobust.defenses.pearl_training import AMATargetDataset, compute_ama_targets, fit_pearl
from segrobust.metrics import per_image_pixel_accuracy
from segrobust.training import RECIPES as SEGMENTER_RECIPES


class _Items(torch.utils.data.Dataset):
    def __init__(self, images, masks):
        self.images, self.masks = images, masks

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return {"image": self.images[i], "mask": self.masks[i]}


def test_pearl_output_equals_composition_and_gradients_reach_both_parts(trained_tiny):
    torch.manual_seed(0)
    derainer = ResidualUNet(width=8)
    torch.nn.init.normal_(derainer.out.weight, std=0.01)  # not the identity, so D matters
    model = PEARL(trained_tiny, derainer).eval()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = model(x)
    torch.testing.assert_close(out, trained_tiny(derainer(x)))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in derainer.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained_tiny.parameters())
    trained_tiny.zero_grad(set_to_none=True)


def test_pearl_keeps_tuple_and_dict_outputs():
    class Aux(torch.nn.Module):
        def forward(self, x):
            return x[:, :2], x.mean((2, 3))

    out = PEARL(Aux(), torch.nn.Identity())(torch.rand(1, 3, 4, 4))
    assert isinstance(out, tuple) and out[0].shape == (1, 2, 4, 4)


def test_attacks_see_one_segmentation_model(trained_tiny, blobs_test):
    images, masks = blobs_test
    model = PEARL(trained_tiny, ResidualUNet(width=8)).eval()
    adv = NAA(model, eps=4 / 255, steps=3)(images, masks)
    assert (adv - images).abs().max() <= 4 / 255 + 1e-6
    with torch.no_grad():
        assert (
            per_image_pixel_accuracy(model(adv), masks).mean() < per_image_pixel_accuracy(model(images), masks).mean()
        )


def test_derainers_are_fully_convolutional_in_unit_range():
    assert 140_000 < sum(p.numel() for p in PReNet().parameters()) < 180_000
    for net in (PReNet(stages=2), ResidualUNet(width=8)):
        y = net(torch.rand(1, 3, 21, 27))
        assert y.shape == (1, 3, 21, 27) and y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="unknown derainer"):
        build_derainer("dncnn")


def test_ama_targets_segment_better_and_are_cached(tmp_path, trained_tiny, blobs_test, monkeypatch):
    images, masks = blobs_test
    data = _Items(images, masks)
    targets = compute_ama_targets(trained_tiny, data, eps=4 / 255, steps=5, cache_dir=tmp_path)
    assert targets.shape == images.shape and (targets - images).abs().max() <= 4 / 255 + 1e-3
    with torch.no_grad():
        clean = per_image_pixel_accuracy(trained_tiny(images), masks)
        positive = per_image_pixel_accuracy(trained_tiny(targets), masks)
    assert (positive >= clean).all() and positive.mean() > clean.mean()
    assert len(list(tmp_path.glob("ama_targets_*.pt"))) == 1

    import segrobust.attacks as attacks

    monkeypatch.setattr(attacks, "AMA", lambda *a, **k: pytest.fail("cached AMA targets were recomputed"))
    again = compute_ama_targets(trained_tiny, data, eps=4 / 255, steps=5, cache_dir=tmp_path)
    assert torch.equal(again, targets)


def test_train_pearl_trains_derainer_and_never_changes_frozen_segmenter(tmp_path, trained_tiny, blobs):
    images, masks = blobs
    data = _Items(images[:16], masks[:16])
    segmenter = copy.deepcopy(trained_tiny).train()  # train mode on purpose: BatchNorm must not update
    before = copy.deepcopy(segmenter.state_dict())
    derainer = ResidualUNet(width=8)
    derainer_before = copy.deepcopy(derainer.state_dict())
    torch.manual_seed(0)
    config = RECIPES["pearl"].config(
        derainer=derainer,
        ama=True,
        rain="light",
        eps=2 / 255,
        steps=1,
        ama_steps=2,
        epochs=1,
        batch_size=8,
        num_classes=NUM_CLASSES,
        cache_dir=tmp_path,
        progress=False,
    )
    result = RECIPES["pearl"](segmenter, data, config)
    pearl, history = result.model, result.history
    assert isinstance(pearl, PEARL) and len(history) == 1 and "reconstruction" in history[0]
    for name, value in segmenter.state_dict().items():
        assert torch.equal(value, before[name]), f"segmenter {name} changed"
    assert all(p.requires_grad for p in segmenter.parameters())
    assert segmenter.training, "the segmenter's own mode is restored"
    assert any(not torch.equal(v, derainer_before[k]) for k, v in derainer.state_dict().items())


def test_nat_runs_on_rainy_adversarial_batches(trained_tiny, blobs):
    images, masks = blobs
    model = copy.deepcopy(trained_tiny)
    loader = [(images[i : i + 8], masks[i : i + 8]) for i in range(0, 16, 8)]
    config = SEGMENTER_RECIPES["nat"].config(
        rain="light", eps=2 / 255, steps=1, epochs=1, num_classes=NUM_CLASSES, progress=False
    )
    history = SEGMENTER_RECIPES["nat"](model, loader, config).history
    assert len(history) == 1 and history[0]["loss"] > 0


def test_ama_target_dataset_checks_length():
    with pytest.raises(ValueError, match="targets"):
        AMATargetDataset([1, 2], torch.zeros(3, 3, 2, 2))


def test_pearl_defense_checkpoint_round_trip(tmp_path, trained_tiny):
    from segrobust.defenses.pearl_training import load_pearl_defense, save_pearl_defense

    derainer = ResidualUNet(width=8)
    torch.nn.init.normal_(derainer.out.weight, std=0.02)
    path = save_pearl_defense(derainer, tmp_path / "defense.pt", "unet", width=8)
    loaded = load_pearl_defense(trained_tiny, path)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), PEARL(trained_tiny, derainer).eval()(x))
    torch.save({"not": "a defence"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a PEARL defence checkpoint"):
        load_pearl_defense(trained_tiny, tmp_path / "other.pt")


def test_pearl_transform_sees_ama_targets_and_fit_pearl_refuses_loaders(tmp_path, trained_tiny, blobs):
    images, masks = blobs
    data = _Items(images[:8], masks[:8])
    seen = []

    def flip(item):
        seen.append(sorted(item))
        return {key: value.flip(-1) if torch.is_tensor(value) else value for key, value in item.items()}

    config = RECIPES["pearl"].config(
        derainer=ResidualUNet(width=8),
        ama=True,
        rain="light",
        eps=2 / 255,
        steps=1,
        ama_steps=1,
        epochs=1,
        batch_size=8,
        num_classes=NUM_CLASSES,
        cache_dir=tmp_path,
        transform=flip,
        progress=False,
    )
    RECIPES["pearl"](copy.deepcopy(trained_tiny), data, config)
    assert seen == [["image", "mask", "target"]] * 8
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    with pytest.raises(TypeError, match=r"transform.*map-style"):
        fit_pearl(copy.deepcopy(trained_tiny), ResidualUNet(width=8), loader, dataclasses.replace(config, ama=False))
