"""The reliable ensemble: per-image worst case, greedy worst-case mIoU, early stop, passes spent."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from conftest import NUM_CLASSES, TinySegNet, make_blobs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segrobust.attacks import APGD, ReliableEnsemble, SegAttack, StepRule, greedy_worst_case_miou
from segrobust.attacks.ensemble import RELIABLE_PRESETS, SEA_LOSSES, EnsembleMember
from segrobust.metrics import confusion_matrix, mean_iou, per_image_confusion, per_image_pixel_accuracy


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinySegNet(width=8).eval()


def _batch(seed: int, n: int = 3, size: int = 10):
    images, masks = make_blobs(n, size, seed=seed)
    masks = masks.clone()
    masks[:, :1] = 255
    return images, masks


# ---------------------------------------------------------------------------- greedy mIoU
def _greedy_by_definition(confusions):
    running, choice = torch.zeros_like(confusions[0, 0]), []
    for i in range(confusions.shape[1]):
        scores = []
        for a in range(confusions.shape[0]):
            value = mean_iou(running + confusions[a, i])
            scores.append(float("inf") if value != value else value)
        best = min(range(len(scores)), key=scores.__getitem__)
        choice.append(best)
        running = running + confusions[best, i]
    return mean_iou(running), choice


@given(seed=st.integers(0, 10_000), attacks=st.integers(1, 4), images=st.integers(1, 6))
@settings(max_examples=25, deadline=None)
def test_greedy_worst_case_miou_equals_its_definition(seed, attacks, images):
    g = torch.Generator().manual_seed(seed)
    confusions = torch.randint(0, 6, (attacks, images, 3, 3), generator=g)
    miou, choice = greedy_worst_case_miou(confusions)
    expected_miou, expected_choice = _greedy_by_definition(confusions)
    assert choice.tolist() == expected_choice
    assert miou == pytest.approx(expected_miou)
    chosen = confusions[choice, torch.arange(images)].sum(0)
    assert miou == pytest.approx(mean_iou(chosen))


def test_greedy_worst_case_miou_on_a_hand_example_and_errors():
    good = torch.tensor([[3, 0], [0, 3]])
    half = torch.tensor([[3, 0], [3, 0]])
    # image 0: attack 1 wrecks it; image 1: only attack 0 hurts it
    confusions = torch.stack([torch.stack([good, half]), torch.stack([half, good])])
    miou, choice = greedy_worst_case_miou(confusions)
    assert choice.tolist() == [1, 0] and miou == pytest.approx(mean_iou(half + half))
    with pytest.raises(ValueError, match=r"\(A, N, K, K\)"):
        greedy_worst_case_miou(torch.zeros(2, 3, 3))


def test_per_image_confusion_sums_to_the_data_set_matrix():
    images, masks = _batch(0, n=4)
    logits = _model()(images).detach()
    per_image = per_image_confusion(logits, masks, NUM_CLASSES)
    assert torch.equal(per_image.sum(0), confusion_matrix(logits, masks, NUM_CLASSES))
    for i in range(4):
        assert torch.equal(per_image[i], confusion_matrix(logits[i : i + 1], masks[i : i + 1], NUM_CLASSES))


# ---------------------------------------------------------------------------- attack contract
@given(seed=st.integers(0, 1000), eps=st.sampled_from([2 / 255, 8 / 255]), early_stop=st.booleans())
@settings(max_examples=4, deadline=None)
def test_bounds_determinism_and_no_side_effects(seed, eps, early_stop):
    model = _model(seed % 2)
    model.train()
    model.body[1].eval()
    params = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    images, masks = _batch(seed)
    images_copy, masks_copy = images.clone(), masks.clone()
    attack = ReliableEnsemble(model, eps=eps, steps=3, early_stop=early_stop)
    torch.manual_seed(seed)
    adv = attack(images, masks)
    torch.manual_seed(seed)
    assert torch.equal(adv, attack(images, masks))
    assert (adv - images).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(images, images_copy) and torch.equal(masks, masks_copy)
    assert [m.training for m in model.modules()] == flags
    for name, value in model.state_dict().items():
        assert torch.equal(value, params[name]), name
    assert all(p.grad is None for p in model.parameters())


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="losses"):
        ReliableEnsemble(_model(), losses=[])
    with pytest.raises(ValueError, match="losses"):
        ReliableEnsemble(_model(), losses="js")
    with pytest.raises(ValueError, match="unknown pixel loss"):
        ReliableEnsemble(_model(), losses=["js", "dlr"])
    with pytest.raises(ValueError, match="radius_schedule"):
        ReliableEnsemble(_model(), radius_schedule="huge")
    with pytest.raises(ValueError, match="class ids"):
        ReliableEnsemble(_model(), steps=1)(torch.rand(1, 3, 8, 8), torch.full((1, 8, 8), 9))
    assert issubclass(ReliableEnsemble, SegAttack)


# ---------------------------------------------------------------------------- worst case
def test_worst_case_is_at_or_below_each_member(trained_tiny, blobs_test):
    images, masks = blobs_test
    images, masks = images[:, :, :16, :16].contiguous(), masks[:, :16, :16].contiguous()
    ensemble = ReliableEnsemble(trained_tiny, eps=4 / 255, steps=10, early_stop=False, losses=SEA_LOSSES)
    torch.manual_seed(0)
    adv, stats = ensemble(images, masks, return_stats=True)
    with torch.no_grad():
        returned_logits = trained_tiny(adv)
    torch.testing.assert_close(per_image_pixel_accuracy(returned_logits, masks), stats.pixel_accuracy)
    # the members' confusions come from the logits that scored their iterates, not from an extra forward
    worst = stats.confusion[stats.choice, torch.arange(8)]
    assert torch.equal(worst, per_image_confusion(returned_logits, masks, NUM_CLASSES))
    assert stats.member_pixel_accuracy.shape == (3, 8) and stats.attacked.all()
    assert (stats.pixel_accuracy <= stats.member_pixel_accuracy.min(0).values + 1e-7).all()
    assert stats.member_names == ["masked_ce", "balanced_masked_ce", "js"]
    assert len(stats.member_seconds) == len(stats.member_cpu_seconds) == 3
    assert all(t > 0 for t in stats.member_seconds) and all(t >= 0 for t in stats.member_cpu_seconds)
    # each member alone, under the same seed sequence, gives the member's images
    torch.manual_seed(0)
    for a, member in enumerate(ensemble.members):
        alone = member(images, masks)
        with torch.no_grad():
            torch.testing.assert_close(
                per_image_pixel_accuracy(trained_tiny(alone), masks), stats.member_pixel_accuracy[a]
            )
        # the per-image worst case holds on the whole set's pixel accuracy too; the greedy mIoU
        # is myopic (each image picks what lowers the running mIoU most), so it can end a hair
        # above a single member's mIoU (measured here: 0.71086 vs 0.71076)
        member_cm = stats.confusion[a].sum(0)
        worst_cm = stats.confusion[stats.choice, torch.arange(8)].sum(0)
        assert worst_cm.diagonal().sum() <= member_cm.diagonal().sum()
        assert stats.greedy_miou()[0] <= mean_iou(member_cm) + 2e-3
    # passes: every member spends steps backward and steps + 1 forward (the last one scores its final iterate)
    assert stats.backward_passes.tolist() == [[10] * 8] * 3
    assert stats.forward_passes.tolist() == [[11] * 8] * 3
    assert stats.total_passes == 3 * 8 * 21


def test_early_stop_skips_images_already_at_zero_accuracy():
    torch.manual_seed(0)
    model = TinySegNet(width=8).eval()
    images, masks = _batch(3, n=4)
    with torch.no_grad():
        pred = model(images).argmax(1)
    # image 0's labels are a class the model never predicts there: 0 % accuracy from the start
    masks = pred.clone()
    masks[0] = (pred[0] + 1) % NUM_CLASSES
    ensemble = ReliableEnsemble(model, eps=2 / 255, steps=3, losses=["ce", "js"], radius_schedule=None)
    torch.manual_seed(0)
    _adv, stats = ensemble(images, masks, return_stats=True)
    assert stats.attacked[0].all() and not stats.attacked[1, 0]
    assert stats.forward_passes[1, 0] == 0 and stats.backward_passes[1, 0] == 0
    assert torch.isnan(stats.member_pixel_accuracy[1, 0])
    assert stats.pixel_accuracy[0] == 0
    assert torch.equal(stats.confusion[1, 0], stats.confusion[0, 0])
    assert stats.member_images[1].tolist() == [i for i in range(4) if bool(stats.attacked[1, i])]
    assert isinstance(stats.member_stats[0].forward_passes, torch.Tensor)
    assert isinstance(ensemble.members[0], APGD)


# ---------------------------------------------------------------------------- presets, member specs, warm start
@pytest.mark.parametrize("name", sorted(RELIABLE_PRESETS))
def test_each_preset_spends_the_iterations_it_documents(name):
    """A preset's documented cost (``ReliablePreset.iterations``, shown by ``segrobust list``) is what
    ``EnsembleStats`` counts: one forward and one backward pass per iteration, on every image."""
    preset = RELIABLE_PRESETS[name]
    model, (images, masks) = _model(3), _batch(8, n=2, size=8)
    attack = ReliableEnsemble(model, 4 / 255, preset=name, early_stop=False)
    assert attack.member_steps == [member.steps for member in preset.members]
    _, stats = attack(images, masks, return_stats=True)
    assert stats.iterations_per_image.tolist() == [preset.iterations] * 2
    assert bool((stats.forward_passes >= stats.backward_passes).all())


def test_preset_iteration_counts_and_the_default_budget():
    assert RELIABLE_PRESETS["default"].iterations <= 300  # the default's promise: at most 300 per image
    assert RELIABLE_PRESETS["sea"].iterations == 900  # SEA's published protocol: 3 losses x 300
    sea = RELIABLE_PRESETS["sea"].members
    assert [m.loss for m in sea] == ["balanced_masked_ce", "masked_ce", "js"] and sea[0].class_weights
    assert all(m.radius_schedule == "sea" and not m.warm_start for m in sea)


class _StartSpy(StepRule):
    """Signed steps of radius/4 that record where each radius stage starts."""

    def __init__(self):
        self.starts = []

    def start(self, x, bounds, radius, alpha, iterations):
        self.starts.append(x.clone())
        return SimpleNamespace(bounds=bounds, step_size=torch.full((x.shape[0],), radius / 4), radius=radius)

    def step(self, state, i, x, grad, objective):
        return (x + state.radius / 4 * grad.sign()).clamp(*state.bounds)


def test_warm_started_member_starts_from_the_worst_case_so_far():
    model, (images, masks) = _model(4), _batch(9)
    first = EnsembleMember("masked_ce", 5, radius_schedule=None)
    torch.manual_seed(0)
    worst_so_far = ReliableEnsemble(model, 8 / 255, members=[first], early_stop=False)(images, masks)
    spy = _StartSpy()
    second = EnsembleMember("js", 3, step_rule=spy, radius_schedule=None, warm_start=True)
    torch.manual_seed(0)
    ReliableEnsemble(model, 8 / 255, members=[first, second], early_stop=False)(images, masks)
    assert torch.equal(spy.starts[0], worst_so_far)
    assert not torch.equal(worst_so_far, images)  # the first member moved, so the check has teeth
    # without warm start the member starts from a random point of its own
    spy_cold = _StartSpy()
    cold = replace(second, warm_start=False, step_rule=spy_cold)
    torch.manual_seed(0)
    ReliableEnsemble(model, 8 / 255, members=[first, cold], early_stop=False)(images, masks)
    assert not torch.equal(spy_cold.starts[0], worst_so_far)


def test_member_specs_and_presets_refuse_bad_input_clearly():
    model = _model()
    with pytest.raises(ValueError, match="unknown reliable preset"):
        ReliableEnsemble(model, preset="strongest")
    with pytest.raises(ValueError, match="steps"):
        EnsembleMember("js", 0)
    with pytest.raises(ValueError, match="control"):
        EnsembleMember("js", 5, control="accuracy")
    with pytest.raises(ValueError, match="handover"):
        EnsembleMember("js", 5, handover="first")
    with pytest.raises((ValueError, TypeError), match=r"preset|members|losses"):
        ReliableEnsemble(model, preset="default", losses=["js"])
    # dicts of the member fields are accepted as specs
    attack = ReliableEnsemble(model, members=[{"loss": "cosine", "steps": 4, "step_rule": "padam"}])
    assert attack.member_steps == [4] and attack.member_names == ["cosine"]


def test_the_ensemble_without_members_is_the_default_preset():
    attack = ReliableEnsemble(_model(), 4 / 255)
    assert attack.specs == list(RELIABLE_PRESETS["default"].members)
    assert attack.member_steps == [150, 150] and attack.specs[1].warm_start
    with pytest.raises(ValueError, match="losses form"):
        ReliableEnsemble(_model(), radius_schedule=None)  # a schedule for all members needs losses=
    assert [s.loss for s in ReliableEnsemble(_model(), losses=SEA_LOSSES, radius_schedule=None).specs] == list(
        SEA_LOSSES
    )
