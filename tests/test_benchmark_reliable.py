"""The reliable ensemble in the benchmark: member rows, greedy mIoU, passes, convergence figure, masking checks, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NUM_CLASSES, TinySegNet, make_blobs
from torch import nn

from segrobust.attacks.ensemble import RELIABLE_PRESETS
from segrobust.benchmark import BenchmarkConfig, BenchmarkResults, render_markdown, run_benchmark

REPO = Path(__file__).resolve().parents[1]
SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"
MEMBERS = [member.label for member in RELIABLE_PRESETS["default"].members]  # the benchmark's preset
# 6 images in 3 batches, the ensemble (4 iterations per loss) and NAA at two budgets.
CONFIG = BenchmarkConfig(
    attacks="reliable,naa",
    eps_list=["2/255", "8/255"],
    rain="none",
    steps=2,
    reliable_steps=4,
    batch_size=2,
    progress=False,
    num_examples=1,
)


def _data(n: int = 6) -> list[dict[str, torch.Tensor]]:
    images, masks = make_blobs(n, 16, seed=3)
    return [{"image": image, "mask": mask} for image, mask in zip(images, masks)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinySegNet().eval()


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("reliable")
    return out, run_benchmark(model, _data(), CONFIG, out_dir=out)


def _numbers(results: BenchmarkResults) -> list[tuple]:
    return [
        (r.key, r.eps, r.confusion_matrix, r.per_image_pixel_accuracy, r.worst_attack, r.ensemble) for r in results.rows
    ]


def test_rows_greedy_miou_and_passes(reference):
    _, results = reference
    assert [row.label for row in results.rows[: 2 + len(MEMBERS)]] == [
        "Clean",
        "Reliable ensemble ε=2/255",
        *(f"Reliable · {name} ε=2/255" for name in MEMBERS),
    ]
    for eps in (2 / 255, 8 / 255):
        ensemble = results.row("reliable", eps)
        members = [results.row(f"reliable:{name}", eps) for name in MEMBERS]
        assert ensemble.ensemble["members"] == MEMBERS
        for member in members:  # the greedy choice is a heuristic: within the tolerance of tests/test_ensemble.py
            assert ensemble.miou <= member.miou + 2e-3
            assert ensemble.pixel_accuracy <= member.pixel_accuracy + 1e-9
        assert ensemble.miou == pytest.approx(_miou(ensemble.confusion_matrix))
        assert ensemble.miou <= ensemble.ensemble["miou_of_returned_images"] + 2e-3
        # per member: one start forward, 4 gradient passes and a scoring forward per image it attacked
        for member in members:
            forward, backward = (
                member.ensemble["forward_passes_per_image"],
                member.ensemble["backward_passes_per_image"],
            )
            assert len(forward) == 6 and all(b in (0, 4) for b in backward)
            assert all((f == 0) == (b == 0) for f, b in zip(forward, backward))
        total = [
            sum(m.ensemble["forward_passes_per_image"][i] + m.ensemble["backward_passes_per_image"][i] for m in members)
            for i in range(6)
        ]
        assert ensemble.ensemble["mean_passes_per_image"] == pytest.approx(sum(total) / 6)
        worst = results.row("worst", eps)  # the ensemble is one candidate of the per-image worst case
        assert all(w <= r + 1e-12 for w, r in zip(worst.per_image_pixel_accuracy, ensemble.per_image_pixel_accuracy))
    assert results.config["reliable_steps"] == 4


def _miou(cm: list[list[int]]) -> float:
    from segrobust.metrics.functional import mean_iou

    return mean_iou(torch.tensor(cm))


def test_report_convergence_figure_and_checks(reference):
    out, results = reference
    report = (out / "report.md").read_text()
    assert report.index("## Robustness (reliable evaluation)") < report.index("## Summary")
    assert (
        "## Gradient-masking checks" in report and "![Convergence of the reliable ensemble](convergence.png)" in report
    )
    assert (out / "convergence.png").stat().st_size > 1000
    curves = results.row("reliable", 8 / 255).ensemble["convergence"]
    assert list(curves) == MEMBERS and all(len(curve) == 5 for curve in curves.values())
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["checks"]) == {"apgd_flags", "eps_monotonicity"}
    assert {"reliable", "naa", "worst"} <= set(saved["checks"]["eps_monotonicity"])
    assert BenchmarkResults.load(out / "results.json").checks == saved["checks"]


def test_masking_flags_on_a_model_without_gradient():
    class Constant(nn.Module):  # ignores its input: zero gradient, the loss never moves
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(NUM_CLASSES))

        def forward(self, x):
            out = x[:, :1] * 0 + self.bias.view(1, -1, 1, 1)
            return out + torch.nn.functional.one_hot(torch.tensor(1), NUM_CLASSES).view(1, -1, 1, 1).float()

    results = run_benchmark(Constant(), _data(4), CONFIG.replace(attacks="reliable", num_examples=0))
    flags = results.checks["apgd_flags"]
    assert len(flags) == 2 * len(MEMBERS)
    first = flags[0]
    attacked = [
        i for i in range(4) if results.row("reliable:masked_ce", 2 / 255).ensemble["backward_passes_per_image"][i]
    ]
    assert (
        first["zero_gradient"] == attacked
        and first["loss_never_rose"] == attacked
        and first["nonfinite_gradient"] == []
    )
    assert "| 2/255 | Reliable · masked_ce | 4 | 4 (0, 1, 2, 3) | 4 (0, 1, 2, 3) | 0 |" in render_markdown(results)


def test_eps_monotonicity_flags_an_accuracy_that_rises_with_eps():
    from segrobust.benchmark.checks import eps_monotonicity
    from segrobust.benchmark.results import ConditionResult

    def row(eps, accs, miou):
        return ConditionResult(
            "reliable", "Reliable ensemble", "attack", eps, miou, sum(accs) / 2, 0.5, [], 0, [], accs
        )

    found = eps_monotonicity(
        [row(2 / 255, [0.5, 0.2], 0.3), row(4 / 255, [0.4, 0.3], 0.2), row(8 / 255, [0.7, 0.1], 0.1)]
    )
    assert found["reliable"]["images"] == {"0": [["2/255", "8/255"], ["4/255", "8/255"]], "1": [["2/255", "4/255"]]}
    assert [item["eps"] for item in found["reliable"]["overall"]] == [["2/255", "8/255"], ["4/255", "8/255"]]


def test_resume_gives_identical_results(model, reference, tmp_path):
    out, expected = reference
    folder = shutil.copytree(out, tmp_path / "run")
    units = sorted((folder / "partial").rglob("batch_*.pt"))
    for path in units[::2]:  # as if the run had been killed before these units
        path.unlink()
    resumed = run_benchmark(model, _data(), CONFIG, out_dir=folder, resume=True, write_report=False)
    assert _numbers(resumed) == _numbers(expected)
    assert resumed.checks == expected.checks


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_numbers(tmp_path):
    args = [
        "benchmark",
        "--fast",
        "--model",
        SPEC,
        "--num-images",
        "6",
        "--batch-size",
        "2",
        "--attacks",
        "reliable",
        "--rain",
        "none",
        "--eps",
        "4/255,8/255",
        "--reliable-steps",
        "3",
        "--no-progress",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--examples",
        "0",
    ]
    single = subprocess.run(
        [sys.executable, "-m", "segrobust", *args, "--out", str(tmp_path / "one")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert "Robustness under the reliable evaluation" in single.stdout
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "segrobust",
        *args,
        "--out",
        str(tmp_path / "two"),
    ]
    double = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two"))
    assert two["config"]["world_size"] == 2
    keep = ("key", "eps", "confusion_matrix", "per_image_pixel_accuracy", "worst_attack", "ensemble", "miou")
    assert [{k: r[k] for k in keep} for r in two["rows"]] == [{k: r[k] for k in keep} for r in one["rows"]]
    assert two["checks"] == one["checks"]
