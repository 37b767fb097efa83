"""One attack API: an L∞ attack is a loss and a step rule; one signature, one registry, AMP, a small public surface."""

from __future__ import annotations

import inspect
import warnings
from types import SimpleNamespace

import pytest
import torch
from conftest import NUM_CLASSES, make_blobs
from torch import nn

import segrobust.attacks as A
from segrobust.attacks import functional as AF
from segrobust.attacks.registry import ATTACKS, AttackEntry
from segrobust.attacks.steps import STEP_RULES, StepRule
from segrobust.losses import PIXEL_LOSSES
from segrobust.validation import check_amp

ALL_ATTACKS = [A.NAA, A.AMA, A.SegPGD, A.CosPGD, A.EroSeg, A.APGD, A.ReliableEnsemble, A.RainAttack]
LINF = [A.NAA, A.AMA, A.SegPGD, A.CosPGD, A.EroSeg, A.APGD]


def _model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1)).to(dtype).eval()


def _run(attack, images, masks, seed: int = 0):
    torch.manual_seed(seed)
    return attack(images, masks, return_stats=True)


# ----------------------------------------------------------------------------- one signature


@pytest.mark.parametrize("cls", ALL_ATTACKS, ids=lambda c: c.__name__)
def test_one_constructor_signature_in_torchattacks_order(cls):
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params[:4]] == ["model", "eps", "alpha", "steps"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:4])
    assert all(p.kind is p.KEYWORD_ONLY for p in params[4:]), "everything after steps is keyword-only"
    names = {p.name for p in params}
    assert {"random_start", "ignore_index", "nonfinite", "amp"} <= names
    if cls in LINF:
        assert {"loss", "radius_schedule", "step_rule"} <= names
        assert ("loss_options" in names) != (cls is A.EroSeg), "EroSeg's loss options are its erosion arguments"
    with pytest.raises(TypeError):
        cls(_model(), 8 / 255, None, 2, True)  # a fifth positional argument is refused


@pytest.mark.parametrize("cls", LINF, ids=lambda c: c.__name__)
def test_linf_attacks_differ_only_in_their_defaults(cls):
    """Each named L∞ attack equals LinfAttack with its default loss and step rule, bit for bit."""
    model = _model()
    images, masks = make_blobs(2, 10, seed=1)
    named = cls(model, 4 / 255, None, 5)
    generic = A.LinfAttack(model, 4 / 255, None, 5, loss=cls.default_loss, step_rule=cls.default_step_rule)
    if cls is A.AMA:
        generic._loss_sign = -1  # AMA differs by its sign only
    adv, stats = _run(named, images, masks)
    adv_generic, stats_generic = _run(generic, images, masks)
    assert torch.equal(adv, adv_generic) and torch.equal(stats.loss, stats_generic.loss)


@pytest.mark.parametrize("loss", sorted(PIXEL_LOSSES))
@pytest.mark.parametrize("rule", sorted(STEP_RULES))
def test_every_loss_runs_with_every_step_rule(loss, rule):
    model = _model()
    images, masks = make_blobs(2, 8, seed=2)
    attack = A.NAA(model, 4 / 255, None, 4, loss=loss, step_rule=rule, radius_schedule="sea")
    adv, stats = _run(attack, images, masks)
    assert float((adv.double() - images.double()).abs().max()) <= 4 / 255
    assert stats.objective.shape == (5, 2) and bool(stats.scored[-1])


def test_naa_with_apgd_rule_is_apgd_with_ce():
    model = _model()
    images, masks = make_blobs(2, 10, seed=3)
    adv, stats = _run(A.NAA(model, 8 / 255, None, 12, step_rule="apgd", radius_schedule="sea"), images, masks)
    ref, ref_stats = _run(A.APGD(model, 8 / 255, None, 12, radius_schedule="sea"), images, masks)
    assert torch.equal(adv, ref) and torch.equal(stats.step_size, ref_stats.step_size)


