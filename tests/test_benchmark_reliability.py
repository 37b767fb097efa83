"""The benchmark's promises: it deletes and overwrites only what it wrote, resumes exactly, locks its
output folder, checks saved units, rejects NaN logits and names the bad file of a data set."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NUM_CLASSES, TinySegNet, make_blobs

from segrobust.benchmark import (
    BenchmarkConfig,
    DataError,
    ModelOutputError,
    OutputFolderError,
    run_benchmark,
)

REPO = Path(__file__).resolve().parents[1]
SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"
# Clean and one attack on 8 images in 4 batches: 8 units, a second or two.
SMALL = BenchmarkConfig(
    attacks="naa", eps_list=["8/255"], rain="none", steps=1, batch_size=2, progress=False, num_examples=0
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinySegNet().eval()


def _data(seed: int = 1, n: int = 8) -> list[dict[str, torch.Tensor]]:
    images, masks = make_blobs(n, 16, seed=seed)
    return [{"image": image, "mask": mask} for image, mask in zip(images, masks)]


def _numbers(results) -> list:
    return [(r.key, r.eps, r.confusion_matrix, r.per_image_pixel_accuracy) for r in results.rows]


def _cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.run(
        [sys.executable, "-m", "segrobust", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _main(args: list[str], capsys) -> subprocess.CompletedProcess:
    """``segrobust ARGS`` in this process (the variants of a case a subprocess test covers; subprocesses are slow)."""
    from segrobust.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


TINY_CLI = [
    "benchmark",
    "--model",
    SPEC,
    "--attacks",
    "none",
    "--rain",
    "none",
    "--no-progress",
    "--threads",
    "1",
    "--examples",
    "0",
]


# ----------------------------------------------------------------------------- 1. only what it wrote
def test_a_partial_folder_segrobust_did_not_write_is_left_alone(model, tmp_path):
    foreign = tmp_path / "partial" / "notes.txt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("mine")
    with pytest.raises(OutputFolderError, match="not made by this version of segrobust"):
        run_benchmark(model, _data(), SMALL, out_dir=tmp_path)
    assert foreign.read_text() == "mine"


def test_cli_refuses_a_foreign_partial_folder_without_deleting_it(tmp_path):
    (tmp_path / "d" / "partial").mkdir(parents=True)
    (tmp_path / "d" / "partial" / "f").write_text("x\n")
    result = _cli([*TINY_CLI, "--fast", "--num-images", "2", "--out", str(tmp_path / "d")])
    _assert_one_line_error(result, "partial")
    assert (tmp_path / "d" / "partial" / "f").read_text() == "x\n"


def test_report_files_segrobust_did_not_write_are_never_overwritten(model, tmp_path):
    (tmp_path / "report.md").write_text("my notes")
    with pytest.raises(OutputFolderError, match=r"report\.md was not written by segrobust"):
        run_benchmark(model, _data(), SMALL, out_dir=tmp_path)
    assert (tmp_path / "report.md").read_text() == "my notes"
    assert not (tmp_path / "partial").exists()  # refused before any work or write


def test_a_rerun_replaces_its_own_files_and_only_those(model, tmp_path):
    run_benchmark(model, _data(), SMALL, out_dir=tmp_path)
    extra = tmp_path / "partial" / "clean" / "none" / "keep.txt"
    extra.write_text("someone else's")
    again = run_benchmark(model, _data(), SMALL, out_dir=tmp_path)  # no resume: starts afresh in its own folder
    assert extra.read_text() == "someone else's"
    assert len(list((tmp_path / "partial").rglob("batch_*.pt"))) == 8
    assert again.row("clean").confusion_matrix
    (tmp_path / "results.json").write_text("{}")  # changed since segrobust wrote it
    with pytest.raises(OutputFolderError, match=r"results\.json"):
        run_benchmark(model, _data(), SMALL, out_dir=tmp_path)


# ----------------------------------------------------------------------------- 2. resume is exact
def test_resume_recomputes_batches_whose_data_changed(model, tmp_path):
    run_benchmark(model, _data(seed=1), SMALL, out_dir=tmp_path)
    changed = _data(seed=1)
    changed[5] = _data(seed=2)[5]  # item 5 of 8, not item 0
    resumed = run_benchmark(model, changed, SMALL, out_dir=tmp_path, resume=True)
    fresh = run_benchmark(model, changed, SMALL)
    assert _numbers(resumed) == _numbers(fresh)
    timed = [row for row in resumed.rows if row.kind in ("clean", "attack")]
    assert all(row.seconds is not None for row in timed)  # batch 2 was computed again for each condition


# ----------------------------------------------------------------------------- 3. one run per folder
def test_a_second_run_on_a_locked_folder_is_refused_and_the_lock_dies_with_its_holder(model, tmp_path):
    run_benchmark(model, _data(), SMALL, out_dir=tmp_path)  # leaves its (released) lock file behind
    with open(tmp_path / ".segrobust-benchmark.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a concurrent run would
        with pytest.raises(OutputFolderError, match="in use by another segrobust benchmark"):
            run_benchmark(model, _data(), SMALL, out_dir=tmp_path, resume=True)
    # released (as when a process dies): the stale lock file does not block
    run_benchmark(model, _data(), SMALL, out_dir=tmp_path, resume=True)


def test_cli_refuses_a_concurrent_run(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".segrobust-benchmark.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = _cli([*TINY_CLI, "--fast", "--num-images", "2", "--out", str(out)])
    _assert_one_line_error(result, "in use by another segrobust benchmark")


# ----------------------------------------------------------------------------- 4. checksums
def test_a_tampered_or_truncated_unit_is_computed_again(model, tmp_path):
    reference = run_benchmark(model, _data(), SMALL, out_dir=tmp_path)
    units = sorted((tmp_path / "partial").rglob("batch_*.pt"))
    tampered = torch.load(units[0], weights_only=True)
    tampered["confusion"] = torch.zeros_like(tampered["confusion"])  # bit rot: the checksum no longer matches
    torch.save(tampered, units[0])
    units[1].write_bytes(units[1].read_bytes()[:40])  # cut short
    resumed = run_benchmark(model, _data(), SMALL, out_dir=tmp_path, resume=True)
    assert _numbers(resumed) == _numbers(reference)


# ----------------------------------------------------------------------------- 6. NaN logits
def test_nan_weights_and_nan_logits_on_a_later_batch_are_rejected(model):
    broken = TinySegNet().eval()
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.body[-1].bias.fill_(float("nan"))
    with pytest.raises(ModelOutputError, match="NaN or infinite logits on dataset item 0"):
        run_benchmark(broken, _data(), SMALL)

    class NaNOnBright(torch.nn.Module):  # finite on item 0, NaN on the batch holding a white image
        def forward(self, images):
            logits = model(images)
            return torch.where(images.amin(dim=(1, 2, 3)).view(-1, 1, 1, 1) > 0.99, float("nan"), logits)

    data = _data()
    data[5]["image"] = torch.ones_like(data[5]["image"])
    with pytest.raises(ModelOutputError, match=r"batch 2 \(dataset items 4-5\) under Clean"):
        run_benchmark(NaNOnBright(), data, SMALL)


def test_cli_rejects_a_checkpoint_with_nan_weights(tmp_path):
    from segrobust.models import build_model, save_model

    torch.manual_seed(0)
    net = build_model(SPEC, num_classes=3)
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    save_model(net, tmp_path / "nan.pt", SPEC, 3)
    result = _cli(
        [
            "benchmark",
            "--fast",
            "--model",
            str(tmp_path / "nan.pt"),
            "--attacks",
            "naa",
            "--rain",
            "none",
            "--num-images",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    _assert_one_line_error(result, "NaN")
    assert not (tmp_path / "out" / "results.json").exists()


# ----------------------------------------------------------------------------- 9. every item checked up front
def test_every_item_is_checked_before_any_work(model):
    data = _data()
    data[6] = {"image": data[6]["image"][:, :8], "mask": data[6]["mask"][:8]}  # another size
    with pytest.raises(DataError, match=r"dataset item 6: image is \(8, 16\)"):
        run_benchmark(model, data, SMALL)
    data = _data()
    data[3] = {"image": data[3]["image"], "mask": torch.stack([data[3]["mask"]] * 3)}  # an RGB mask
    with pytest.raises(DataError, match="dataset item 3: mask must be"):
        run_benchmark(model, data, SMALL)
    data = _data()
    data[7]["mask"] = data[7]["mask"].clone()
    data[7]["mask"][0, 0] = NUM_CLASSES + 3
    with pytest.raises(DataError, match="dataset item 7: mask contains class ids"):
        run_benchmark(model, data, SMALL)


class _CountingNet(TinySegNet):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().forward(x)


def test_an_all_void_data_set_is_refused_before_any_attack(tmp_path):
    # issue 22: every pixel void ran to the end and died in matplotlib ("Axis limits cannot be NaN or Inf").
    data = _data(n=4)
    for item in data:
        item["mask"] = torch.full_like(item["mask"], 255)
    net = _CountingNet().eval()
    with pytest.raises(DataError, match=r"every pixel of the data set \(list, 4 images\) is ignore_index=255"):
        run_benchmark(net, data, SMALL.replace(out_dir=tmp_path / "out"))
    assert _CountingNet.calls == 1  # only the probe of the model's output; no attack ran
    assert not (tmp_path / "out").exists()
    data[3]["mask"][5, 5] = 1  # one labelled pixel is enough to evaluate
    assert len(run_benchmark(net, data, SMALL).rows) == 3


def test_cli_refuses_an_all_void_data_set_in_one_line(tmp_path, capsys):
    from PIL import Image

    root = _folder(tmp_path / "data")
    for mask in (root / "masks").iterdir():
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    result = _main([*TINY_CLI, "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "out")], capsys)
    _assert_one_line_error(result, "every pixel of the data set (FolderDataset, 3 images) is ignore_index=255")
    assert not (tmp_path / "out").exists()


def _folder(root: Path, n: int = 3) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 3, (16, 16), dtype=np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def _break(root: Path, case: str) -> str:
    """Break item 2 of the folder; returns the file the error must name."""
    from PIL import Image

    image, mask = root / "images" / "2.png", root / "masks" / "2.png"
    if case == "truncated png":
        image.write_bytes(image.read_bytes()[:120])
        return str(image)
    if case == "mask is a folder":
        mask.unlink()
        mask.mkdir()
        return str(mask)
    if case == "symlink loop":
        image.unlink()
        (root / "loop.png").symlink_to(image)
        image.symlink_to(root / "loop.png")
        return str(image)
    if case == "rgb mask":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mask)
        return str(mask)
    if case == "size mismatch":
        Image.fromarray(np.zeros((12, 16), np.uint8)).save(mask)
        return str(image)
    if case == "mixed sizes":
        Image.fromarray(np.zeros((24, 16, 3), np.uint8)).save(image)
        Image.fromarray(np.zeros((24, 16), np.uint8)).save(mask)
        return str(image)
    raise AssertionError(case)


def test_cli_names_a_truncated_png(tmp_path):
    root = _folder(tmp_path / "data")
    named = _break(root, "truncated png")
    result = _cli([*TINY_CLI, "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "out")])
    _assert_one_line_error(result, named)
    assert not (tmp_path / "out").exists()  # nothing written before the data are known to be good


@pytest.mark.parametrize("case", ["mask is a folder", "symlink loop", "rgb mask", "size mismatch", "mixed sizes"])
def test_cli_names_the_bad_file_of_a_data_set(case, tmp_path, capsys):
    root = _folder(tmp_path / "data")
    named = _break(root, case)
    result = _main([*TINY_CLI, "--dataset", "folder", "--data-root", str(root), "--out", str(tmp_path / "out")], capsys)
    _assert_one_line_error(result, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["out is a file", "out inside a file", "partial is a symlink"])
def test_cli_names_an_unusable_output_folder(case, tmp_path, capsys):
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    out = tmp_path / "out"
    if case == "out is a file":
        out.write_text("a file")
    elif case == "out inside a file":
        out.write_text("a file")
        out = out / "sub"
    else:
        out.mkdir()
        (out / "partial").symlink_to(target)
    result = _main([*TINY_CLI, "--fast", "--num-images", "2", "--out", str(out)], capsys)
    _assert_one_line_error(result, "--out" if case != "partial is a symlink" else "symbolic link")
    assert (target / "keep.txt").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_cli_names_an_output_folder_it_cannot_write(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = _main([*TINY_CLI, "--fast", "--num-images", "2", "--out", str(out)], capsys)
    finally:
        out.chmod(0o700)
    _assert_one_line_error(result, "not writable")


# ----------------------------------------------------------------------------- resume: the model, not only its weights
def test_resume_refuses_a_model_that_computes_something_else_with_the_same_weights(tmp_path):
    from segrobust.benchmark import ResumeMismatchError
    from segrobust.benchmark.storage import fingerprint
    from segrobust.models import build_model

    plain = build_model(SPEC, NUM_CLASSES, seed=0)
    sigmoid = build_model(f"{SPEC}:activation=sigmoid", NUM_CLASSES, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), sigmoid.state_dict().values()))
    assert fingerprint(plain) != fingerprint(sigmoid)
    run_benchmark(plain, _data(n=4), SMALL.replace(out_dir=tmp_path))
    with pytest.raises(ResumeMismatchError, match="model"):
        run_benchmark(sigmoid, _data(n=4), SMALL.replace(out_dir=tmp_path, resume=True))


def test_the_fingerprint_covers_output_key_normalisation_and_the_defence(model):
    from segrobust.benchmark.storage import fingerprint
    from segrobust.defenses import PEARL, PReNet
    from segrobust.models import SegmentationModel

    variants = [
        model,
        SegmentationModel(model),
        SegmentationModel(model, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        SegmentationModel(model, upsample="nearest"),
        PEARL(model, PReNet(stages=1)),
        PEARL(model, PReNet(stages=2)),  # the same weights, one more recurrent stage
    ]
    assert len({fingerprint(v) for v in variants}) == len(variants)
    assert fingerprint(SegmentationModel(model)) == fingerprint(SegmentationModel(model))


# ----------------------------------------------------------------------------- gradient masking on stdout
class _Quantised(torch.nn.Module):
    """Rounds its input to 4 levels: the input gradient is zero everywhere (a masking defence)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(images * 3) / 3)


