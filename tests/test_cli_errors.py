"""Failures of the ``segrobust`` command (exit code 2, one line on stderr naming the file or flag, no traceback)
and of the loaders behind it (one-line ModelLoadError / TypeError)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segrobust.cli import build_parser
from segrobust.models import ModelLoadError, build_model, load_model, save_model

REPO = Path(__file__).resolve().parents[1]
SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SEGROBUST_DEBUG", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "segrobust", *args]
    return subprocess.run(command, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _bench(tmp_path: Path, *args: str) -> list[str]:
    return [
        "benchmark",
        "--fast",
        "--no-progress",
        "--attacks",
        "naa",
        "--rain",
        "none",
        "--out",
        str(tmp_path / "out"),
        *args,
    ]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header announces ``width x height`` (PIL checks the size when opening, before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _folder(tmp_path: Path, bad_image: str) -> Path:
    """An images/ + masks/ folder with one good pair and one bad image (``garbage``, ``bomb`` or ``directory``)."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / f"{stem}.png")
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(root / "images" / "a.png")
    bad = root / "images" / "b.png"
    if bad_image == "garbage":
        bad.write_bytes(b"this is not an image")
    elif bad_image == "bomb":
        _png_header_only(bad, 20000, 20000)
    else:
        bad.mkdir()
    return root


@pytest.mark.parametrize("bad_image", ["garbage", "bomb"])
def test_unreadable_images_name_the_file(tmp_path, bad_image):
    root = _folder(tmp_path, bad_image)
    result = _run(_bench(tmp_path, "--model", SPEC, "--dataset", "folder", "--data-root", str(root)), tmp_path)
    _one_line_error(result, "b.png")


def test_symlink_loop_as_data_root_or_weights_names_the_flag(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    result = _run(_bench(tmp_path, "--dataset", "folder", "--data-root", str(loop)), tmp_path)
    _one_line_error(result, "--data-root", "symbolic links")
    result = _run(_bench(tmp_path, "--model", SPEC, "--weights", str(loop)), tmp_path)
    _one_line_error(result, "--weights", "symbolic links")


def test_a_directory_as_checkpoint_or_output_file_is_one_line(tmp_path):
    result = _run(_bench(tmp_path, "--model", SPEC, "--weights", str(tmp_path)), tmp_path)
    _one_line_error(result, "is a directory")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _run(
        [
            "benchmark",
            "--fast",
            "--no-progress",
            "--model",
            SPEC,
            "--attacks",
            "naa",
            "--rain",
            "none",
            "--out",
            str(blocker / "out"),
        ],
        tmp_path,
    )
    _one_line_error(result, str(blocker))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_checkpoint_says_permission_denied(tmp_path):
    path = save_model(build_model(SPEC, num_classes=3), tmp_path / "m.pt", SPEC, 3)
    path.chmod(0)
    _one_line_error(_run(_bench(tmp_path, "--model", str(path)), tmp_path), str(path), "Permission denied")


def _pearl_checkpoint(tmp_path: Path) -> Path:
    from segrobust.defenses.derain import build_derainer
    from segrobust.defenses.pearl_training import save_pearl_defense

    return save_pearl_defense(build_derainer("prenet"), tmp_path / "defense.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("PWNED-BY-PICKLE",))


def test_hostile_pearl_defence_file_is_refused_in_one_line(tmp_path):
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "x", "payload": _Evil()}, hostile)
    result = _run(_bench(tmp_path, "--model", SPEC, "--defense", f"pearl:{hostile}"), tmp_path)
    _one_line_error(result, "--defense pearl", str(hostile), "pickled Python objects")
    assert "PWNED" not in result.stdout + result.stderr


