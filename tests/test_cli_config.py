"""``--config FILE`` (YAML/JSON, flags win, results.json replays), ``--format``, ``segrobust list``, ``train --help``."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from segrobust.benchmark import BenchmarkResults
from segrobust.benchmark.defaults import FAST_SIZE
from segrobust.cli import build_parser, main
from segrobust.cli.options import resolve

SPEC = "unet:resnet18:encoder_depth=2:decoder_channels=8,8"


def _parse(argv: list[str]):
    """The options of ``argv`` after the one parse: defaults < presets < config file < flags."""
    parser = build_parser()
    return resolve(parser, parser.parse_args(argv)).options


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_yaml_file_sets_defaults_and_flags_win(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "attacks: [naa, segpgd]\nrain: none\neps: [4/255, 0.03]\nsize: 48x64\n"
        "num-images: 6\nno_random_start: true\nattack_args: {naa: {}}\nout: runs/a\n",
        encoding="utf-8",
    )
    args = _parse(["benchmark", "--config", str(config), "--num-images", "3"])
    assert args.out == "runs/a" and args.format == "table"
    assert (args.attacks, args.rain, args.eps, args.size) == ("naa,segpgd", "none", [4 / 255, 0.03], (48, 64))
    assert args.num_images == 3 and args.no_random_start is True and args.attack_args == {"naa": {}}
    assert args.steps == 5 and args.seed == 0  # untouched options: the built-in run's and plain defaults


@pytest.mark.parametrize(
    "text, where",
    [
        ('{"epochs": 2, "bogus": 1}', "unknown option 'bogus'"),
        ('{"config": "other.json"}', "unknown option 'config'"),
        ('{"epochs": 0}', "epochs (--epochs): expected a positive integer"),
        ('{"dataset": "mnist"}', "dataset: expected one of"),
        ('{"no_progress": "yes"}', "no_progress: expected true or false"),
        ("[1, 2]", "expected a mapping"),
        ('{"epochs": 2,', "not valid JSON"),
    ],
)
def test_bad_config_file_is_one_line_naming_file_and_key(tmp_path, capsys, text, where):
    config = tmp_path / "train.json"
    config.write_text(text, encoding="utf-8")
    assert main(["train", "--config", str(config)]) == 2
    line = _error_line(capsys)
    assert line.startswith("segrobust train: error: --config ") and str(config) in line and where in line


def test_options_of_the_other_command_are_unknown(tmp_path, capsys):
    config = tmp_path / "bench.yaml"
    config.write_text("recipe: pgd_at\n", encoding="utf-8")
    assert main(["benchmark", "--config", str(config)]) == 2
    assert "unknown option 'recipe' for 'segrobust benchmark'" in _error_line(capsys)


def _comparable(path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    for row in data["rows"]:
        row.pop("seconds"), row.pop("images_per_second")
    config = {k: v for k, v in data["config"].items() if k != "command"}
    return {"rows": data["rows"], "config": config, "classes": data["class_names"], "n": data["num_images"]}


def test_results_json_replays_the_run_exactly(tmp_path, capsys):
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    assert (
        main(
            [
                "benchmark",
                "--fast",
                "--model",
                SPEC,
                "--attacks",
                "naa,ama",
                "--rain",
                "light",
                "--alpha",
                "1/255",
                "--out",
                str(out1),
                "--no-progress",
                "--examples",
                "0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["benchmark", "--config", str(out1 / "results.json"), "--out", str(out2), "--format", "csv"]) == 0
    stdout = capsys.readouterr().out
    first, second = _comparable(out1 / "results.json"), _comparable(out2 / "results.json")
    assert first == second  # every number except timing, and every recorded setting
    cli = first["config"]["cli"]
    assert cli["model"] == SPEC and cli["eps"] == [8 / 255] and cli["steps"] == 2 and cli["alpha"] == 1 / 255
    assert cli["size"] == list(FAST_SIZE) and cli["num_images"] == 4 and cli["attacks"] == ["naa", "ama"]
    records = BenchmarkResults.load(out2 / "results.json").to_records()
    parsed = list(csv.DictReader(io.StringIO(stdout)))  # --format csv: stdout is the CSV only
    assert [row["condition"] for row in parsed] == [r["condition"] for r in records]
    assert [float(row["miou"]) for row in parsed] == [r["miou"] for r in records]


def test_results_json_from_python_cannot_be_replayed(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps({"format": "segrobust.benchmark/1", "config": {"steps": 3}, "rows": []}), encoding="utf-8"
    )
    assert main(["benchmark", "--config", str(path)]) == 2
    assert "not written by 'segrobust benchmark'" in _error_line(capsys)


def test_train_records_its_config_and_config_json_repeats_it(tmp_path, capsys):
    out = tmp_path / "train"
    assert (
        main(
            [
                "train",
                "--fast",
                "--recipe",
                "standard",
                "--model",
                SPEC,
                "--lr",
                "0.02",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert saved["recipe"] == "standard" and saved["lr"] == 0.02 and saved["epochs"] == 1
    assert saved["num_images"] == 8 and saved["size"] == list(FAST_SIZE) and saved["batch_size"] == 4
    checkpoint = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert checkpoint["metadata"]["config"] == saved
    args = _parse(["train", "--config", str(out / "config.json"), "--out", str(tmp_path / "again")])
    assert (args.recipe, args.lr, args.epochs, args.size, args.num_images) == ("standard", 0.02, 1, FAST_SIZE, 8)
    assert not args.fast


def test_list_names_every_registered_entry(capsys):
    from segrobust.attacks.apgd import RADIUS_SCHEDULES
    from segrobust.benchmark.registry import ATTACKS, DEFENSES
    from segrobust.datasets.factory import DATASETS
    from segrobust.losses import PIXEL_LOSSES
    from segrobust.rain import RAIN_PRESETS
    from segrobust.training import RECIPES

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = {line.split()[0] for line in lines if line.startswith("  ") and line.strip()}
    expected = [*ATTACKS, *RAIN_PRESETS, *RECIPES, *DATASETS, *DEFENSES, *PIXEL_LOSSES, *RADIUS_SCHEDULES]
    assert set(expected) <= names
    assert any(line.strip().startswith("naa") and "NAA" in line for line in lines)
    assert not any("][" in line or "``" in line for line in lines)  # docstring markup is dropped


def test_list_shows_the_reliable_presets_with_their_cost(capsys):
    from segrobust.attacks.ensemble import RELIABLE_PRESETS

    assert main(["list"]) == 0
    text = capsys.readouterr().out
    heading = text.index("reliable presets")
    section = text[heading:].split("\n\n")[0]
    for name, preset in RELIABLE_PRESETS.items():
        line = next(line for line in section.splitlines() if line.strip().startswith(name + " "))
        assert f"{preset.iterations} iterations per image" in line, line


def test_reliable_preset_flag_reaches_the_config_and_unknown_names_exit_2(capsys):
    args = _parse(["benchmark", "--reliable-preset", "sea"])
    assert args.reliable_preset == "sea"
    with pytest.raises(SystemExit) as exit_info:
        _parse(["benchmark", "--reliable-preset", "strongest"])
    assert exit_info.value.code == 2 and "strongest" in capsys.readouterr().err


def test_train_help_lists_every_recipe_with_its_description():
    from segrobust.training import RECIPES

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    for name, recipe in RECIPES.items():
        assert any(line.split()[:1] == [name] and recipe.description in line for line in text.splitlines())


def test_the_built_in_run_is_small_and_a_given_model_gets_the_default_preset():
    """The built-in run stays under 2 minutes on 2 cores (docs/benchmark.md, Throughput); a user's model is
    evaluated with the `default` preset at its own iterations."""
    builtin = _parse(["benchmark"])
    assert (builtin.num_images, builtin.steps, builtin.reliable_steps, builtin.reliable_preset) == (16, 5, 5, "quick")
    given = _parse(["benchmark", "--model", "unet:resnet18"])
    assert (given.reliable_preset, given.reliable_steps, given.steps) == ("default", None, 10)