def test_gradient_masking_flags_reach_the_headline(model, tmp_path, capsys):
    config = BenchmarkConfig(
        attacks="reliable", eps_list=["8/255"], rain="none", reliable_steps=2, batch_size=4, progress=False
    )
    results = run_benchmark(_Quantised(model), _data(n=4), config.replace(num_examples=0))
    assert any(entry["zero_gradient"] for entry in results.checks["apgd_flags"])
    headline = results.headline()
    assert "Gradient masking at ε=8/255" in headline and "zero gradient" in headline
    assert results.masking_warnings() == [line for line in headline.splitlines() if "Gradient masking" in line]


def test_the_cli_prints_gradient_masking_flags_on_stdout(tmp_path, monkeypatch, capsys):
    from segrobust.cli import main

    (tmp_path / "segrobust_test_quantised.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Quantised(nn.Module):\n"
        "    def __init__(self, num_classes):\n"
        "        super().__init__()\n        self.head = nn.Conv2d(3, num_classes, 1)\n"
        "    def forward(self, x):\n        return self.head(torch.round(x * 3) / 3)\n\n"
        "def build(num_classes=11):\n    return Quantised(num_classes)\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["benchmark", "--fast", "--model", "segrobust_test_quantised:build", "--attacks", "reliable"]
    args += [
        "--reliable-steps",
        "2",
        "--rain",
        "none",
        "--examples",
        "0",
        "--no-progress",
        "--out",
        str(tmp_path / "o"),
    ]
    try:
        assert main(args) == 0
    finally:
        sys.modules.pop("segrobust_test_quantised", None)
    out = capsys.readouterr().out
    assert "Gradient masking at ε=8/255" in out and "zero gradient" in out
