"""``BenchmarkResults.to_records`` / ``to_csv``: flat rows a data-frame or spreadsheet user loads as they are."""

from __future__ import annotations

import csv
import io
import math

import pytest

from segrobust.benchmark import BenchmarkResults, ConditionResult


def _row(key: str, kind: str, eps, miou: float, iou, seconds=None) -> ConditionResult:
    return ConditionResult(
        key,
        key.title(),
        kind,
        eps,
        miou,
        miou + 0.1,
        miou + 0.05,
        list(iou),
        64,
        [[30, 2], [2, 30]],
        [0.9, 0.8],
        seconds=seconds,
        images_per_second=None if seconds is None else 2 / seconds,
    )


@pytest.fixture
def results() -> BenchmarkResults:
    rows = [
        _row("clean", "clean", None, 0.7, [0.8, 0.6], seconds=0.25),
        _row("rain:heavy", "rain", None, 0.5, [0.6, math.nan], seconds=1 / 3),
        _row("naa", "attack", 4 / 255, 0.3, [0.4, 0.2], seconds=0.125),
        _row("naa", "attack", 8 / 255, 0.1, [0.2, 0.0], seconds=0.1),
        _row("worst", "worst", 8 / 255, 0.1, [0.2, 0.0]),
    ]
    return BenchmarkResults(rows=rows, class_names=["road", "car"], num_images=2)


def test_records_one_flat_row_per_condition_and_eps(results):
    records = results.to_records()
    assert [(r["condition"], r["eps"]) for r in records] == [
        ("clean", None),
        ("rain:heavy", None),
        ("naa", 4 / 255),
        ("naa", 8 / 255),
        ("worst", 8 / 255),
    ]
    first = records[0]
    assert list(first)[:7] == ["condition", "name", "kind", "eps", "eps_text", "severity", "miou"]
    assert all(r["severity"] is None for r in records)  # only corruption rows have a severity
    assert first["miou"] == 0.7 and first["pixel_accuracy"] == pytest.approx(0.8) and first["iou_car"] == 0.6
    assert records[2]["eps_text"] == "4/255" and records[2]["delta_miou"] == pytest.approx(0.3 - 0.7)
    assert records[1]["iou_car"] is None  # an absent class: None, not NaN
    assert records[4]["seconds"] is None and records[4]["images_per_second"] is None
    assert all(not isinstance(v, (list, dict)) for r in records for v in r.values())


def test_csv_parses_back_to_the_records(results, tmp_path):
    records = results.to_records()
    text = results.to_csv()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == len(records)
    for record, row in zip(records, parsed):
        assert list(row) == list(record)
        for column, value in record.items():
            if value is None:
                assert row[column] == ""
            elif isinstance(value, str):
                assert row[column] == value
            else:
                assert float(row[column]) == value  # repr round trip: bit-identical
    assert results.to_csv(tmp_path / "r.csv") == text
    assert (tmp_path / "r.csv").read_text(encoding="utf-8") == text


def test_records_load_into_pandas(results):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(results.to_records())
    assert frame.shape == (5, 14)
    assert frame.loc[frame.condition == "worst", "miou"].item() == 0.1
    assert math.isnan(frame.loc[1, "iou_car"])


def test_records_survive_the_json_round_trip(results):
    assert BenchmarkResults.from_dict(results.to_dict()).to_records() == results.to_records()
