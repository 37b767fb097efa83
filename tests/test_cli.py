"""The ``segrobust`` command: end to end, resume after a crash, 2-process gloo run, bad arguments, train."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segrobust.cli import main

REPO = Path(__file__).resolve().parents[1]
SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"
# 8 images in 4 batches; clean, 1 rain preset, 3 attacks at 2 budgets: 8 conditions, 32 work units.
FAST = [
    "benchmark",
    "--fast",
    "--model",
    SPEC,
    "--num-images",
    "8",
    "--batch-size",
    "2",
    "--attacks",
    "naa,segpgd,ama",
    "--rain",
    "light",
    "--eps",
    "4/255,8/255",
    "--no-progress",
]
NUM_UNITS = 32


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segrobust", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _numbers(out: Path) -> list[tuple]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [
        (r["key"], r["eps"], r["confusion_matrix"], r["per_image_pixel_accuracy"], r.get("worst_attack")) for r in rows
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "reference"
    result = _run([*FAST, "--out", str(out), "--threads", "1"])
    assert result.returncode == 0, result.stderr
    return out, result


def test_benchmark_end_to_end_prints_the_table_and_writes_the_report(reference):
    out, result = reference
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["Condition", "ε", "mIoU"]
    for label in ("Clean", "Rain (light)", "NAA", "SegPGD", "AMA (positive)", "Worst case"):
        assert any(line.startswith(label) for line in lines), label
    assert "Wrote results.json, report.md, miou_vs_eps.png, examples.png, rain_examples.png" in result.stdout
    data = json.loads((out / "results.json").read_text())
    assert data["num_images"] == 8 and data["config"]["steps"] == 2 and data["config"]["world_size"] == 1
    assert {row["kind"] for row in data["rows"]} == {"clean", "rain", "attack", "positive", "worst"}
    assert len(list((out / "partial").rglob("batch_*.pt"))) == NUM_UNITS
    for name in ("report.md", "miou_vs_eps.png", "examples.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.slow
def test_resume_after_a_killed_run_gives_identical_results(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "segrobust", *FAST, "--out", str(out), "--threads", "1"]
    process = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    done = 0
    while time.time() < deadline and process.poll() is None:
        done = len(list((out / "partial").rglob("batch_*.pt"))) if (out / "partial").exists() else 0
        if done >= 6:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)  # a crash: no clean-up, possibly mid-write
    process.wait(timeout=30)
    done = len(list((out / "partial").rglob("batch_*.pt")))
    assert 6 <= done < NUM_UNITS
    assert not (out / "results.json").exists()
    resumed = _run([*FAST, "--out", str(out), "--threads", "1", "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert _numbers(out) == _numbers(ref)


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_numbers(reference, tmp_path):
    ref, _ = reference
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "segrobust",
        *FAST,
        "--out",
        str(out),
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    result = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("Worst case")]
    assert len(rows) == 2  # rank 0 alone prints the table (one row per ε)
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["world_size"] == 2
    assert _numbers(out) == _numbers(ref)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["benchmark", "--attacks", "pgd"], "unknown attack 'pgd'"),
        (["benchmark", "--eps", "0"], "eps must be in (0, 1]"),
        (["benchmark", "--eps", "4/255,1.5"], "eps must be in (0, 1]"),
        (["benchmark", "--eps", "8"], "write 8/255"),
        (["benchmark", "--dataset", "camvid", "--data-root", "/nonexistent/camvid"], "does not exist"),
        (["benchmark", "--dataset", "folder"], "needs --data-root"),
        (["benchmark", "--model", "/nonexistent/model.pt"], "does not exist"),
        (["benchmark", "--model", "__JUNK__"], "not a file written by torch.save"),
        (["benchmark", "--model", "__PLAIN__"], "SPEC@PATH"),
        (["benchmark", "--model", "unet:resnt18"], "did you mean resnet18"),
        (["benchmark", "--defense", "magic:x.pt"], "unknown defence 'magic'"),
        (["benchmark", "--steps", "0"], "positive integer"),
        (["benchmark", "--size", "big"], "size must be HxW"),
        (["benchmark", "--rain", "snow"], "unknown rain preset"),
        (["train", "--recipe", "magic"], "unknown recipe 'magic'"),
        (["bench"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(args, message, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    args = [str(junk) if a == "__JUNK__" else str(plain) if a == "__PLAIN__" else a for a in args]
    args += ["--out", str(tmp_path / "out")] if args[0] in ("benchmark", "train") else []
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2  # the console script returns main()'s code: `segrobust ...` exits with 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0] and "error" in lines[0] and "Traceback" not in captured.err


def test_train_then_benchmark_the_trained_checkpoint(tmp_path, capsys):
    out = tmp_path / "trained"
    assert main(["train", "--fast", "--recipe", "pgd_at", "--model", SPEC, "--out", str(out), "--no-progress"]) == 0
    assert (out / "model.pt").exists() and (out / "history.json").exists()
    assert "segrobust benchmark --model" in capsys.readouterr().out
    code = main(
        [
            "benchmark",
            "--fast",
            "--model",
            str(out / "model.pt"),
            "--attacks",
            "naa",
            "--rain",
            "none",
            "--out",
            str(tmp_path / "bench"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "bench" / "results.json").read_text())["config"]["model_name"] == str(
        out / "model.pt"
    )


def test_benchmark_camvid_example_runs_fast(tmp_path):
    result = subprocess.run(
        [sys.executable, "examples/benchmark_camvid.py", "--fast", "--out", str(tmp_path / "example")],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Worst case" in result.stdout
    assert (tmp_path / "example" / "report.md").exists()


def test_train_pearl_then_benchmark_with_the_defence(tmp_path):
    train = _run(["train", "--recipe", "pearl", "--fast", "--out", str(tmp_path / "pearl"), "--no-progress"])
    assert train.returncode == 0, train.stderr[-2000:]
    assert (tmp_path / "pearl" / "defense.pt").exists()
    bench = _run(
        [
            "benchmark",
            "--fast",
            "--model",
            str(tmp_path / "pearl" / "model.pt"),
            "--attacks",
            "naa",
            "--defense",
            f"pearl:{tmp_path / 'pearl' / 'defense.pt'}",
            "--out",
            str(tmp_path / "bench"),
            "--no-progress",
        ]
    )
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert (tmp_path / "bench" / "results.json").exists()


def test_the_main_job_reports_the_reliable_evaluation_by_default(tmp_path):
    """Without --attacks the benchmark runs the reliable evaluation (--fast: the 'quick' preset, said to be a
    smoke test) and leads the report with it; --attacks short is the opt-out."""
    out = tmp_path / "default"
    small = ["benchmark", "--fast", "--model", SPEC, "--num-images", "2", "--rain", "none", "--eps", "8/255"]
    result = _run([*small, "--no-progress", "--out", str(out)])
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    reliable = [row for row in rows if row["key"] == "reliable"]
    assert len(reliable) == 1 and reliable[0]["ensemble"]["mean_passes_per_image"] >= 20
    assert "Robustness under the reliable evaluation (preset 'quick'" in result.stdout
    assert "smoke test" in result.stdout
    report = (out / "report.md").read_text()
    assert report.index("## Robustness (reliable evaluation)") < report.index("## Summary")
    short = _run([*small, "--attacks", "short", "--no-progress", "--out", str(tmp_path / "short")])
    assert short.returncode == 0, short.stderr
    assert not any(
        row["key"] == "reliable" for row in json.loads((tmp_path / "short" / "results.json").read_text())["rows"]
    )