class HalfSignStep(StepRule):
    """A made-up rule: half a signed step of a fixed size, per-image objective. Written as a user would."""

    def default_alpha(self, eps, steps):
        return eps

    def start(self, x, bounds, radius, alpha, iterations):
        return SimpleNamespace(bounds=bounds, alpha=alpha, step_size=torch.full((x.shape[0],), alpha / 2))

    def step(self, state, i, x, grad, objective):
        return (x + state.alpha / 2 * grad.sign()).clamp(*state.bounds)


def test_a_new_step_rule_plugs_in_without_a_new_attack_class():
    model = _model()
    images, masks = make_blobs(2, 8, seed=4)
    attack = A.LinfAttack(model, 4 / 255, None, 3, loss="js", step_rule=HalfSignStep())

    _, stats = _run(attack, images, masks)
    assert torch.allclose(stats.step_size[:3], torch.full((3, 2), 2 / 255))
    with pytest.raises(ValueError, match="unknown step_rule"):
        A.NAA(model, step_rule="padam_typo")
    with pytest.raises(TypeError, match="step_rule"):
        A.NAA(model, step_rule=object())


def test_apgd_alpha_sets_the_initial_step_and_scales_with_the_radius():
    model = _model()
    images, masks = make_blobs(2, 8, seed=5)
    _, stats = _run(A.APGD(model, 8 / 255, 1 / 255, 10, radius_schedule="sea"), images, masks)
    assert stats.step_size[0].tolist() == pytest.approx([2 / 255] * 2)  # radius 2·eps: alpha · 2
    assert stats.step_size[6].tolist() == pytest.approx([1 / 255] * 2)  # the eps stage
    _, stats = _run(A.APGD(model, 8 / 255, None, 10), images, masks)
    assert stats.step_size[0].tolist() == pytest.approx([16 / 255] * 2)  # APGD's rule: 2 · eps


def test_reliable_ensemble_takes_alpha_for_its_members():
    ensemble = A.ReliableEnsemble(_model(), 8 / 255, 1 / 255, 3)
    assert all(member.alpha == 1 / 255 for member in ensemble.members)


# ----------------------------------------------------------------------------- amp


