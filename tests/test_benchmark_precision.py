"""``run_benchmark(amp=...)`` and models run in channels_last or compiled: every forward under autocast, and the
ε promise exact (``‖x_adv − x‖∞ ≤ ε``, ``x_adv ∈ [0, 1]``) on the benchmark's own attack path."""

from __future__ import annotations

import pytest
import torch
from conftest import NUM_CLASSES, make_blobs
from torch import nn

from segrobust.benchmark import BenchmarkConfig, run_benchmark
from segrobust.benchmark import core as benchmark_core
from segrobust.models import ChannelsLast

EPS = [2 / 255, 8 / 255]
# every attack the benchmark runs by default, and the reliable ensemble
ATTACKS = "reliable,all"


class Recorder(nn.Module):
    """A tiny segmenter recording, per forward, whether autocast was on and whether its input was channels-last."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 1))
        self.autocast: list[bool] = []
        self.channels_last: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.autocast.append(torch.is_autocast_enabled(images.device.type))
        self.channels_last.append(images.is_contiguous(memory_format=torch.channels_last))
        return self.body(images)


def _data(n: int = 4, size: int = 16) -> list[dict[str, torch.Tensor]]:
    images, masks = make_blobs(n, size, seed=3)
    return [{"image": image, "mask": mask} for image, mask in zip(images, masks)]


def _shown_per_condition(monkeypatch) -> list[tuple]:
    """Record ``(condition, clean images, images shown to the model)`` of every unit the benchmark computes."""
    seen = []
    original = benchmark_core._shown_and_logits

    def spy(plan, condition, attack, b, batch, images, masks):
        shown, logits, stats = original(plan, condition, attack, b, batch, images, masks)
        seen.append((condition, images.detach().clone(), shown.detach().clone()))
        return shown, logits, stats

    monkeypatch.setattr(benchmark_core, "_shown_and_logits", spy)
    return seen


def _check_eps(seen: list[tuple]) -> int:
    checked = 0
    for condition, images, shown in seen:
        assert 0 <= float(shown.min()) and float(shown.max()) <= 1, condition.label
        if condition.kind in ("attack", "positive") and condition.key != "rain_attack":
            assert shown.dtype == torch.float32
            assert (shown.double() - images.double()).abs().max() <= condition.eps, condition.label  # exact
            checked += 1
    return checked


def test_amp_runs_every_forward_under_autocast_and_keeps_the_eps_promise(monkeypatch):
    model = Recorder().eval()
    seen = _shown_per_condition(monkeypatch)
    config = BenchmarkConfig(
        attacks=ATTACKS, eps_list=EPS, rain="light", corruptions="fog", severities=1, steps=2, reliable_steps=3,
        batch_size=2, progress=False, amp="bf16",
    )  # fmt: skip
    results = run_benchmark(model, _data(), config)
    assert model.autocast and all(model.autocast)  # clean, rain, corruption, every attack step and the ensemble
    assert _check_eps(seen) == 2 * 2 * 6  # 2 batches x 2 budgets x (reliable, naa, segpgd, cospgd, eroseg, ama)
    assert results.config["amp"] == "bfloat16" and config.amp == torch.bfloat16
    assert all(0 <= row.miou <= 1 for row in results.rows)


def test_without_amp_nothing_runs_under_autocast():
    model = Recorder().eval()
    run_benchmark(model, _data(2), attacks="naa", eps_list=[8 / 255], rain="none", steps=2, progress=False)
    assert model.autocast and not any(model.autocast)


def test_amp_changes_the_resume_fingerprint(tmp_path):
    data, model = _data(2), Recorder().eval()
    settings = {"attacks": "naa", "eps_list": [8 / 255], "rain": "none", "steps": 1, "progress": False}
    run_benchmark(model, data, out_dir=tmp_path, write_report=False, **settings)
    with pytest.raises(ValueError, match="cannot resume"):
        run_benchmark(model, data, out_dir=tmp_path, resume=True, amp="bf16", write_report=False, **settings)


def test_amp_names_and_dtypes_are_accepted_and_others_refused():
    assert BenchmarkConfig(amp="fp16").amp == BenchmarkConfig(amp=torch.float16).amp == torch.float16
    assert BenchmarkConfig().amp is None
    with pytest.raises(ValueError, match=r"amp must be None, torch\.bfloat16, torch\.float16"):
        BenchmarkConfig(amp="fp32")


@pytest.mark.parametrize("wrap", ["channels_last", "compiled"])
def test_channels_last_and_compiled_models_keep_the_eps_promise(monkeypatch, wrap):
    inner = Recorder().eval()
    if wrap == "channels_last":
        model = ChannelsLast(inner.to(memory_format=torch.channels_last))
    else:  # dynamo's own backend: the compiled graph without a C++ toolchain (inductor's cost: docs)
        model = torch.compile(inner, backend="eager")
    seen = _shown_per_condition(monkeypatch)
    config = BenchmarkConfig(attacks="naa,ama", eps_list=EPS, rain="none", steps=2, batch_size=4, progress=False)
    results = run_benchmark(model, _data(), config)
    assert _check_eps(seen) == 2 * 2
    assert all(inner.channels_last) == (wrap == "channels_last")
    reference = run_benchmark(inner, _data(), config)
    # clean: the same function, up to the rounding of other kernels (a near-tie may flip a pixel)
    moved = torch.tensor(results.rows[0].confusion_matrix) - torch.tensor(reference.rows[0].confusion_matrix)
    assert moved.abs().sum() <= 2 * 0.01 * 4 * 16 * 16


def test_channels_last_is_the_same_function_and_differentiable():
    net = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    reference = x.detach().clone().requires_grad_()
    ChannelsLast(net)(x).square().sum().backward()
    net(reference).square().sum().backward()
    assert torch.allclose(x.grad, reference.grad, atol=1e-6)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        ChannelsLast(lambda images: images)
