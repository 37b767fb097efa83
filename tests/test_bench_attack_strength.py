"""benchmarks/attack_strength.py --reliable: shard combination, ensemble rows, pass counts, result merging."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import TinySegNet, make_blobs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _camvid
import attack_strength as bench

from segrobust.attacks import greedy_worst_case_miou


def _setting(seed: int = 0):
    torch.manual_seed(seed)
    model = TinySegNet(width=8).eval()
    images, masks = make_blobs(6, 12, seed=seed)
    masks = masks.clone()
    masks[:, 0] = 255
    batches = [{"image": images[i : i + 3], "mask": masks[i : i + 3]} for i in (0, 3)]
    return model, batches


def test_shards_combine_into_one_run_and_ensemble_rows_hold_the_worst_case(tmp_path, monkeypatch):
    model, batches = _setting()
    parts = [bench.run_ensemble(model, [batch], 4, 2) for batch in batches]
    whole = bench.combine(parts)
    assert whole["shards"] == 2 and whole["choice"].shape == (6,)
    assert torch.equal(whole["member_confusion"], torch.cat([p["member_confusion"] for p in parts], 1))
    assert whole["forward"] == sum(p["forward"] for p in parts)
    rows = bench.rows_of(whole, 4, 2)
    ensemble, members = rows[0], rows[1:]
    assert [r["attack"] for r in members] == ["APGD-masked_ce", "APGD-balanced_masked_ce", "APGD-js"]
    assert all(r["images"] == 6 and r["protocol"] == "reliable" for r in rows)
    # per member: steps + 1 forward (the last scores the final iterate) and steps backward passes
    assert all((r["forward_per_image"], r["backward_per_image"]) == (3, 2) for r in members)
    assert (ensemble["forward_per_image"], ensemble["backward_per_image"]) == (9, 6)
    assert all(ensemble["pixel_accuracy"] <= r["pixel_accuracy"] + 1e-12 for r in members)
    assert ensemble["miou"] == pytest.approx(greedy_worst_case_miou(whole["member_confusion"])[0])
    # a stopped sharded run: the rows of the leading finished shards, marked as a subset
    monkeypatch.setattr(_camvid, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "CACHE", tmp_path)
    assert bench.shard_store("Ensemble", 4, 2, (1, 3), parts[0], "m") is None
    bench.shard_store("Ensemble", 4, 2, (3, 3), parts[1], "m")
    args = bench.parse_args(
        ["--reliable", "--combine-available", "--shard", "1/3", "--rows", "Ensemble", "--eps", "4", "--steps", "2"]
    )
    bench.combine_available(args, "cmd", {"model": {"key": "m"}, "command": "cmd"})
    written = json.loads((tmp_path / "attack_strength.json").read_text())["rows"]
    assert [r["images"] for r in written] == [3] * 4 and written[0]["subset"] == "first 3 val images (1 of 3 shards)"
    assert written[0]["miou"] == pytest.approx(greedy_worst_case_miou(parts[0]["member_confusion"])[0])


def test_single_attack_rows_count_passes_and_use_the_step_size_rule():
    model, batches = _setting(1)
    row = bench.rows_of(bench.run_single("CosPGD", model, batches, 8, 3), 8, 3)[0]
    assert (row["forward_per_image"], row["backward_per_image"]) == (4, 3)
    assert row["alpha"] == pytest.approx(2.5 * (8 / 255) / 3)
    assert bench.reliable_alpha(8 / 255, 100) == pytest.approx(0.01)
    assert bench.reliable_alpha(4 / 255, 100) == pytest.approx(0.005)
    assert bench.shard_images(10, (2, 3)) == [4, 5, 6]


def test_merge_keeps_short_attack_rows_and_replaces_same_reliable_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(_camvid, "RESULTS", tmp_path)
    short = {"attack": "CosPGD", "eps": 4, "steps": 100, "miou": 0.5}
    (tmp_path / "attack_strength.json").write_text(json.dumps({"command": "first", "rows": [short]}))
    row = {**short, "protocol": "reliable", "miou": 0.2}
    bench.merge_results([row], "second", {})
    bench.merge_results([{**row, "miou": 0.1}], "second", {})
    result = json.loads((tmp_path / "attack_strength.json").read_text())
    assert result["rows"] == [short, {**row, "miou": 0.1}]
    assert result["appended_commands"] == ["second"]


def test_reliable_ensemble_row_holds_the_worst_case_and_merge_rows_replaces_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(_camvid, "RESULTS", tmp_path)
    model, batches = _setting()
    val = [{"image": b["image"][i], "mask": b["mask"][i]} for b in batches for i in range(3)]
    reliable = bench.reliable_ensemble(model, val, 4, 2)
    assert reliable["attack"] == "Ensemble" and reliable["images"] == 6
    assert reliable["miou"] <= min(r["miou"] for r in reliable["member_rows"]) + 2e-3
    key = lambda row: row["training"]  # noqa: E731
    _camvid.merge_rows("at", [{"training": "EroSeg-AT", "v": 1}, {"training": "PGD-AT", "v": 1}], "first", {}, key)
    _camvid.merge_rows("at", [{"training": "PGD-AT", "v": 2}, {"training": "standard", "v": 2}], "second", {}, key)
    _camvid.merge_rows("at", [{"training": "standard", "v": 3}], "second", {}, key)
    result = json.loads((tmp_path / "at.json").read_text())
    assert result["rows"] == [
        {"training": "EroSeg-AT", "v": 1},
        {"training": "PGD-AT", "v": 2},
        {"training": "standard", "v": 3},
    ]
    assert (result["command"], result["appended_commands"]) == ("first", ["second"])


def test_depth_benchmark_rows_and_depth_error(monkeypatch, tmp_path):
    import depth_multitask as depth

    monkeypatch.setattr(depth, "CACHE", tmp_path)
    args = depth.parse_args(
        ["--world", "synthetic", "--synthetic-train", "2", "--synthetic-test", "2", "--size", "32", "32"]
    )
    rows = depth.variants(args)
    assert sorted(rows) == ["known", "posenet", "single"]
    assert rows["single"].multitask_path is None and rows["known"].multitask_path != rows["posenet"].multitask_path
    train, test = depth.synthetic_data(args)
    assert "poses" in train[0] and "poses" not in depth.without_poses(dict(train[0]))
    error = depth.depth_error(args, None, test)
    assert 0.0 < error < 2.0
    with pytest.raises(SystemExit, match="is missing"):
        depth.depth_error(args, tmp_path / "missing.pt", test)
