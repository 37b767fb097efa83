"""``segrobust benchmark`` flags for library features: corruptions, output key, hf models, sliding windows, TTA,
precision (amp, channels_last, compile), and one summary format whatever is installed."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_hf_models import TINY_SEGFORMER, needs_transformers  # the 7 k-parameter SegFormer config
from torch import nn

from segrobust.benchmark import BenchmarkResults
from segrobust.cli import build_parser, main
from segrobust.cli.options import resolve
from segrobust.corruptions import CORRUPTIONS, IMAGENET_C, RAIN_SEVERITY_PRESETS

REPO = Path(__file__).resolve().parents[1]
TINY = "_flag_models:tiny"
# 2 images of 32x32 in one batch, NAA only: each run takes about a second.
QUICK = ["--fast", "--no-progress", "--num-images", "2", "--size", "32x32", "--attacks", "naa", "--rain", "none"]
QUICK += ["--examples", "0", "--threads", "1"]


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("segrobust: ")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _bench(tmp_path: Path, name: str, *flags: str, model: str = TINY) -> int:
    return main(["benchmark", "--model", model, *QUICK, *flags, "--out", str(tmp_path / name)])


def _rows(out: Path) -> list[tuple]:
    rows = json.loads((out / "results.json").read_text())["rows"]
    return [(r["key"], r["severity"], r["eps"], r["confusion_matrix"]) for r in rows]


def _options(argv: list[str]):
    parser = build_parser()
    return resolve(parser, parser.parse_args(argv)).options


# ----------------------------------------------------------------------------- corruptions
def test_fast_corruptions_all_prints_every_corruption_row_and_the_card(tmp_path, capsys):
    """Issue 26's "done when": the corruption rows and the robustness card of ``--fast --corruptions all``."""
    out = tmp_path / "out"
    argv = ["benchmark", "--fast", "--corruptions", "all", "--num-images", "2", "--size", "32x32", "--no-progress"]
    assert main([*argv, "--threads", "1", "--out", str(out)]) == 0
    result = capsys.readouterr()
    lines = result.out.splitlines()
    for name in IMAGENET_C:
        for severity in range(1, 6):
            assert any(line.startswith(f"{CORRUPTIONS[name].display_name} (severity {severity})") for line in lines)
    assert all(any(line.startswith(f"Rain ({preset})") for line in lines) for preset in RAIN_SEVERITY_PRESETS)
    card = lines.index("Robustness card (robustness_card.png):")
    assert [line.split("  ")[1].strip() for line in lines[card + 1 : card + 5]] == [
        "Clean",
        "Corruptions (mean)",
        "Corruptions (worst family)",
        "Rain",
    ]
    written = lines[-1].split("Wrote ", 1)[1]
    for name in ("robustness_card.png", "corruptions.png", "corruption_examples.png", "results.json"):
        assert name in written and (out / name).stat().st_size > 1000
    results = BenchmarkResults.load(out / "results.json")
    summary = results.corruption_summary()
    assert summary["severities"] == [1, 2, 3, 4, 5] and len(summary["corruptions"]) == len(IMAGENET_C)
    assert 0 <= summary["mean_miou"] <= 1 and summary["relative_robustness"] > 0
    assert results.config["cli"]["corruptions"] == list(CORRUPTIONS)


def test_list_names_every_corruption_with_family_and_severities(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    section = out.split("corruptions (segrobust benchmark --corruptions, --severities):\n", 1)[1].split("\n\n")[0]
    lines = {line.split()[0]: line for line in section.splitlines()}
    assert list(lines) == list(CORRUPTIONS)
    assert "Gaussian noise (noise), severities 1-5" in lines["gaussian_noise"]
    assert "severities 1-3" in lines["rain"] and "1=light, 2=medium, 3=heavy" in lines["rain"]


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--corruptions", "haze"], ["--corruptions", "unknown corruption 'haze'", "weather"]),
        (["--corruptions", "fog", "--severities", "0"], ["--severities", "1..5"]),
        (["--corruptions", "fog", "--severities", "2-x"], ["--severities", "1..5"]),
        (["--severities", "1-3"], ["--severities", "--corruptions"]),
        (["--corruptions", "rain", "--severities", "4,5"], ["severities=[4, 5]", "rain has 1-3"]),
        (["--no-tta-flip"], ["--no-tta-flip", "--tta"]),
        (["--tta", "1,0"], ["--tta", "(0, 8]"]),
        (["--slide", "32x32:48x48"], ["--slide", "must not exceed crop"]),
        (["--slide", "32x32"], ["--slide", "CROPxCROP:STRIDExSTRIDE"]),
        (["--amp", "fp32"], ["--amp", "bf16", "fp16"]),
    ],
)
def test_bad_flag_values_are_one_line_naming_the_flag(tmp_path, capsys, flags, needles):
    try:
        code = _bench(tmp_path, "bad", *flags)
    except SystemExit as stop:  # argparse: a value its type refuses
        code = stop.code
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("segrobust benchmark: error:") and all(needle in line for needle in needles), line
    assert not (tmp_path / "bad").exists()