def test_truncated_or_mismatched_pearl_defence_raises_model_load_error(tmp_path):
    from segrobust.defenses.pearl_training import load_pearl_defense

    good = _pearl_checkpoint(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    payload = torch.load(good, weights_only=True)
    name, tensor = next(iter(payload["state_dict"].items()))
    payload["state_dict"][name] = torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1)
    mismatched = tmp_path / "mismatched.pt"
    torch.save(payload, mismatched)
    segmenter = build_model(SPEC, num_classes=3)
    for path, reason in ((truncated, "not a file written by torch.save"), (mismatched, "does not fit its derainer")):
        with pytest.raises(ModelLoadError, match=reason) as caught:
            load_pearl_defense(segmenter, path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_damaged_segrobust_checkpoint_names_the_missing_key(tmp_path):
    path = save_model(build_model(SPEC, num_classes=3), tmp_path / "m.pt", SPEC, 3)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["num_classes"], checkpoint["spec"]
    torch.save(checkpoint, path)
    with pytest.raises(ModelLoadError, match="misses 'spec' and 'num_classes'"):
        load_model(path)


def test_save_model_needs_a_module_first(tmp_path):
    with pytest.raises(TypeError, match=r"nn\.Module\) first, got str"):
        save_model("x", tmp_path / "m.pt", SPEC, 3)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_empty_torchscript_load_errors_name_the_exception(tmp_path, monkeypatch):
    path = tmp_path / "model.ts"
    torch.jit.trace(nn.Conv2d(3, 2, 1), torch.rand(1, 3, 8, 8)).save(str(path))

    def failing_load(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(torch.jit, "load", failing_load)
    with pytest.raises(ModelLoadError, match=r"cannot load TorchScript model .*model.ts: RuntimeError$"):
        load_model(path, allow_torchscript=True)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_needs_allow_torchscript(tmp_path):
    """The CLI refuses TorchScript unless --allow-torchscript; the Python API the same unless allow_torchscript=True."""
    model = build_model(SPEC, num_classes=3)
    path = tmp_path / "model.ts"
    torch.jit.trace(model, torch.rand(1, 3, 32, 32)).save(str(path))
    _one_line_error(_run(_bench(tmp_path, "--model", str(path)), tmp_path), str(path), "--allow-torchscript")
    with pytest.raises(ModelLoadError, match="allow_torchscript=True"):
        load_model(path)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(load_model(path, allow_torchscript=True)(x), model(x), atol=1e-5)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            ["--attack-args", '{"naa": 5}'],
            ['--attack-args: the value for "naa" must be a JSON object of keyword arguments'],
        ),
        (["--attack-args", "[1]"], ["--attack-args", "JSON object"]),
        (["--alpha", "0"], ["--alpha", "step size"]),
        (["--model-args", "{bad"], ["--model-args", "not valid JSON"]),
        (["--mean", "0.5,0.5,0.5"], ["--mean and --std"]),
        (["--model", "torchvision.models.segmentation:no_such_model"], ["--model", "no_such_model"]),
        (["--model", "no_such_module_xyz:build"], ["--model", "no_such_module_xyz"]),
    ],
)
def test_bad_flag_values_name_the_flag(tmp_path, args, needles):
    _one_line_error(_run(_bench(tmp_path, *args), tmp_path), *needles)


def test_internal_errors_are_one_line_with_a_hint_unless_debugging(tmp_path):
    script = (
        "import sys, segrobust.cli as cli\n"
        "def broken(args):\n    raise KeyError('internal')\n"
        "cli.COMMANDS['benchmark'] = broken\nsys.exit(cli.main(['benchmark']))\n"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    _one_line_error(result, "internal error", "KeyError", "SEGROBUST_DEBUG=1", code=1)
    result = subprocess.run(
        command, cwd=tmp_path, env=_env(SEGROBUST_DEBUG="1"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "Traceback" in result.stderr and "KeyError" in result.stderr


def test_dataset_choices_follow_the_factory(monkeypatch):
    from segrobust.datasets import factory

    monkeypatch.setattr(factory, "DATASET_NAMES", (*factory.DATASET_NAMES, "brand-new"))
    args = build_parser().parse_args(["benchmark", "--dataset", "brand-new"])
    assert args.dataset == "brand-new"
    for name in factory.DATASET_NAMES:
        if not name.endswith("-triplets"):
            assert build_parser().parse_args(["train", "--dataset", name]).dataset == name


def test_train_refuses_an_out_that_is_or_is_inside_a_file(tmp_path, capsys):
    from segrobust.cli import main

    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, needle in ((afile, "is a file"), (afile / "sub", "which is a file")):
        assert main(["train", "--fast", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err and "Traceback" not in err
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("command", ["benchmark", "train"])
def test_flag_prefixes_are_not_taken_for_other_flags(command):
    """``--output`` once became ``--output-key`` (argparse's prefix matching): every flag is taken whole."""
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([command, "--output", "out"])
    assert exit_info.value.code == 2
