"""Every example runs in its --fast mode, so none can rot (others are run by their feature's tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> str:
    # This checkout's segrobust, whichever one is installed (a script's folder, not the cwd, is on its sys.path).
    path = os.pathsep.join(filter(None, [str(EXAMPLES.parent), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--fast", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_quickstart_attack_example():
    out = _run("quickstart_attack.py")
    assert "NAA 4/255" in out and "AMA 4/255" in out


def test_compare_attacks_example_writes_figure(tmp_path):
    out = _run("compare_attacks.py", "--out", str(tmp_path / "gallery.png"))
    assert "EroSeg" in out and (tmp_path / "gallery.png").stat().st_size > 10_000


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_fast_mode(script):
    assert "--fast" in (EXAMPLES / script).read_text(), f"{script} must accept --fast"


def test_pearl_defense_example():
    out = _run("pearl_defense.py")
    assert "PEARL (+AMA)" in out and "segmenter alone" in out


def test_evaluation_modes_example():
    out = _run("evaluation_modes.py")
    for mode in ("whole image", "sliding window", "multi-scale/flip"):
        assert mode in out
    assert "NAA end to end" in out and "NAA transferred" in out


def test_reliable_evaluation_example():
    out = _run("reliable_evaluation.py")
    assert "reliable ensemble (worst case)" in out and "greedy worst-case mIoU" in out
    assert "preset 'quick': masked_ce ×10 → js ×10" in out and "iterations per image: [" in out
    scores = {
        line[:34].strip(): float(line.split("pixel acc")[1].split()[0])
        for line in out.splitlines()
        if "pixel acc" in line
    }
    assert scores["reliable ensemble (worst case)"] < scores["clean"]
    assert scores["custom ensemble (worst case)"] < scores["clean"]


def test_standard_datasets_example_benchmarks_a_cityscapes_layout_tree():
    out = _run("standard_datasets.py")
    assert "cityscapes val: 2 images at (32, 64), 19 classes" in out
    assert "Reliable ensemble" in out and "Robustness under the reliable evaluation" in out


def test_corruptions_gallery_example(tmp_path):
    out = _run("corruptions_gallery.py", "--out", str(tmp_path / "gallery.png"))
    assert "wrote" in out and "16 corruptions" in out and "Glass blur" in out
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