def test_fast_sizes_suit_models_that_need_multiples_of_32_or_vit_patches():
    for command in ("benchmark", "train"):
        size = _options([command, "--fast"]).size
        assert all(side % 32 == 0 for side in size), (command, size)  # encoders of stride 32, patches of 8, 16, 32


def test_corruption_slide_and_tta_flags_are_recorded_and_replayed(tmp_path, capsys):
    flags = ["--corruptions", "fog", "--severities", "1-2", "--slide", "24x24:16x16", "--tta", "1,0.5"]
    assert _bench(tmp_path, "a", *flags, "--no-tta-flip") == 0
    capsys.readouterr()
    first = tmp_path / "a"
    cli = json.loads((first / "results.json").read_text())["config"]["cli"]
    assert (cli["corruptions"], cli["severities"]) == (["fog"], [1, 2])
    assert (cli["slide"], cli["tta"], cli["no_tta_flip"]) == ("24x24:16x16", [1, 0.5], True)
    rows = _rows(first)
    assert [(key, severity) for key, severity, *_ in rows] == [
        ("clean", None), ("corruption:fog", 1), ("corruption:fog", 2), ("naa", None), ("worst", None)
    ]  # fmt: skip
    replay = ["benchmark", "--config", str(first / "results.json"), "--model", TINY, "--out", str(tmp_path / "b")]
    assert main(replay) == 0
    assert _rows(tmp_path / "b") == rows  # the replay evaluates the same windows, scales and corruptions


EVALUATED = ["--slide", "24x24:16x16", "--tta", "1,0.5", "--no-tta-flip"]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluated")
    assert _bench(root, "run", *EVALUATED) == 0
    return root / "run"


@pytest.mark.parametrize(
    "flags",
    [
        ["--slide", "24x24:8x8", "--tta", "1,0.5", "--no-tta-flip"],
        ["--slide", "24x24:16x16", "--tta", "1,0.75", "--no-tta-flip"],
        ["--slide", "24x24:16x16", "--tta", "1,0.5"],
        [*EVALUATED, "--amp", "bf16"],
    ],
    ids=["stride", "scales", "flip", "amp"],
)
def test_resume_with_another_window_scale_flip_or_precision_is_refused(evaluated_run, tmp_path, capsys, flags):
    shutil.copytree(evaluated_run, tmp_path / "run")
    capsys.readouterr()
    assert _bench(tmp_path, "run", *flags, "--resume") == 2
    assert "cannot resume" in _error_line(capsys)
    assert _bench(tmp_path, "run", *EVALUATED, "--resume") == 0  # the same flags resume


# ----------------------------------------------------------------------------- models
def test_output_key_picks_the_logits_and_a_key_with_other_channels_is_refused(tmp_path, capsys):
    assert _bench(tmp_path, "seg", "--output-key", "seg", model="_flag_models:two_heads") == 0
    assert json.loads((tmp_path / "seg" / "results.json").read_text())["config"]["num_classes"] == 11
    capsys.readouterr()
    assert (
        _bench(tmp_path, "edges", "--output-key", "edges", "--num-classes", "11", model="_flag_models:two_heads") == 2
    )
    line = _error_line(capsys)
    assert "edges" in line and "11" in line


