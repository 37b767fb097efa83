"""The benchmark's structure: one checked BenchmarkConfig, run_benchmark's stages, plain registries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from conftest import TinySegNet, make_blobs

import segrobust.benchmark as benchmark
from segrobust.attacks.registry import AttackEntry
from segrobust.benchmark import ATTACKS, DEFENSES, BenchmarkConfig, run_benchmark
from segrobust.benchmark.registry import resolve_attacks, resolve_rain_presets

PACKAGE = Path(benchmark.__file__).parent


def _data(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, masks = make_blobs(n, 16, seed=3)
    return list(zip(images, masks))


def test_config_normalises_and_checks_every_setting_in_one_place():
    config = BenchmarkConfig(attacks="SegPGD, naa", eps_list=["8/255", 4 / 255, "4/255"], rain="heavy,light")
    assert config.attacks == ["naa", "segpgd"]  # report order, no duplicates
    assert config.eps_list == [4 / 255, 8 / 255]
    assert config.rain == ["light", "heavy"]
    assert BenchmarkConfig(eps_list="8/255").eps_list == [8 / 255]
    assert config.replace(steps=3).steps == 3 and config.steps == 10
    bad = [
        ({"attacks": "pgd"}, "unknown attack 'pgd'"),
        ({"eps_list": []}, "eps_list is empty"),
        ({"eps_list": ["8"]}, "8/255"),
        ({"steps": True}, "steps must be an int"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"num_workers": -1}, "num_workers must be"),
        ({"alpha": 2.0}, "eps must be in"),
        ({"num_classes": 0}, "num_classes must be"),
        ({"rain": "snow"}, "unknown rain preset"),
        ({"attacks": "naa", "attack_kwargs": {"ama": {}}}, "not among the evaluated attacks"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            BenchmarkConfig(**kwargs)


def test_run_benchmark_takes_a_config_and_keyword_overrides_alike():
    torch.manual_seed(0)
    model = TinySegNet().eval()
    config = BenchmarkConfig(attacks="naa", eps_list=["4/255"], rain="none", steps=1, progress=False, num_examples=0)
    with_config = run_benchmark(model, _data(), config)
    with_keywords = run_benchmark(
        model, _data(), attacks="naa", eps_list=["4/255"], rain="none", steps=1, progress=False, num_examples=0
    )
    assert [r.confusion_matrix for r in with_config.rows] == [r.confusion_matrix for r in with_keywords.rows]
    overridden = run_benchmark(model, _data(), config, attacks="none")
    assert [row.kind for row in overridden.rows] == ["clean"]
    with pytest.raises(TypeError, match="BenchmarkConfig"):
        run_benchmark(model, _data(), {"steps": 1})


def test_registries_are_plain_dicts_of_classes_and_callables():
    from segrobust.attacks import NAA, RainAttack

    assert type(ATTACKS) is dict and type(DEFENSES) is dict
    assert ATTACKS["naa"].attack_class is NAA and ATTACKS["rain_attack"].attack_class is RainAttack
    assert all(callable(entry.load) for entry in DEFENSES.values())
    defaults = [key for key, entry in ATTACKS.items() if entry.default]
    assert resolve_attacks("all") == defaults == resolve_attacks(None) and defaults[0] == "reliable"
    assert resolve_attacks("short") == defaults[1:] and resolve_attacks("short,reliable") == defaults
    assert resolve_attacks("none") == [] and resolve_rain_presets("none") == []
    with pytest.raises(TypeError, match="attack_class"):
        AttackEntry("segrobust.attacks.NAA", "Broken")  # module paths are gone
    for gone in ("evaluate", "plan_evaluation", "run_plan", "UnavailableError", "available_attacks"):
        assert not hasattr(benchmark, gone), gone


def _functions(tree: ast.AST):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_in_the_benchmark_package_is_longer_than_100_lines():
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in _functions(ast.parse(path.read_text())):
            if node.end_lineno - node.lineno + 1 > 100:
                long.append(f"{path.name}:{node.name}")
    assert long == []


def test_the_benchmark_imports_no_private_name_of_another_module():
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segrobust"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    # the depth defence loader still uses two helpers of segrobust.models (owned there)
    assert [f for f in found if "segrobust.models." not in f] == []


def test_distributed_helpers_live_in_segrobust_distributed():
    from segrobust import distributed

    for path in sorted(PACKAGE.glob("*.py")):
        imported = [
            alias.name if isinstance(node, ast.Import) else node.module
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (node.names if isinstance(node, ast.Import) else [None])
        ]
        assert "torch.distributed" not in imported, path.name
    assert distributed.reduce_over_ranks(torch.tensor([1, 2])).tolist() == [1, 2]
    with pytest.raises(ValueError, match="op must be"):
        distributed.reduce_over_ranks(torch.ones(1), "mean")
