"""One step-size default everywhere: ``alpha=None`` means ``2.5 · eps / steps`` (a given alpha is kept)."""

from __future__ import annotations

import inspect

import pytest
from torch import nn

from segrobust import attacks
from segrobust.benchmark import ATTACKS, BenchmarkConfig

L_INF = [attacks.NAA, attacks.AMA, attacks.SegPGD, attacks.CosPGD, attacks.EroSeg]


@pytest.mark.parametrize("attack_class", L_INF, ids=lambda cls: cls.__name__)
def test_default_step_is_two_and_a_half_eps_over_steps(attack_class):
    assert inspect.signature(attack_class).parameters["alpha"].default is None
    model = nn.Conv2d(3, 2, 1)
    assert attack_class(model).alpha == pytest.approx(2 / 255)  # eps=8/255, steps=10
    assert attack_class(model, eps=4 / 255, steps=2).alpha == pytest.approx(5 / 255)
    assert attack_class(model, eps=4 / 255, alpha=1 / 255, steps=2).alpha == 1 / 255


def test_art_counterparts_and_the_benchmark_share_the_default():
    sart = pytest.importorskip("segrobust.art")
    assert inspect.signature(sart.NAA).parameters["alpha"].default is None
    assert BenchmarkConfig().alpha is None
    built = ATTACKS["naa"].build(
        nn.Conv2d(3, 2, 1), eps=8 / 255, alpha=None, steps=4, random_start=True, ignore_index=255
    )
    assert built.alpha == pytest.approx(2.5 * (8 / 255) / 4)
