"""``SegmentationModel`` and ``load_model("module:callable")``: any segmentation network, as segrobust expects it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from segrobust.models import ModelLoadError, SegmentationModel, load_model
from segrobust.utils import segmentation_logits

REPO = Path(__file__).resolve().parents[1]
LRASPP = "torchvision.models.segmentation:lraspp_mobilenet_v3_large"
LRASPP_ARGS = {"num_classes": 11, "weights": None, "weights_backbone": None}


@dataclass
class _Output:
    """Like a Hugging Face ``SemanticSegmenterOutput``: ``.logits`` beside other fields."""

    loss: object = None
    logits: torch.Tensor = None
    hidden_states: object = None


class _QuarterResolution(nn.Module):
    """A SegFormer stand-in: logits at 1/4 of the input resolution, wrapped as ``kind`` says."""

    def __init__(self, kind: str = "object", num_classes: int = 5) -> None:
        super().__init__()
        self.kind = kind
        self.head = nn.Conv2d(3, num_classes, kernel_size=4, stride=4)
        self.norm = nn.BatchNorm2d(num_classes)

    def forward(self, images: torch.Tensor):
        logits = self.norm(self.head(images))
        if self.kind == "object":
            return _Output(logits=logits, hidden_states=(images,))
        if self.kind == "hf_dict":
            return OrderedDict(logits=logits, hidden_states=(images,))
        if self.kind == "custom_dict":
            return {"seg": logits, "features": images}
        return logits


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


@pytest.mark.parametrize("kind", ["object", "hf_dict", "tensor"])
def test_lower_resolution_logits_are_upsampled_to_the_input(kind):
    torch.manual_seed(0)
    inner = _QuarterResolution(kind).eval()
    model = SegmentationModel(inner)
    images = torch.rand(2, 3, 32, 48)
    logits = model(images)
    assert logits.shape == (2, 5, 32, 48)
    low = inner.norm(inner.head(images))
    expected = nn.functional.interpolate(low, size=(32, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_output_key_and_unknown_outputs():
    inner = _QuarterResolution("custom_dict").eval()
    with pytest.raises(TypeError, match=r"without an 'out' or 'logits' key .*output_key"):
        SegmentationModel(inner)(torch.rand(1, 3, 16, 16))
    assert SegmentationModel(inner, output_key="seg")(torch.rand(1, 3, 16, 16)).shape == (1, 5, 16, 16)
    with pytest.raises(TypeError, match="no key 'nope'"):
        SegmentationModel(inner, output_key="nope")(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"logits of size \(4, 4\) for images of size \(16, 16\)"):
        SegmentationModel(_QuarterResolution("tensor"), upsample=None)(torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError, match="expected a tensor"):
        segmentation_logits(3.0)
    with pytest.raises(ValueError, match="upsample must be one of"):
        SegmentationModel(inner, upsample="linear")


def test_mean_std_normalise_inside_and_are_checked():
    inner = nn.Conv2d(3, 4, 1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.rand(2, 3, 8, 8)
    normalised = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(SegmentationModel(inner, mean=mean, std=std)(images), inner(normalised), atol=1e-6)
    for kwargs, message in (
        ({"mean": mean}, "both mean and std"),
        ({"mean": mean, "std": (1, 0, 1)}, "positive"),
        ({"mean": (0.5,), "std": std}, "one value per channel"),
        ({"mean": "ab", "std": std}, "numbers"),
    ):
        with pytest.raises(ValueError, match=message):
            SegmentationModel(inner, **kwargs)
    with pytest.raises(ValueError, match=r"expected images \(N, 3, H, W\)"):
        SegmentationModel(inner, mean=mean, std=std)(torch.rand(1, 1, 8, 8))


def test_the_wrapper_keeps_parameters_and_modes_and_passes_gradients():
    inner = _QuarterResolution("object").train()
    inner.norm.eval()  # a per-module choice that the wrapper must not undo
    before, modes = _snapshot(inner)
    model = SegmentationModel(inner, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert [m.training for m in inner.modules()] == modes
    assert list(model.parameters()) == list(inner.parameters())
    assert set(model.state_dict()) == {f"model.{k}" for k in inner.state_dict()}  # mean/std are not saved
    images = torch.rand(1, 3, 16, 16, requires_grad=True)
    model(images).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(torch.equal(before[k], v) for k, v in inner.state_dict().items() if "running" not in k)
    model.eval()
    assert not any(m.training for m in inner.modules())
    model.train()
    assert all(m.training for m in inner.modules())


def test_attacks_run_on_a_wrapped_quarter_resolution_model():
    from segrobust.attacks import SegPGD

    torch.manual_seed(0)
    model = SegmentationModel(_QuarterResolution("object", num_classes=3)).eval()
    images, masks = torch.rand(2, 3, 16, 16), torch.randint(0, 3, (2, 16, 16))
    adv = SegPGD(model, eps=4 / 255, alpha=1 / 255, steps=2)(images, masks)
    assert adv.shape == images.shape and torch.isfinite(adv).all()
    assert (adv - images).abs().max() <= 4 / 255 + 1e-6


@pytest.mark.parametrize(
    ("builder", "kwargs"),
    [
        ("fcn_resnet50", {"num_classes": 3, "weights": None, "weights_backbone": None, "aux_loss": True}),
        (
            "deeplabv3_mobilenet_v3_large",
            {"num_classes": 3, "weights": None, "weights_backbone": None, "aux_loss": True},
        ),
    ],
)
def test_torchvision_models_through_the_adapter(builder, kwargs):
    from torchvision.models import segmentation

    torch.manual_seed(0)
    net = getattr(segmentation, builder)(**kwargs).eval()
    images = torch.rand(1, 3, 32, 32)
    logits = SegmentationModel(net)(images)
    assert logits.shape == (1, 3, 32, 32)
    assert torch.equal(logits, net(images)["out"])  # torchvision upsamples itself: "out" is used as is


def test_load_model_from_a_callable_with_weights(tmp_path):
    model = load_model(LRASPP, model_args=LRASPP_ARGS, seed=1)
    assert isinstance(model, SegmentationModel) and not model.training
    images = torch.rand(1, 3, 40, 56)
    assert model(images).shape == (1, 11, 40, 56)
    other = load_model(LRASPP, model_args=LRASPP_ARGS, seed=2)
    torch.save(model.model.state_dict(), tmp_path / "weights.pt")
    reloaded = load_model(LRASPP, model_args=LRASPP_ARGS, seed=2, weights=tmp_path / "weights.pt")
    assert torch.equal(reloaded(images), model(images)) and not torch.equal(other(images), model(images))
    with pytest.raises(ModelLoadError, match=r"does not fit model .* check --model-args"):
        load_model(LRASPP, model_args={**LRASPP_ARGS, "num_classes": 5}, weights=tmp_path / "weights.pt")
    with pytest.raises(ModelLoadError, match="contradicts"):
        load_model(LRASPP, num_classes=4, model_args=LRASPP_ARGS)
    with pytest.raises(ModelLoadError, match=r"lraspp_mobilenet_v3_large\(weights='nonsense'.*failed: KeyError"):
        load_model(LRASPP, model_args={"weights": "nonsense", "weights_backbone": None})


def test_load_model_imports_from_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "segrobust_test_user_models.py").write_text(
        "from torch import nn\n"
        "def build(num_classes=3):\n    return nn.Conv2d(3, num_classes, 4, stride=4)\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
    try:
        model = load_model("segrobust_test_user_models:build", num_classes=4)
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 4, 16, 16)
        with pytest.raises(ModelLoadError, match="not a callable"):
            load_model("segrobust_test_user_models:NOT_CALLABLE")
    finally:
        sys.modules.pop("segrobust_test_user_models", None)
    assert str(tmp_path) not in sys.path


def test_benchmark_a_user_model_and_lraspp_from_the_command_line(tmp_path):
    """`segrobust` the console script (not ``python -m``) imports from the current directory too."""
    (tmp_path / "my_models.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Quarter(nn.Module):\n"
        "    def __init__(self, num_classes):\n        super().__init__()\n"
        "        self.head = nn.Conv2d(3, num_classes, 4, stride=4)\n"
        "    def forward(self, x):\n        return {'logits': self.head(x), 'hidden_states': None}\n"
        "def build(num_classes=11):\n    return Quarter(num_classes)\n"
    )
    launcher = tmp_path / "bin" / "segrobust_launcher.py"
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom segrobust.cli import main\nsys.exit(main())\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = [
        ("my_models:build", ["--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]),
        (LRASPP, ["--model-args", '{"num_classes": 11, "weights": null, "weights_backbone": null}']),
    ]
    for name, extra in runs:
        out = tmp_path / name.partition(":")[0]
        command = [
            sys.executable,
            str(launcher),
            "benchmark",
            "--fast",
            "--model",
            name,
            *extra,
            "--attacks",
            "naa",
            "--rain",
            "light",
            "--no-progress",
            "--out",
            str(out),
        ]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Worst case" in result.stdout and (out / "results.json").exists()


def test_evaluate_and_run_benchmark_take_mean_and_std():
    """A model that expects normalised images scores the same through mean/std as wrapped by hand."""
    import torch
    from torch import nn

    from segrobust.benchmark import run_benchmark
    from segrobust.benchmark.storage import fingerprint
    from segrobust.models import SegmentationModel
    from segrobust.training import evaluate

    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 1)
    data = [(torch.rand(3, 8, 8), torch.randint(0, 3, (8, 8))) for _ in range(4)]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    wrapped = SegmentationModel(net, mean=mean, std=std)
    loader = [(torch.stack([x for x, _ in data]), torch.stack([y for _, y in data]))]
    assert evaluate(net, loader, num_classes=3, mean=mean, std=std) == evaluate(wrapped, loader, num_classes=3)
    settings = {"attacks": "none", "rain": "none", "progress": False}
    by_args = run_benchmark(net, data, mean=mean, std=std, **settings)
    assert by_args.clean.miou == run_benchmark(wrapped, data, **settings).clean.miou
    assert by_args.clean.miou != run_benchmark(net, data, **settings).clean.miou
    # resume fingerprints see the normalisation, not only the weights
    assert fingerprint(wrapped) != fingerprint(SegmentationModel(net, mean=[0.5] * 3, std=std))
