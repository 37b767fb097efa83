"""Corruptions in the benchmark: rows, resume, batch- and process-independence, the summary and the robustness card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _corruption_bench_worker import CORRUPTIONS, SEVERITIES, tiny_setup

from segrobust.benchmark import BenchmarkConfig, build_conditions, run_benchmark

REPO = Path(__file__).resolve().parents[1]
KEEP = ("key", "severity", "confusion_matrix", "per_image_pixel_accuracy", "miou")


def _run(batch_size: int = 2, **settings):
    model, data = tiny_setup()
    options = dict(attacks="none", rain="none", corruptions=CORRUPTIONS, severities=SEVERITIES, progress=False)
    options.update(settings)
    return run_benchmark(model, data, batch_size=batch_size, **options)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("corruptions")
    return _run(out_dir=out, num_examples=1), out


def _rows(results):
    return [{k: getattr(row, k) for k in KEEP} for row in results.rows]


def test_rows_per_corruption_and_severity(reference):
    results, _ = reference
    corruption = [(row.key, row.severity) for row in results.rows if row.kind == "corruption"]
    expected = [
        (f"corruption:{n}", s) for n in ("gaussian_noise", "glass_blur", "fog", "jpeg_compression") for s in SEVERITIES
    ]
    assert corruption == expected
    # the rain family runs as the rain presets of its severities (5 has no preset: three levels only)
    assert [row.key for row in results.rows if row.kind == "rain"] == ["rain:light"]
    assert results.row("corruption:fog", severity=5).label == "Fog (severity 5)"
    assert all(row.miou != results.clean.miou for row in results.rows if row.kind == "corruption" and row.severity == 5)


def test_batch_size_does_not_change_any_number(reference):
    results, _ = reference
    assert _rows(_run(batch_size=4)) == _rows(results)


def test_resume_recomputes_only_missing_units_and_gives_identical_numbers(reference):
    results, out = reference
    units = sorted((out / "partial").rglob("batch_*.pt"))
    assert len(units) == (1 + 1 + 4 * 2) * 3  # (clean, rain light, 4 corruptions × 2 severities) × 3 batches
    for path in units[::4]:
        path.unlink()
    resumed = _run(out_dir=out, resume=True, num_examples=1)
    assert _rows(resumed) == _rows(results)
    assert any(row.seconds is None for row in resumed.rows)


def test_two_processes_give_the_single_process_numbers(reference, tmp_path):
    results, _ = reference
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "_corruption_bench_worker.py"),
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [{k: row.get(k) for k in KEEP} for row in rows] == _rows(results)


def test_summary_card_and_report(reference):
    results, out = reference
    summary = results.corruption_summary()
    corruption_rows = [row for row in results.rows if row.kind == "corruption"]
    assert summary["mean_miou"] == pytest.approx(sum(row.miou for row in corruption_rows) / len(corruption_rows))
    assert summary["relative_robustness"] == pytest.approx(summary["mean_miou"] / results.clean.miou)
    assert summary["worst_family"] == min(summary["families"], key=lambda f: summary["families"][f]["mean"])
    card = {entry["label"]: entry for entry in results.robustness_card()}
    assert card["Corruptions (mean)"]["miou"] == summary["mean_miou"]
    assert card["Rain"]["miou"] == results.row("rain:light").miou
    assert card["Adversarial (reliable)"]["miou"] is None and card["Adversarial (reliable)"]["detail"] == "not run"
    report = (out / "report.md").read_text()
    assert "## Robustness card" in report and "| Adversarial (reliable) | – | – | not run |" in report
    assert "## Corruptions" in report and "relative robustness (mean / clean)" in report
    for name in ("robustness_card.png", "corruptions.png", "corruption_examples.png"):
        assert (out / name).stat().st_size > 0, name
    loaded = type(results).load(out / "results.json")
    assert loaded.row("corruption:glass_blur", severity=1).severity == 1
    assert loaded.corruption_summary()["mean_miou"] == pytest.approx(summary["mean_miou"])


def test_card_without_corruptions_says_not_run():
    results = _run(corruptions=None, rain="none")
    card = results.robustness_card()
    assert [e["detail"] for e in card if e["miou"] is None] == ["not run"] * 4
    assert not any(row.kind == "corruption" for row in results.rows)
    assert "corruptions" not in results.config  # older output folders keep resuming


def test_config_resolves_names_families_and_severities():
    config = BenchmarkConfig(corruptions="Fog, noise", severities="5,1-2", rain="none", attacks="none")
    assert config.corruptions == ["gaussian_noise", "shot_noise", "impulse_noise", "fog"]
    assert config.severities == [1, 2, 5]
    assert len(BenchmarkConfig(corruptions="all").corruptions) == 16
    with pytest.raises(ValueError, match="unknown corruption 'haze'"):
        BenchmarkConfig(corruptions="haze")
    with pytest.raises(ValueError, match=r"severities must be ints in 1\.\.5"):
        BenchmarkConfig(corruptions="fog", severities=[0, 6])
    tags = [c.tag for c in build_conditions([], [], [], ["rain"], [1, 2, 3, 4, 5])]
    assert tags == ["clean", "rain-light", "rain-medium", "rain-heavy"]