@pytest.mark.parametrize(
    "flags, needle", [(["--output-key", "logits"], "'logits'"), (["--num-classes", "5"], "num_classes=5")]
)
def test_model_flags_on_the_built_in_model_are_checked(tmp_path, capsys, flags, needle):
    assert main(["benchmark", *QUICK, *flags, "--out", str(tmp_path / "out")]) == 2
    assert needle in _error_line(capsys)


def test_slide_sits_inside_the_defence_and_tta_outside(tmp_path):
    from segrobust.cli.loading import load_benchmark_model
    from segrobust.defenses import PEARL
    from segrobust.defenses.derain import ResidualUNet
    from segrobust.defenses.pearl_training import save_pearl_defense
    from segrobust.models import MultiScaleFlip, SlidingWindow
    from segrobust.models.inference import sliding_window_logits

    torch.manual_seed(0)
    path = save_pearl_defense(ResidualUNet(width=8), tmp_path / "pearl.pt", name="unet", width=8)
    argv = ["benchmark", "--model", TINY, "--defense", f"pearl:{path}", "--slide", "16x16:8x8", "--tta", "1"]
    model, name = load_benchmark_model(_options(argv), torch.device("cpu"))
    assert isinstance(model, MultiScaleFlip) and model.flip and isinstance(model.model, PEARL)
    defended = model.model
    assert isinstance(defended.segmenter, SlidingWindow) and defended.segmenter.crop == (16, 16)
    assert "sliding window 16x16:8x8" in name and "pearl defence" in name and "multi-scale 1 + flip" in name
    images = torch.rand(1, 3, 24, 40)
    with torch.no_grad():  # the derainer sees the whole image, the segmenter its windows; TTA around both
        derained = defended.derainer(images)
        windows = sliding_window_logits(defended.segmenter.model, derained, 16, 8)
        assert torch.allclose(defended(images), windows, atol=1e-6)
        assert torch.allclose(model(images), _tta_reference(defended, images), atol=1e-5)


def _tta_reference(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """log(mean of the softmax of the image and of its mirror image, mirrored back)."""
    plain, mirrored = model(images).softmax(1), model(images.flip(-1)).flip(-1).softmax(1)
    return ((plain + mirrored) / 2).log()


@needs_transformers
def test_hf_class_and_hf_folder_run_from_the_command_line_and_from_a_config_file(tmp_path, capsys):
    from segrobust.models import load_model

    args = json.dumps({"config": TINY_SEGFORMER})
    source = "hf:SegformerForSemanticSegmentation"
    assert _bench(tmp_path, "class", "--model-args", args, "--num-classes", "11", model=source) == 0
    rows = _rows(tmp_path / "class")
    folder = tmp_path / "segformer"
    load_model(source, num_classes=11, model_args={"config": TINY_SEGFORMER}).model.save_pretrained(folder)
    config = tmp_path / "hf.yaml"
    # a config file may name an hf: model without --trust-config: it imports no code of its own
    config.write_text(f"model: hf:{folder}\n" + "".join(f"{k}: {v}\n" for k, v in _quick_settings().items()))
    assert main(["benchmark", "--config", str(config), "--out", str(tmp_path / "folder")]) == 0
    assert _rows(tmp_path / "folder") == rows  # the same weights, read back from the folder
    capsys.readouterr()


@pytest.mark.parametrize("model", ["hf:SegformerForSemanticSegmentation", "hf:my_segformer", "hf:models/segformer"])
def test_a_config_file_may_name_hf_models_without_trust_config(model):
    from segrobust.cli.config_files import check_trust

    check_trust({"model": model}, {}, "run.yaml")  # builds transformers' own class or reads a folder: no code
    with pytest.raises(Exception, match="trust-config"):
        check_trust({"model": "my_models:build"}, {}, "run.yaml")


def _quick_settings() -> dict[str, str]:
    return {"fast": "true", "num_images": 2, "size": "32x32", "attacks": "naa", "rain": "none", "examples": 0}


# ----------------------------------------------------------------------------- precision
def _sane(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    for row in data["rows"]:
        assert 0 <= row["miou"] <= 1 and 0 <= row["pixel_accuracy"] <= 1
        assert sum(map(sum, row["confusion_matrix"])) == 2 * 32 * 32
    return data


def test_amp_bf16_fast_run_records_the_dtype_and_gives_sane_numbers(tmp_path):
    assert _bench(tmp_path, "bf16", "--amp", "bf16", "--output-key", "seg", model="_flag_models:two_heads") == 0
    data = _sane(tmp_path / "bf16")
    assert data["config"]["amp"] == "bfloat16" and data["config"]["cli"]["amp"] == "bf16"
    assert [row["key"] for row in data["rows"]] == ["clean", "naa", "worst"]


def test_channels_last_gives_the_numbers_of_the_plain_model(tmp_path):
    assert _bench(tmp_path, "plain") == 0 and _bench(tmp_path, "nhwc", "--channels-last") == 0
    plain, nhwc = _sane(tmp_path / "plain"), _sane(tmp_path / "nhwc")
    assert nhwc["config"]["cli"]["channels_last"] is True
    assert nhwc["config"]["model_fingerprint"] != plain["config"]["model_fingerprint"]
    # clean: the same function, up to the rounding of other convolution kernels (a near-tie may flip a pixel)
    moved = torch.tensor(nhwc["rows"][0]["confusion_matrix"]) - torch.tensor(plain["rows"][0]["confusion_matrix"])
    assert moved.abs().sum() <= 2 * 0.01 * 2 * 32 * 32


def test_compile_runs_the_compiled_model_and_a_compiler_failure_is_one_line(tmp_path, capsys, monkeypatch):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend="eager"))  # dynamo, no C++ toolchain
    assert _bench(tmp_path, "compiled", "--compile") == 0
    assert "compiled in" in capsys.readouterr().err
    _sane(tmp_path / "compiled")

    def no_toolchain(graph, inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore details")

    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend=no_toolchain))
    assert _bench(tmp_path, "failed", "--compile") == 2
    line = _error_line(capsys)
    assert line.startswith("segrobust benchmark: error: --compile:") and "No working C++ compiler" in line
    assert "without --compile" in line


