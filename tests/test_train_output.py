"""``segrobust train`` keeps benchmark's promises for its output folder (docs/reliability.md, "Training output").

It overwrites only files it wrote, writes atomically, holds a lock, refuses a
resume whose recipe or settings differ, never lets a preset override a flag,
and ends a bad resume with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segrobust.cli import main

REPO = Path(__file__).resolve().parents[1]
SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"
TRAIN = ["train", "--fast", "--model", SPEC, "--num-images", "4", "--no-progress"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished ``standard`` run (one epoch on 4 small images)."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def _copy(trained: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    return out


@pytest.mark.parametrize("name", ["model.pt", "history.json", "config.json"])
def test_train_never_overwrites_a_file_it_did_not_write(tmp_path, capsys, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("my own work")
    assert main([*TRAIN, "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert str(out / name) in line and "not written by segrobust train" in line
    assert (out / name).read_text() == "my own work" and not (out / "checkpoints").exists()


def test_an_out_set_by_a_hand_made_config_is_protected_too(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.pt").write_text("my own work")
    config = tmp_path / "train.yaml"
    config.write_text(f"out: {out}\nmodel: {SPEC}\nnum_images: 4\n")
    assert main(["train", "--config", str(config), "--fast", "--no-progress"]) == 2
    assert "not written by segrobust train" in _error_line(capsys)
    assert (out / "model.pt").read_text() == "my own work"


def test_a_foreign_checkpoints_folder_is_left_alone(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_text("my own checkpoint")
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 2
    assert "was not made by segrobust train" in _error_line(capsys)
    assert (out / "checkpoints" / "last.pt").read_text() == "my own checkpoint"


def test_train_records_what_it_wrote_and_a_rerun_replaces_only_that(trained, tmp_path):
    out = _copy(trained, tmp_path)
    record = json.loads((out / ".segrobust-train.json").read_text())
    assert set(record["files"]) == {"model.pt", "history.json", "config.json"}
    assert record["folders"] == ["checkpoints"] and record["settings"]["recipe"] == "standard"
    (out / "notes.txt").write_text("mine")
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))  # atomic writes leave no temporaries


def test_two_runs_on_one_out_do_not_both_write(tmp_path, capsys):
    from segrobust.fileio import OutputFolder

    out = tmp_path / "busy"
    with OutputFolder(out, "train"):  # another run holds the folder
        assert main([*TRAIN, "--out", str(out)]) == 2
    assert "in use by another segrobust train run" in _error_line(capsys)
    assert not (out / "model.pt").exists()


@pytest.mark.parametrize(
    ("flags", "differ"),
    [
        (["--recipe", "pgd_at"], "recipe"),
        (["--lr", "0.5"], "lr"),
        (["--model", f"{SPEC}:activation=sigmoid"], "model"),
    ],
)
def test_resume_with_another_recipe_or_settings_is_refused(trained, tmp_path, capsys, flags, differ):
    out = _copy(trained, tmp_path)
    before = (out / "model.pt").read_bytes()
    assert main([*TRAIN, "--out", str(out), "--resume", *flags]) == 2
    line = _error_line(capsys)
    assert "cannot resume" in line and differ in line
    assert (out / "model.pt").read_bytes() == before


def test_a_flag_wins_over_fast(tmp_path):
    out = tmp_path / "three"
    assert main([*TRAIN, "--epochs", "3", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
    assert len(json.loads((out / "history.json").read_text())) == 3


def test_resume_from_a_checkpoint_of_another_architecture_is_one_line(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    (out / ".segrobust-train.json").unlink()  # no record to compare: the checkpoint itself must be refused
    shutil.rmtree(out / "checkpoints")
    other = tmp_path / "other"
    assert main([*TRAIN, "--model", "unet:resnet18:encoder_depth=3:decoder_channels=8,8,8", "--out", str(other)]) == 0
    capsys.readouterr()
    shutil.copytree(other / "checkpoints", out / "checkpoints")
    record = json.loads((other / ".segrobust-train.json").read_text())
    record["settings"]["model"] = SPEC  # as if the record agreed
    (out / ".segrobust-train.json").write_text(json.dumps({**record, "files": {}}))
    for name in ("model.pt", "history.json", "config.json"):
        (out / name).unlink()
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 2
    line = _error_line(capsys)
    assert "cannot resume" in line and "does not fit" in line and "internal error" not in line


def test_resume_from_a_truncated_checkpoint_is_one_line(trained, tmp_path, capsys):
    out = _copy(trained, tmp_path)
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 2
    line = _error_line(capsys)
    assert str(last) in line and "not a readable checkpoint" in line


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_resume_from_a_fifo_checkpoint_is_refused_not_read(trained, tmp_path):
    out = _copy(trained, tmp_path)
    last = out / "checkpoints" / "last.pt"
    last.unlink()
    os.mkfifo(last)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "segrobust", *TRAIN, "--out", str(out), "--resume"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FIFO" in lines[0] and str(last) in lines[0]


def test_resume_after_a_finished_run_trains_nothing_more_and_keeps_the_numbers(trained, tmp_path):
    out = _copy(trained, tmp_path)
    before = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert main([*TRAIN, "--out", str(out), "--resume"]) == 0
    after = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
