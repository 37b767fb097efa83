"""Files the command reads are data: a config or results.json runs no code, YAML bombs and special files fail fast.

docs/reliability.md, "No file runs code" and "Bounded reads": each test here
documents one promise (and failed before it was kept).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from segrobust.cli import main

REPO = Path(__file__).resolve().parents[1]
SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"
QUICK = ["--fast", "--no-progress", "--attacks", "naa", "--rain", "none", "--examples", "0"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _results_json(path: Path, cli: dict) -> Path:
    """A results.json as 'segrobust benchmark' writes it, replaying ``cli``."""
    path.write_text(json.dumps({"format": "segrobust.benchmark/1", "config": {"cli": cli}, "rows": []}))
    return path


# ----------------------------------------------------------------------------- no code from files
HOSTILE = {
    "os:system": {"command": "touch pwned"},
    "os:remove": {"path": "canary.txt"},
    "shutil:rmtree": {"path": "canary_dir"},
    "builtins:open": {"file": "canary.txt", "mode": "w"},
}


@pytest.mark.parametrize("kind", ["yaml", "results.json"])
@pytest.mark.parametrize("model", sorted(HOSTILE))
def test_a_file_naming_code_is_refused_and_nothing_runs(tmp_path, monkeypatch, capsys, model, kind):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "canary.txt").write_text("mine")
    (tmp_path / "canary_dir").mkdir()
    settings = {"model": model, "model_args": HOSTILE[model]}
    if kind == "yaml":
        config = tmp_path / "evil.yaml"
        config.write_text(json.dumps(settings))  # JSON is YAML
    else:
        config = _results_json(tmp_path / "results.json", settings)
    assert main(["benchmark", "--config", str(config), *QUICK, "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "model" in line and model in line and "--trust-config" in line
    assert (tmp_path / "canary.txt").read_text() == "mine" and (tmp_path / "canary_dir").is_dir()
    assert not (tmp_path / "pwned").exists()


def test_a_helpers_module_beside_a_results_json_is_never_imported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helpers.py").write_text("open('imported', 'w').close()\ndef build(num_classes=11):\n    pass\n")
    config = _results_json(tmp_path / "results.json", {"model": "helpers:build"})
    assert main(["benchmark", "--config", str(config), *QUICK, "--out", str(tmp_path / "out")]) == 2
    assert "helpers:build" in _error_line(capsys)
    assert not (tmp_path / "imported").exists() and "helpers" not in sys.modules


def test_trust_config_or_the_command_line_lets_a_file_name_a_module(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "segrobust_test_trusted.py").write_text(
        "from torch import nn\ndef build(num_classes=11):\n    return nn.Conv2d(3, num_classes, 1)\n"
    )
    config = tmp_path / "mine.yaml"
    config.write_text("model: segrobust_test_trusted:build\nnum_images: 2\nbatch_size: 2\n")
    try:
        code = main(["benchmark", "--config", str(config), "--trust-config", *QUICK, "--out", str(tmp_path / "out")])
        assert code == 0, capsys.readouterr().err
        assert json.loads((tmp_path / "out" / "results.json").read_text())["num_images"] == 2
    finally:
        sys.modules.pop("segrobust_test_trusted", None)
    config.write_text("trust_config: true\n")  # a file cannot vouch for itself
    assert main(["benchmark", "--config", str(config)]) == 2
    assert "unknown option 'trust_config'" in _error_line(capsys)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_allow_torchscript_in_a_file_needs_the_flag_on_the_command_line(tmp_path, capsys):
    scripted = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 11, 1)), str(scripted))
    config = _results_json(tmp_path / "results.json", {"model": str(scripted), "allow_torchscript": True})
    assert main(["benchmark", "--config", str(config), *QUICK, "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "allow_torchscript" in line and "--allow-torchscript" in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- YAML and JSON that attack the reader
def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nattack_args: {{naa: {{x: *a{levels - 1}}}}}\n"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_laughs(3), id="small-alias-bomb"),
        pytest.param("attacks: &loop [*loop]\n", id="recursive"),
        pytest.param("attack_args: &x {naa: {}}\nmodel_args: *x\n", id="plain-alias"),
    ],
)
def test_yaml_aliases_are_refused_in_one_line(tmp_path, capsys, text):
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    assert main(["benchmark", "--config", str(config), *QUICK]) == 2
    assert "aliases (*name) are not allowed" in _error_line(capsys)


def test_the_417_byte_billion_laughs_fails_fast(tmp_path):
    config = tmp_path / "laughs.yaml"
    config.write_text(_laughs(9))
    assert len(config.read_bytes()) < 600
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "segrobust", "benchmark", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "aliases (*name) are not allowed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.perf_counter() - started < 120  # bounded (the timeout above); no timing claim beyond that


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("deep.yaml", "attacks: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("deep.json", '{"attacks": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
        ("results.json", json.dumps({"format": "segrobust.benchmark/1", "config": ["cli"]}), "not written by"),
        ("list.yaml", "- attacks\n- naa\n", "expected a mapping"),
        ("args.yaml", "attack_args: [1, 2]\n", "attack_args"),
    ],
)
def test_structures_the_options_cannot_be_are_one_line_usage_errors(tmp_path, capsys, name, text, needle):
    config = tmp_path / name
    config.write_text(text)
    assert main(["benchmark", "--config", str(config)]) == 2
    assert needle in _error_line(capsys)


# ----------------------------------------------------------------------------- special files never block
def _fifo(tmp_path: Path, name: str = "pipe") -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("SEGROBUST_DEBUG", None)
    command = [sys.executable, "-m", "segrobust", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
@pytest.mark.parametrize(
    "flags",
    [
        ["--config", "{fifo}"],
        ["--model", SPEC, "--weights", "{fifo}"],
        ["--model", "{fifo}"],
        ["--model", SPEC, "--defense", "pearl:{fifo}"],
    ],
    ids=["config", "weights", "model", "defense"],
)
def test_a_fifo_for_any_file_flag_is_refused_not_read(tmp_path, flags):
    fifo = _fifo(tmp_path)
    args = ["benchmark", *QUICK, "--out", str(tmp_path / "out"), *(f.format(fifo=fifo) for f in flags)]
    result = _run(args, tmp_path)  # a read would block: the timeout would fail the test
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FIFO" in lines[0] and str(fifo) in lines[0], result.stderr


# ----------------------------------------------------------------------------- models and defence files
def test_an_unknown_timm_encoder_is_a_usage_error_naming_it(tmp_path, capsys):
    assert main(["benchmark", *QUICK, "--model", "unet:tu-nonexistent", "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "tu-nonexistent" in line and "internal error" not in line


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"stages": 10**9}, "stages=1000000000"),
        ({"channels": 4000}, "channels=4000"),
        ({"blocks": -1}, "blocks=-1"),
        ({"stages": 2.5}, "stages=2.5"),
        ({"depth": 3}, "unknown argument 'depth'"),
    ],
)
def test_a_pearl_defence_file_cannot_ask_for_an_unbounded_derainer(tmp_path, kwargs, needle):
    from segrobust.defenses import PReNet
    from segrobust.defenses.pearl_training import PEARL_CHECKPOINT_FORMAT, load_pearl_defense
    from segrobust.models import ModelLoadError, build_model

    path = tmp_path / "defense.pt"
    state = PReNet(stages=1).state_dict()  # the parameters do not depend on the number of stages
    torch.save(
        {"format": PEARL_CHECKPOINT_FORMAT, "derainer": "prenet", "derainer_kwargs": kwargs, "state_dict": state}, path
    )
    with pytest.raises(ModelLoadError, match=r"outside|unknown argument") as caught:
        load_pearl_defense(build_model(SPEC, num_classes=3), path)
    assert needle in str(caught.value) and str(path) in str(caught.value)


def test_reliable_steps_beyond_the_cap_are_refused_before_any_work(tmp_path, capsys):
    from segrobust.benchmark import BenchmarkConfig
    from segrobust.benchmark.defaults import MAX_STEPS

    with pytest.raises(ValueError, match="reliable_steps must be at most"):
        BenchmarkConfig(reliable_steps=MAX_STEPS + 1)
    args = ["benchmark", *QUICK, "--attacks", "reliable", "--reliable-steps", "1000000000"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "reliable_steps must be at most" in _error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_train_config_naming_code_is_refused_too(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "train.yaml"
    config.write_text("model: os:system\nmodel_args: {command: touch pwned}\n")
    assert main(["train", "--config", str(config), "--fast", "--no-progress", "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys)
    assert "os:system" in line and "--trust-config" in line and not (tmp_path / "pwned").exists()
