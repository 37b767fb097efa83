"""Tests of the training recipes' shared protocol: RECIPES, typed configs, unknown options, one NAT."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers next to this file, whatever the import mode
from _ddp_worker import TinySegmentation, tiny_model

from segrobust.cli import main
from segrobust.defenses import RECIPES as DEFENSE_RECIPES
from segrobust.rain import PRESET_REFERENCE_HEIGHT, scale_rain_ranges
from segrobust.training import (
    RECIPES,
    NATConfig,
    PGDATConfig,
    StandardConfig,
    TrainConfig,
    TrainResult,
    get_recipe,
)
from segrobust.training.recipes.base import rain_transform

ALL_RECIPES = {**RECIPES, **DEFENSE_RECIPES}

REPO = Path(__file__).resolve().parents[1]


def test_import_training_does_not_import_attacks():
    code = "import segrobust.training, sys; assert 'segrobust.attacks' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_recipe_has_a_complete_default_config():
    assert sorted(RECIPES) == ["eroseg_at", "nat", "pgd_at", "standard"]
    assert sorted(DEFENSE_RECIPES) == ["depth", "pearl"]
    for name, recipe in ALL_RECIPES.items():
        config = recipe.config()
        assert isinstance(config, TrainConfig) and type(config) is recipe.config_type, name
    assert get_recipe("PGD-AT") is RECIPES["pgd_at"]
    with pytest.raises(KeyError, match="unknown recipe 'magic'"):
        get_recipe("magic")


@pytest.mark.parametrize(
    ("name", "option"),
    [("standard", "eps"), ("pearl", "momentum"), ("depth", "rain"), ("nat", "derainer"), ("pgd_at", "lr_rate")],
)
def test_an_unsupported_option_is_an_error_naming_option_and_recipe(name, option):
    with pytest.raises(TypeError, match=f"recipe '{name}' has no option '{option}'"):
        ALL_RECIPES[name].config(**{option: 1})


def test_config_values_are_checked_and_the_config_type_must_match():
    with pytest.raises(ValueError, match="eps must be a number in"):
        PGDATConfig(eps=0.0)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        StandardConfig(epochs=0)
    with pytest.raises(ValueError, match="snow"):
        NATConfig(rain="snow")
    with pytest.raises(TypeError, match="recipe 'nat' takes a NATConfig, got PGDATConfig"):
        RECIPES["nat"].config(PGDATConfig())


def test_recipe_call_returns_a_train_result_and_trains_the_model_in_place():
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    config = RECIPES["standard"].config(epochs=2, batch_size=4, lr=0.05, progress=False)
    result = RECIPES["standard"](model, TinySegmentation(8), config)
    assert isinstance(result, TrainResult) and result.model is model and result.artifacts == {}
    assert len(result.history) == 2 and result.history[0]["lr"] > result.history[1]["lr"]  # poly decay, stepped
    assert result.history[-1]["global_step"] == 4  # a map-style dataset: shuffled batches of batch_size, 2 per epoch
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_trainer_kwargs_may_not_repeat_a_config_field():
    with pytest.raises(TypeError, match="trainer_kwargs sets 'seed'"):
        config = RECIPES["standard"].config(trainer_kwargs={"seed": 3}, progress=False)
        RECIPES["standard"](tiny_model(), TinySegmentation(4), config)


def test_a_recipe_is_called_with_its_config_only():
    with pytest.raises(TypeError):
        RECIPES["pgd_at"](tiny_model(), TinySegmentation(4), eps=4 / 255)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="recipe 'nat' takes a NATConfig, got PGDATConfig"):
        RECIPES["nat"](tiny_model(), TinySegmentation(4), PGDATConfig())


def test_nat_scales_rain_presets_to_the_image_height_unless_told_not_to():
    data = TinySegmentation(2, hw=48)
    scaled = rain_transform("heavy", PRESET_REFERENCE_HEIGHT, data)
    assert scaled.ranges["length"] == scale_rain_ranges("heavy", 48)["length"]
    unscaled = rain_transform("heavy", None, data)
    assert unscaled.ranges["length"][1] > scaled.ranges["length"][1]
    assert NATConfig().rain_reference_height == PRESET_REFERENCE_HEIGHT == 360
    explicit = rain_transform(
        {"length": (5.0, 9.0)}, PRESET_REFERENCE_HEIGHT, data
    )  # ranges for these images: as given
    assert tuple(explicit.ranges["length"]) == (5.0, 9.0)


def _cli_error(args, tmp_path, capsys):
    code = main([*args, "--out", str(tmp_path / "out"), "--no-progress"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recipe", "standard", "--eps", "4/255"], "--eps is not an option of recipe 'standard'"),
        (["--recipe", "pearl", "--optimizer", "adamw"], "--optimizer is not an option of recipe 'pearl'"),
        (["--recipe", "depth", "--rain-preset", "heavy"], "--rain-preset is not an option of recipe 'depth'"),
        (["--recipe", "magic"], "unknown recipe 'magic'"),
    ],
)
def test_cli_rejects_options_the_recipe_does_not_take(args, message, tmp_path, capsys):
    line = _cli_error(["train", *args], tmp_path, capsys)
    assert message in line and "error" in line


def test_cli_checks_recipe_values_with_one_line(tmp_path, capsys):
    line = _cli_error(["train", "--fast", "--recipe", "nat", "--rain-preset", "snow"], tmp_path, capsys)
    assert "--recipe nat" in line and "snow" in line


def test_cli_train_is_a_thin_translator():
    import inspect

    from segrobust.cli import train

    assert len(inspect.getsource(train.run).splitlines()) <= 100


def test_recipe_configs_are_dataclasses_with_documented_fields():
    for recipe in ALL_RECIPES.values():
        doc = recipe.config_type.__doc__ or ""
        own = [
            f.name
            for f in dataclasses.fields(recipe.config_type)
            if f.name not in {g.name for g in dataclasses.fields(TrainConfig)}
        ]
        missing = [
            name
            for name in own
            if name not in doc
            and name not in (PGDATConfig.__doc__ or "")
            and name not in (StandardConfig.__doc__ or "")
        ]
        assert not missing, f"{recipe.config_type.__name__} does not document {missing}"


def test_tensorboard_logger_writes_scalars_or_says_what_is_missing(tmp_path, monkeypatch):
    from segrobust.training import TensorBoardLogger

    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install tensorboard"):
            TensorBoardLogger(tmp_path / "tb")
        return
    logger = TensorBoardLogger(tmp_path / "tb", log_every=1)
    config = RECIPES["standard"].config(epochs=1, batch_size=2, progress=False, trainer_kwargs={"callbacks": [logger]})
    RECIPES["standard"](tiny_model(), TinySegmentation(4), config)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_tensorboard_logger_without_tensorboard_raises_a_clear_import_error(tmp_path, monkeypatch):
    from segrobust.training import TensorBoardLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="TensorBoardLogger needs the tensorboard package"):
        TensorBoardLogger(tmp_path / "tb")
