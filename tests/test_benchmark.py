"""segrobust.benchmark: run_benchmark(), the worst case, resume, results files, and segrobust.models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import NUM_CLASSES, TinySegNet, make_blobs
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from segrobust.attacks.registry import AttackEntry
from segrobust.benchmark import (
    ATTACKS,
    BenchmarkResults,
    ResumeMismatchError,
    run_benchmark,
)
from segrobust.benchmark import functional as BF
from segrobust.metrics import ConfusionMatrix, confusion_matrix, per_image_confusion, per_image_pixel_accuracy
from segrobust.models import ModelLoadError, build_model, load_model, parse_model_spec, save_model

# ----------------------------------------------------------------------------- functional


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), k=st.integers(2, 5), seed=st.integers(0, 1000))
def test_per_image_confusion_sums_to_the_whole_set_matrix(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, (n, 5, 6), generator=g)
    target = torch.randint(0, k, (n, 5, 6), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    per_image = per_image_confusion(pred, target, k)
    assert per_image.shape == (n, k, k)
    assert torch.equal(per_image.sum(0), confusion_matrix(pred, target, k))
    for i in range(n):
        assert torch.equal(per_image[i], confusion_matrix(pred[i : i + 1], target[i : i + 1], k))


def test_worst_case_selection_takes_the_lowest_and_the_first_on_ties():
    accs = torch.tensor([[0.5, 0.2, 0.3, 0.1], [0.4, 0.2, 0.9, 0.0], [0.6, 0.1, 0.3, 0.0]])
    assert BF.worst_case_selection(accs).tolist() == [1, 2, 0, 1]


def test_eps_text_round_trip_and_range():
    for levels in (0.5, 1, 2, 4, 8, 16):
        assert BF.parse_eps(BF.format_eps(levels / 255)) == pytest.approx(levels / 255)
    for bad in ("0", "-1/255", "1.5", "8", "abc", "1/0", "nan"):
        with pytest.raises(ValueError, match="eps"):
            BF.parse_eps(bad)
    assert BF.parse_eps("1") == 1.0


def test_unit_seeds_differ_per_part_and_are_stable():
    seeds = {BF.unit_seed(0, "naa", e, b) for e in range(3) for b in range(10)}
    assert len(seeds) == 30
    assert BF.unit_seed(3, "rain", "heavy", 7) == BF.unit_seed(3, "rain", "heavy", 7)


# ----------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def tiny_model():
    images, masks = make_blobs(48, 32, seed=0)
    torch.manual_seed(0)
    model = TinySegNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(60):
        idx = torch.arange(step * 8, step * 8 + 8) % 48
        loss = nn.functional.cross_entropy(model(images[idx]), masks[idx], ignore_index=255)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_data():
    images, masks = make_blobs(6, 32, seed=1)
    masks[:, :2] = 255  # a void band
    return [{"image": image, "mask": mask} for image, mask in zip(images, masks)]


@pytest.fixture(scope="module")
def reference(tiny_model, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    results = run_benchmark(
        tiny_model,
        tiny_data,
        attacks="naa,segpgd,ama",
        eps_list=["4/255", "8/255"],
        rain="light,fog_only",
        steps=2,
        batch_size=4,
        progress=False,
        out_dir=out,
        num_examples=2,
    )
    return results, out


def test_rows_come_in_report_order_with_the_right_kinds(reference):
    results, _ = reference
    labels = [row.label for row in results.rows]
    assert labels == [
        "Clean",
        "Rain (light)",
        "Rain (fog only)",
        "NAA ε=4/255",
        "NAA ε=8/255",
        "SegPGD ε=4/255",
        "SegPGD ε=8/255",
        "AMA (positive) ε=4/255",
        "AMA (positive) ε=8/255",
        "Worst case ε=4/255",
        "Worst case ε=8/255",
    ]
    assert [row.kind for row in results.rows][-4:] == ["positive", "positive", "worst", "worst"]


def test_clean_row_equals_a_direct_confusion_matrix(reference, tiny_model, tiny_data):
    results, _ = reference
    images = torch.stack([item["image"] for item in tiny_data])
    masks = torch.stack([item["mask"] for item in tiny_data])
    with torch.no_grad():
        logits = tiny_model(images)
    matrix = ConfusionMatrix(NUM_CLASSES)
    matrix.update(logits, masks)
    clean = results.row("clean")
    assert clean.confusion_matrix == matrix.matrix.tolist()
    assert clean.miou == pytest.approx(matrix.compute().miou)
    assert clean.per_image_pixel_accuracy == pytest.approx(per_image_pixel_accuracy(logits, masks).tolist())
    assert clean.num_pixels == int((masks != 255).sum())


def test_worst_case_is_the_per_image_minimum_over_adversarial_attacks(reference):
    results, _ = reference
    for eps in (4 / 255, 8 / 255):
        worst = results.row("worst", eps)
        attacks = [results.row(key, eps) for key in ("naa", "segpgd")]
        per_image = torch.tensor([row.per_image_pixel_accuracy for row in attacks])
        assert worst.per_image_pixel_accuracy == pytest.approx(per_image.min(0).values.tolist())
        assert set(worst.worst_attack) <= {"naa", "segpgd"}  # AMA never enters the worst case
        for row in attacks:
            assert worst.pixel_accuracy <= row.pixel_accuracy + 1e-12
        # its confusion matrix is made of the chosen attack's per-image matrices: pixel counts match
        assert worst.num_pixels == results.clean.num_pixels


def test_attacks_hurt_and_ama_helps_a_trained_model(reference):
    results, _ = reference
    clean = results.clean.pixel_accuracy
    assert results.row("worst", 8 / 255).pixel_accuracy < clean
    assert results.row("ama", 8 / 255).pixel_accuracy >= clean


def test_evaluate_is_deterministic_and_leaves_the_model_alone(tiny_model, tiny_data, reference):
    results, _ = reference
    tiny_model.train()
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    images_before = [item["image"].clone() for item in tiny_data]
    again = run_benchmark(
        tiny_model,
        tiny_data,
        attacks="naa,segpgd,ama",
        eps_list=["8/255", "4/255"],
        rain="light,fog_only",
        steps=2,
        batch_size=4,
        progress=False,
        num_examples=2,
    )
    assert tiny_model.training  # mode restored
    tiny_model.eval()
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert all(torch.equal(a, item["image"]) for a, item in zip(images_before, tiny_data))
    assert [row.confusion_matrix for row in again.rows] == [row.confusion_matrix for row in results.rows]


def test_clean_and_rain_do_not_depend_on_the_batch_size(tiny_model, tiny_data):
    one = run_benchmark(tiny_model, tiny_data, attacks="none", rain="heavy", batch_size=1, progress=False)
    four = run_benchmark(tiny_model, tiny_data, attacks="none", rain="heavy", batch_size=4, progress=False)
    assert [r.confusion_matrix for r in one.rows] == [r.confusion_matrix for r in four.rows]
    assert one.row("rain:heavy").confusion_matrix != one.row("clean").confusion_matrix


def test_resume_skips_finished_units_and_gives_identical_numbers(reference, tiny_model, tiny_data):
    results, out = reference
    partial = out / "partial"
    units = sorted(partial.rglob("batch_*.pt"))
    assert len(units) == 9 * 2  # 9 conditions x 2 batches
    for path in units[::3]:
        path.unlink()  # as if the run died before writing these
    resumed = run_benchmark(
        tiny_model,
        tiny_data,
        attacks="naa,segpgd,ama",
        eps_list=["4/255", "8/255"],
        rain="light,fog_only",
        steps=2,
        batch_size=4,
        progress=False,
        out_dir=out,
        resume=True,
        num_examples=2,
    )
    assert [r.confusion_matrix for r in resumed.rows] == [r.confusion_matrix for r in results.rows]
    assert [r.per_image_pixel_accuracy for r in resumed.rows] == [r.per_image_pixel_accuracy for r in results.rows]
    assert len(sorted(partial.rglob("batch_*.pt"))) == len(units)
    # conditions whose units were all on disk report no timing: nothing was computed for them
    assert any(row.seconds is None for row in resumed.rows if row.kind != "worst")


def test_resume_with_other_settings_is_refused(reference, tiny_model, tiny_data):
    _, out = reference
    with pytest.raises(ResumeMismatchError, match="eps"):
        run_benchmark(
            tiny_model,
            tiny_data,
            attacks="naa,segpgd,ama",
            eps_list=["2/255"],
            rain="light,fog_only",
            steps=2,
            batch_size=4,
            progress=False,
            out_dir=out,
            resume=True,
        )


def test_report_files_and_json_round_trip(reference):
    results, out = reference
    for name in ("results.json", "report.md", "miou_vs_eps.png", "examples.png", "rain_examples.png"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["eps"] == pytest.approx([4 / 255, 8 / 255])
    assert data["versions"]["torch"]
    loaded = BenchmarkResults.load(out / "results.json")
    assert [r.label for r in loaded.rows] == [r.label for r in results.rows]
    for a, b in zip(loaded.rows, results.rows):
        assert a.confusion_matrix == b.confusion_matrix
        assert (math.isnan(a.miou) and math.isnan(b.miou)) or a.miou == b.miou
    report = (out / "report.md").read_text()
    assert "| Condition |" in report and "Worst case" in report and "![mIoU against ε](miou_vs_eps.png)" in report
    table = results.table()
    assert table.splitlines()[0].startswith("Condition") and "Worst case" in table


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attacks": "pgd"}, "unknown attack 'pgd'"),
        ({"eps_list": [0.0]}, "eps must be in"),
        ({"eps_list": ["8"]}, "8/255"),
        ({"steps": 0}, "steps must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"rain": "snow"}, "unknown rain preset"),
        ({"num_classes": 7}, "num_classes=7"),
        ({"attack_kwargs": {"eroseg": {"q0": 0.3}}}, "not among the evaluated attacks"),
        ({"attack_kwargs": {"naa": {"bogus": 1}}}, "bogus"),
    ],
)
def test_bad_arguments_raise_clear_errors(tiny_model, tiny_data, kwargs, message):
    arguments = {"attacks": "naa", "eps_list": ["4/255"], "rain": "none", "steps": 1, "progress": False, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        run_benchmark(tiny_model, tiny_data, **arguments)


def test_model_output_of_the_wrong_size_is_reported_before_any_work(tiny_data):
    shrinking = nn.Conv2d(3, NUM_CLASSES, 3, stride=2, padding=1)
    with pytest.raises(ValueError, match="does not match masks"):
        run_benchmark(shrinking, tiny_data, attacks="none", rain="none", progress=False)
    with pytest.raises(ValueError, match="class ids"):
        run_benchmark(nn.Conv2d(3, 2, 1), tiny_data, attacks="none", rain="none", progress=False)


def test_a_registered_attack_is_evaluated_and_joins_the_worst_case(tiny_model, tiny_data):
    class Identity:
        """An 'attack' that returns the clean images."""

        def __init__(self, model, eps, alpha, steps, *, random_start, ignore_index):
            self.eps = eps

        def __call__(self, images, masks):
            return images.clone()

    ATTACKS["identity"] = AttackEntry(Identity, "Identity")
    try:
        results = run_benchmark(
            tiny_model, tiny_data, attacks="identity", eps_list=[1 / 255], rain="none", progress=False
        )
        assert results.row("identity", 1 / 255).confusion_matrix == results.clean.confusion_matrix
        assert results.row("worst", 1 / 255).confusion_matrix == results.clean.confusion_matrix
    finally:
        del ATTACKS["identity"]


# ----------------------------------------------------------------------------- models

_SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"


def test_model_specs_build_small_models_without_weights():
    spec = parse_model_spec(_SPEC)
    assert (spec.arch, spec.encoder, spec.kwargs) == (
        "unet",
        "resnet18",
        {"encoder_depth": 2, "decoder_channels": (8, 8)},
    )
    model = build_model(_SPEC, num_classes=5)
    assert not model.training
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5, 32, 32)
    # seeded random weights: every process builds the same model (resume and torchrun rely on it)
    first, second = load_model(_SPEC, num_classes=5), load_model(_SPEC, num_classes=5)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    # unused encoder stages are dropped: a depth-2 resnet18 keeps conv1 and layer1 only
    assert sum(p.numel() for p in model.parameters()) < 300_000
    for bad, message in (
        ("foo:resnet18", "unknown architecture"),
        ("unet:resnt18", "did you mean resnet18"),
        ("unet:resnet18:depth", "key=value"),
        ("unet:resnet18:encoder_weights=imagenet", "encoder_weights"),
    ):
        with pytest.raises(ModelLoadError, match=message):
            build_model(bad)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_checkpoints_round_trip_and_bad_ones_fail_clearly(tmp_path):
    model = build_model(_SPEC, num_classes=4)
    x = torch.rand(1, 3, 32, 32)
    path = save_model(model, tmp_path / "m.pt", _SPEC, 4, metadata={"torch": torch.__version__})
    assert torch.equal(load_model(path)(x), model(x))
    half = save_model(model, tmp_path / "h.pt", _SPEC, 4, half=True)
    assert torch.allclose(load_model(half)(x), model(x), atol=5e-2)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    assert torch.equal(load_model(f"{_SPEC}@{tmp_path / 'plain.pt'}")(x), model(x))
    scripted = torch.jit.trace(model, x)
    scripted.save(str(tmp_path / "ts.pt"))
    assert torch.allclose(load_model(tmp_path / "ts.pt", allow_torchscript=True)(x), model(x), atol=1e-5)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save(model, tmp_path / "pickled.pt")
    cases = [
        (str(tmp_path / "plain.pt"), "SPEC@PATH"),
        (str(tmp_path / "junk.pt"), "not a file written by torch.save"),
        (str(tmp_path / "pickled.pt"), "pickled Python objects"),
        (str(tmp_path / "missing.pt"), "does not exist"),
        (f"unet:resnet34@{tmp_path / 'plain.pt'}", "does not fit model"),
    ]
    for source, message in cases:
        with pytest.raises(ModelLoadError, match=message):
            load_model(source)
    with pytest.raises(ModelLoadError, match="predicts 4 classes"):
        load_model(path, num_classes=11)
