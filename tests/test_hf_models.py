"""Hugging Face models through load_model: ``hf:CLASS`` from a config dict, ``hf:PATH`` from a local folder.

Nothing is downloaded and no code from a folder runs. Skipped (with the
reason) when transformers is not installed, except the test of that message.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import sys

import pytest
import torch

from segrobust.models import ModelLoadError, SegmentationModel, load_model

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="transformers is not installed (pip install 'segrobust[hf]')",
)

SEGFORMER = "hf:SegformerForSemanticSegmentation"
#: A two-stage MiT with 7 k parameters: builds and runs in milliseconds.
TINY_SEGFORMER = {
    "num_encoder_blocks": 2,
    "depths": [1, 1],
    "sr_ratios": [2, 1],
    "hidden_sizes": [8, 16],
    "patch_sizes": [7, 3],
    "strides": [4, 2],
    "num_attention_heads": [1, 1],
    "mlp_ratios": [2, 2],
    "decoder_hidden_size": 16,
}
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def test_a_missing_transformers_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ModelLoadError, match=r"needs the transformers package: pip install 'segrobust\[hf\]'"):
        load_model(SEGFORMER, model_args={"config": TINY_SEGFORMER})


@needs_transformers
def test_hf_class_builds_a_seeded_model_from_a_config_dict():
    model = load_model(SEGFORMER, num_classes=5, model_args={"config": TINY_SEGFORMER}, **IMAGENET)
    assert isinstance(model, SegmentationModel) and model.num_classes == 5 and not model.training
    assert model.model.config.num_labels == 5
    images = torch.rand(2, 3, 64, 96)
    out = model(images)
    assert out.shape == (2, 5, 64, 96)  # SegFormer predicts at 1/4: upsampled by the adapter
    again = load_model(SEGFORMER, num_classes=5, model_args={"config": TINY_SEGFORMER}, **IMAGENET)
    assert torch.equal(again(images), out)
    other = load_model(SEGFORMER, num_classes=5, model_args={"config": TINY_SEGFORMER}, seed=1, **IMAGENET)
    assert not torch.equal(other(images), out)


@needs_transformers
@pytest.mark.parametrize(
    "source, args, message",
    [
        (
            "hf:SegformerForSemanticSegmentatio",
            {},
            r"not a transformers model class \(did you mean SegformerForSemanticSegmentation",
        ),
        ("hf:SegformerConfig", {}, r"'SegformerConfig' is not a transformers model class"),
        ("hf:", {}, r"needs a transformers class .* or a folder"),
        (
            SEGFORMER,
            {"config": {"hiden_sizes": [8, 16]}},
            r"has no option 'hiden_sizes' \(did you mean 'hidden_sizes'\?\)",
        ),
        (SEGFORMER, {"config": {**TINY_SEGFORMER, "num_labels": 7}}, r"num_classes=5 contradicts config num_labels=7"),
        (SEGFORMER, {"config": TINY_SEGFORMER, "weights": "x"}, r"model_args takes only 'config'"),
        (SEGFORMER, {"config": [1, 2]}, r"model_args\['config'\] must be a mapping"),
        (
            SEGFORMER,
            {"config": {**TINY_SEGFORMER, "hidden_sizes": [8, 100_000]}},
            r"parameters, over the 2,000,000,000",
        ),
        (SEGFORMER, {"config": {**TINY_SEGFORMER, "num_encoder_blocks": 3}}, r"cannot build it from this config"),
        ("hf:does/not/exist", {}, r"is not a folder written by save_pretrained \(segrobust never downloads"),
    ],
)
def test_hf_errors_are_one_line(source, args, message):
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(source, num_classes=5, model_args=args)
    assert "\n" not in str(info.value)


@needs_transformers
def test_hf_folder_round_trip_with_its_normalisation(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(0)
    net = SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=5)).eval()
    folder = tmp_path / "segformer"
    net.save_pretrained(folder)
    SegformerImageProcessor(image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    model = load_model(f"hf:{folder}")
    images = torch.rand(2, 3, 64, 64)
    expected = SegmentationModel(net, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))(images)
    assert model.num_classes == 5 and torch.allclose(model(images), expected, atol=1e-6)
    assert torch.allclose(load_model(f"hf:{folder}", **IMAGENET).mean.flatten(), torch.tensor(IMAGENET["mean"]))
    with pytest.raises(ModelLoadError, match=r"predicts 5 classes, but 19 were asked for"):
        load_model(f"hf:{folder}", num_classes=19)
    with pytest.raises(ModelLoadError, match=r"complete model folder"):
        load_model(f"hf:{folder}", model_args={"config": {}})
    half = tmp_path / "half"
    net.half().save_pretrained(half)
    assert all(p.dtype == torch.float32 for p in load_model(f"hf:{half}").parameters())


@needs_transformers
def test_hf_folder_runs_no_code_from_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    marker = tmp_path / "pwned"
    folder = tmp_path / "remote-code"
    folder.mkdir()
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = {"architectures": ["EvilModel"], "model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"cannot read .*config.json"):
        load_model(f"hf:{folder}")
    config = {"architectures": ["EvilModel"], "model_type": "segformer", "auto_map": {"AutoModel": "evil.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"'EvilModel' is not a transformers model class"):
        load_model(f"hf:{folder}")
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@needs_transformers
def test_hf_folder_weights_are_read_without_unpickling_code(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    folder, marker = tmp_path / "pickled", tmp_path / "pwned"
    SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=5)).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"segformer.weight": _Payload(str(marker))}, handle, protocol=2)
    with pytest.raises(ModelLoadError, match=r"cannot load its weights"):
        load_model(f"hf:{folder}")
    assert not marker.exists()


@needs_transformers
def test_hf_folder_with_a_fifo_is_refused(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    folder = tmp_path / "fifo"
    SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=5)).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"model.safetensors: not a regular file \(a FIFO\)"):
        load_model(f"hf:{folder}")