def _autocast_works_on_cpu(dtype: torch.dtype) -> bool:
    """Whether this torch build runs a convolution under CPU autocast of ``dtype`` (fp16 on CPU is recent)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.autocast("cpu", dtype=dtype):
                return nn.Conv2d(3, 1, 1)(torch.rand(1, 3, 2, 2)).dtype == dtype
    except RuntimeError:
        return False


@pytest.mark.parametrize("amp", ["bf16", torch.bfloat16, "fp16"])
@pytest.mark.parametrize("cls", [A.NAA, A.APGD, A.ReliableEnsemble, A.RainAttack], ids=lambda c: c.__name__)
def test_amp_runs_the_forward_under_autocast_and_keeps_the_eps_promise(cls, amp):
    dtype = check_amp(amp)
    if not _autocast_works_on_cpu(dtype):
        pytest.skip(f"this torch build refuses {dtype} autocast on CPU")
    model = _model()
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    images, masks = make_blobs(2, 8, seed=6)
    kwargs = {"ranges": {"length": (2.0, 4.0), "num_layers": 1}} if cls is A.RainAttack else {}
    adv, stats = _run(cls(model, 4 / 255, None, 2, amp=amp, **kwargs), images, masks)
    assert adv.dtype == images.dtype and set(seen) == {dtype}, "the forward runs in the autocast dtype"
    if cls is not A.RainAttack:
        assert float((adv.double() - images.double()).abs().max()) <= 4 / 255  # the projection stays float32
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert bool(torch.isfinite(stats.loss if hasattr(stats, "loss") else stats.pixel_accuracy).all())


def test_amp_is_validated():
    for bad in ("fp32", torch.float32, 16, True):
        with pytest.raises(ValueError, match="amp must be"):
            A.NAA(_model(), amp=bad)


# ----------------------------------------------------------------------------- registry


def test_attack_registry_is_a_plain_dict_beside_the_attacks_with_one_build_call():
    import segrobust.benchmark as benchmark

    assert type(ATTACKS) is dict and benchmark.ATTACKS is ATTACKS
    assert not hasattr(benchmark, "register_attack")
    model = _model()
    for key, entry in ATTACKS.items():
        attack = entry.build(model, 4 / 255, None, 2, random_start=True, ignore_index=255)
        steps = attack.member_steps if entry.reliable else [attack.steps]  # an ensemble: steps of every member
        assert isinstance(attack, entry.attack_class) and attack.eps == 4 / 255 and set(steps) == {2}, key
    assert ATTACKS["ama"].positive and not ATTACKS["ama"].in_worst_case
    assert not ATTACKS["rain_attack"].in_worst_case and ATTACKS["rain_attack"].accepts_depth
    assert ATTACKS["reliable"].reliable and ATTACKS["reliable"].default  # the main job reports it


def test_rain_attack_scales_a_preset_to_the_image_height_at_call_time():
    from segrobust.rain import scale_rain_ranges

    attack = ATTACKS["rain_attack"].build(_model(), 0.0, None, 1)
    assert attack.ranges_for(90) == scale_rain_ranges("medium", 90, 360)
    assert A.RainAttack(_model()).ranges_for(90) == A.RainAttack(_model()).ranges  # no reference_height: as given


def test_training_builds_its_inner_attack_from_the_registry(monkeypatch):
    from segrobust.training.recipes import adversarial
    from segrobust.training.recipes.config import EroSegATConfig, PGDATConfig

    built = []

    class Recording(A.NAA):
        def __init__(self, model, eps, alpha, steps, **kwargs):
            built.append((eps, alpha, steps, kwargs))
            super().__init__(model, eps, alpha, steps, **{k: v for k, v in kwargs.items() if k != "q0"})

    monkeypatch.setitem(ATTACKS, "naa", AttackEntry(Recording, "NAA"))
    monkeypatch.setitem(ATTACKS, "eroseg", AttackEntry(Recording, "EroSeg"))
    make = adversarial._attack_factory("naa", PGDATConfig(eps=4 / 255, alpha=1 / 255, steps=3))
    assert isinstance(make(_model()), Recording)
    make = adversarial._attack_factory("eroseg", EroSegATConfig(steps=2), q0=0.3)
    make(_model())
    assert built[0] == (4 / 255, 1 / 255, 3, {"random_start": True, "ignore_index": 255})
    assert built[1][3]["q0"] == 0.3


# ----------------------------------------------------------------------------- public surface


def test_public_surface_exports_attacks_stats_and_loss_helpers_not_plumbing():
    for name in (
        "LinfAttack",
        "APGDStats",
        "LinfAttackStats",
        "EnsembleStats",
        "PIXEL_LOSSES",
        "PixelLoss",
        "StepRule",
    ):
        assert name in A.__all__, name
    for plumbing in ("IterateTracker", "SafeAttributeMixin", "StandaloneAttack", "LinfSegAttack"):
        assert not hasattr(A, plumbing), plumbing
    from segrobust.attacks.attack_api import StandaloneAttack  # noqa: F401
    from segrobust.attacks.engine import IterateTracker, SafeAttributeMixin  # noqa: F401


def test_one_miou_from_confusion_in_metrics():
    from segrobust.metrics.functional import mean_iou

    g = torch.Generator().manual_seed(0)
    confusions = torch.randint(0, 50, (3, 6, 11, 11), generator=g)
    miou, choice = A.greedy_worst_case_miou(confusions)
    total = confusions[choice, torch.arange(6)].sum(0)
    assert miou == mean_iou(total)  # bit-identical: the same function
    assert not hasattr(A.ensemble, "_mean_iou_batched")


def test_functional_holds_the_pure_pieces():
    for name in (
        "linf_bounds",
        "project_linf",
        "random_linf_start",
        "apgd_checkpoints",
        "apgd_should_halve",
        "radius_stages",
    ):
        assert callable(getattr(AF, name)) and name in AF.__all__, name