# ----------------------------------------------------------------------------- one summary format
RICH_PROBE = textwrap.dedent(
    """
    import importlib.abc, json, sys, types

    used = []

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "rich":
                used.append(name)
            return None

    class FakeRich(types.ModuleType):
        def __getattr__(self, name):
            if not name.startswith("__"):  # module scans (inspect.getmodule) read __file__: no use of rich
                used.append("rich." + name)
            raise AttributeError(name)

    sys.meta_path.insert(0, Finder())
    sys.modules["rich"] = FakeRich("rich")  # importable: a switch to rich would import or use it
    from segrobust.benchmark import BenchmarkResults
    from segrobust.cli import benchmark, main

    benchmark._print_summary(BenchmarkResults.load(sys.argv[1]), "table")
    print(json.dumps(used))
    """
)


def _results_with_every_kind_of_row(path: Path) -> Path:
    from segrobust.benchmark import ConditionResult

    def row(key, kind, miou, eps=None, severity=None):
        return ConditionResult(key, key.title(), kind, eps, miou, 0.9, 0.8, [miou, miou], 8, [[4, 0], [0, 4]], [0.9],
                               severity=severity)  # fmt: skip

    rows = [row("clean", "clean", 0.6), row("corruption:fog", "corruption", 0.4, severity=1)]
    rows += [row("rain:light", "rain", 0.5), row("naa", "attack", 0.3, 8 / 255), row("worst", "worst", 0.3, 8 / 255)]
    return BenchmarkResults(rows, ["road", "car"], 1, config={"steps": 2}).save_json(path / "results.json")


def test_the_summary_table_is_the_same_with_and_without_rich(tmp_path, capsys, monkeypatch):
    from segrobust.cli.benchmark import _print_summary

    saved = _results_with_every_kind_of_row(tmp_path)
    monkeypatch.setitem(sys.modules, "rich", None)  # not importable here
    _print_summary(BenchmarkResults.load(saved), "table")
    without = capsys.readouterr().out.splitlines()
    command = [sys.executable, "-c", RICH_PROBE, str(saved)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    *with_rich, used = result.stdout.splitlines()
    assert json.loads(used) == [], f"the summary consulted rich: {used}"
    assert with_rich == without
    assert without[0].split()[:3] == ["Condition", "ε", "mIoU"] and "Robustness card" in "\n".join(without)
