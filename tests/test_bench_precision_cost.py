"""benchmarks/precision_cost.py on a CPU at small sizes: every variant measured in one run, ratios to fp32, the ε check."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import TinySegNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import precision_cost as bench

FIELDS = ("attack", "variant", "first_call_s", "step_s", "call_s", "peak_bytes")
SMALL = ["--size", "64", "128", "--batch", "2", "--steps", "1", "--repeats", "1", "--device", "cpu"]


def test_every_variant_and_attack_is_measured_in_one_run_with_ratios_to_fp32(tmp_path, monkeypatch, capsys):
    def tiny(args):  # bf16 convolutions are ~15x slower than fp32 on a CPU without bf16 units: a tiny model
        torch.manual_seed(0)
        images = torch.rand(args.batch, 3, *args.size)
        masks = torch.randint(0, args.classes, (args.batch, *args.size))
        return TinySegNet(args.classes, width=4).eval(), images, masks

    monkeypatch.setattr(bench, "build", tiny)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # no C++ toolchain
    out = tmp_path / "cost.json"
    tiny_sizes = ["--size", "16", "32", "--batch", "1", "--steps", "1", "--repeats", "1", "--device", "cpu"]
    rows = bench.main([*tiny_sizes, "--variants", "bf16", "compile", "bf16+channels_last", "--json", str(out)])
    variants = ["fp32", "bf16", "compile", "bf16+channels_last"]
    assert [(row["attack"], row["variant"]) for row in rows] == [(a, v) for v in variants for a in ("NAA", "APGD")]
    for row in rows:  # a marginal step time of one noisy round may be ~0: only the structure is checked here
        assert row["first_call_s"] > 0 and row["call_s"] > 0 and row["peak_bytes"] is None  # no memory on a CPU
        assert set(row) == {*FIELDS, "step_ratio", "memory_ratio"}
    printed = capsys.readouterr().out
    assert "| NAA | bf16 |" in printed and "bf16 step / fp32 step: NAA " in printed and "target ≤ 0.6" in printed
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))


def test_ratios_divide_by_the_fp32_row_of_the_same_attack():
    rows = [
        {"attack": "NAA", "variant": "fp32", "step_s": 0.2, "peak_bytes": 100},
        {"attack": "APGD", "variant": "fp32", "step_s": 0.4, "peak_bytes": None},
        {"attack": "NAA", "variant": "bf16", "step_s": 0.1, "peak_bytes": 60},
        {"attack": "APGD", "variant": "bf16", "step_s": 0.3, "peak_bytes": None},
        {"attack": "NAA", "variant": "compile", "step_s": -0.01, "peak_bytes": None},  # noise of a short run
    ]
    ratios = [(row["step_ratio"], row["memory_ratio"]) for row in bench.add_ratios(rows)]
    assert ratios == [(1.0, 1.0), (1.0, None), (0.5, 0.6), (pytest.approx(0.75), None), (None, None)]


def test_the_smp_unet_of_the_measurement_runs_at_a_small_size(capsys):
    rows = bench.main([*SMALL, "--encoder", "resnet18", "--variants", "fp32", "--attacks", "NAA"])
    assert [(row["attack"], row["variant"]) for row in rows] == [("NAA", "fp32")]
    assert "smp Unet-resnet18, 19 classes, batch 2x3x64x128" in capsys.readouterr().out


def test_a_result_outside_the_ball_stops_the_measurement():
    images = torch.rand(1, 3, 4, 4)
    with pytest.raises(AssertionError, match="ε promise"):
        bench.run_once(lambda x, y: (x + 2 * bench.EPS).clamp(0, 1), images, torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize("text", ["fp64", "bf16+fp16", "compile+fast"])
def test_unknown_variants_are_refused(text):
    with pytest.raises(SystemExit):
        bench.parse_args(["--variants", text])
