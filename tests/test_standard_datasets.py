"""Cityscapes, RainCityscapes, PASCAL VOC, ADE20K and the torchvision adapter on tiny generated trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import error_reading_fifo
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segrobust.datasets import (
    ADE20K,
    CITYSCAPES_CLASSES,
    CITYSCAPES_COLORS,
    DATASET_NAMES,
    VOC_COLORS,
    Cityscapes,
    RainCityscapes,
    TorchvisionSegmentation,
    VOCSegmentation,
    build_dataset,
)
from segrobust.datasets.cityscapes import CITYSCAPES_TRAIN_IDS, parse_rain_name
from segrobust.datasets.labeled import label_lookup, pascal_palette

H, W = 8, 16
# Stored Cityscapes label ids laid out in the label file, with their train ids.
CITY_IDS = np.array([0, 7, 8, 9, 11, 17, 21, 23, 24, 26, 29, 33, 1, 6, 19, 31])
CITY_TRAIN = np.array([255, 0, 1, 255, 2, 5, 8, 10, 11, 13, 255, 18, 255, 255, 6, 16])
RAIN = ("alpha_0.01_beta_0.005_dropsize_0.01_pattern_1", "alpha_0.02_beta_0.01_dropsize_0.005_pattern_2")


def _rgb(value: int) -> np.ndarray:
    """An image whose pixels all hold ``value`` (identifies the frame it belongs to)."""
    return np.full((H, W, 3), value, np.uint8)


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def _city_labels(shift: int) -> np.ndarray:
    return np.tile(np.roll(CITY_IDS, shift), (H, 1)).astype(np.uint8)


def _city_train(shift: int) -> torch.Tensor:
    return torch.from_numpy(np.tile(np.roll(CITY_TRAIN, shift), (H, 1))).long()


@pytest.fixture()
def cityscapes(tmp_path: Path) -> Path:
    root = tmp_path / "cityscapes"
    frames = {
        "train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
        "val": ["frankfurt_000000_000294"],
    }
    for split, names in frames.items():
        for k, frame in enumerate(names):
            city = frame.split("_")[0]
            _save(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", _rgb(10 * k + 10))
            _save(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", _city_labels(k))
            for r, rain in enumerate(RAIN):
                name = f"{frame}_leftImg8bit_rain_{rain}.png"
                _save(root / "leftImg8bit_rain" / split / city / name, _rgb(10 * k + 10 + 100 * (r + 1)))
            depth = np.tile(np.arange(W, dtype=np.uint8) * 16, (H, 1))
            _save(root / "depth_rain" / split / city / f"{frame}_depth_rain.png", depth)
    return root


def test_cityscapes_maps_label_ids_to_train_ids(cityscapes):
    data = Cityscapes(cityscapes, "train")
    assert len(data) == 3 and data.names == ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"]
    assert data.num_classes == 19 and data.class_names == CITYSCAPES_CLASSES and len(data.palette) == 19
    for k in range(3):
        item = data[k]
        assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
        assert torch.allclose(item["image"], torch.full((3, H, W), (10 * k + 10) / 255))  # image paired with ...
        assert item["mask"].dtype == torch.int64 and torch.equal(item["mask"], _city_train(k))  # ... its labels
    mask = data[0]["mask"][0]
    assert (mask[1], mask[9], mask[0], mask[11]) == (0, 13, 255, 18)  # labelId 7 -> 0, 26 -> 13, 0 -> 255
    assert all(CITYSCAPES_TRAIN_IDS[i] is None for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30))
    assert sorted(v for v in CITYSCAPES_TRAIN_IDS.values() if v is not None) == list(range(19))
    assert CITYSCAPES_COLORS[0] == (128, 64, 128) and CITYSCAPES_CLASSES[13] == "car"


def test_cityscapes_options_and_build_dataset(cityscapes):
    assert {"cityscapes", "rain-cityscapes", "voc", "ade20k"} <= set(DATASET_NAMES)
    val = build_dataset("cityscapes", root=cityscapes, split="val", size=(4, 8))
    assert len(val) == 1 and val[0]["image"].shape == (3, 4, 8) and val[0]["mask"].shape == (4, 8)
    custom = Cityscapes(cityscapes, "val", ignore_index=-100)[0]["mask"]
    assert torch.equal(custom, torch.where(_city_train(0) == 255, -100, _city_train(0)))
    frame = "frankfurt_000000_000294"
    _save(
        cityscapes / "gtFine" / "val" / "frankfurt" / f"{frame}_gtFine_labelTrainIds.png",
        _city_train(0).numpy().astype(np.uint8),
    )
    assert torch.equal(Cityscapes(cityscapes, "val", labels="labelTrainIds")[0]["mask"], _city_train(0))
    batch = next(iter(torch.utils.data.DataLoader(Cityscapes(cityscapes, "train"), batch_size=3)))
    assert batch["image"].shape == (3, 3, H, W) and batch["mask"].shape == (3, H, W)


def test_cityscapes_clear_errors(cityscapes, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"splits found: \['train', 'val'\]"):
        Cityscapes(cityscapes, "test")
    (cityscapes / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no Cityscapes images found under .*test"):
        Cityscapes(cityscapes, "test")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        Cityscapes(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"ignore_index"):
        Cityscapes(cityscapes, ignore_index=3)
    with pytest.raises(ValueError, match=r"labels must be one of"):
        Cityscapes(cityscapes, labels="color")
    label = cityscapes / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(FileNotFoundError, match=r"bochum_000000_000313_gtFine_labelIds.png"):
        Cityscapes(cityscapes, "train")
    _save(label, np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError, match=r"is \(8, 16\).*bochum_000000_000313_gtFine_labelIds.png.*\(9, 16\)"):
        Cityscapes(cityscapes, "train")[2]
    _save(label, np.full((H, W), 40, np.uint8))
    with pytest.raises(ValueError, match=r"bochum_000000_000313_gtFine_labelIds.png' holds ids \[40\]"):
        Cityscapes(cityscapes, "train")[2]
    image = cityscapes / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png"
    image.write_bytes(image.read_bytes()[:45])  # truncated inside the pixel data
    with pytest.raises(ValueError, match=r"cannot decode image .*aachen_000000_000019_leftImg8bit.png"):
        Cityscapes(cityscapes, "train")[0]


def test_rain_cityscapes_pairs_rain_with_clean_labels(cityscapes):
    rain = RainCityscapes(cityscapes, "train", with_clean=True, with_depth=True)
    assert len(rain) == 6 and rain.num_classes == 19
    clean = Cityscapes(cityscapes, "train")
    for index in range(6):
        item = rain[index]
        k, r = index // 2, index % 2
        assert item["frame"] == clean.names[k] and item["name"].startswith(clean.names[k] + "_leftImg8bit_rain_")
        assert torch.allclose(item["image"], torch.full((3, H, W), (10 * k + 10 + 100 * (r + 1)) / 255))
        assert torch.equal(item["mask"], clean[k]["mask"]) and torch.equal(item["clean"], clean[k]["image"])
        assert item["rain_depth"].shape == (1, H, W)
        assert torch.allclose(item["rain_depth"][0, 0], torch.arange(W) * 16 / 255)
    assert rain[0]["rain"] == {"alpha": 0.01, "beta": 0.005, "dropsize": 0.01, "pattern": 1.0}
    strong = RainCityscapes(cityscapes, "train", alpha=0.02, size=(4, 8), with_clean=True, with_depth=True)
    assert len(strong) == 3 and all(strong[i]["rain"]["pattern"] == 2.0 for i in range(3))
    assert strong[0]["clean"].shape == (3, 4, 8) and strong[0]["rain_depth"].shape == (1, 4, 8)
    cached = RainCityscapes(cityscapes, "train", alpha=0.02, size=(4, 8), with_clean=True, with_depth=True, cache=True)
    first = cached[1]
    first["clean"].zero_()  # editing an item never touches the cache
    for key in ("image", "clean", "rain_depth"):
        assert (cached[1][key] - strong[1][key]).abs().max() <= 0.5 / 255 + 1e-6
    assert len(build_dataset("rain_cityscapes", root=cityscapes, split="val", pattern=[1, 2])) == 2
    assert parse_rain_name("a_1_2_leftImg8bit_rain_alpha_0.03_beta_0.015_dropsize_0.002_pattern_12")[0] == "a_1_2"


def test_rain_cityscapes_archive_layout_and_errors(cityscapes):
    archive = cityscapes / "leftImg8bit_trainval_rain"
    archive.mkdir()
    (cityscapes / "leftImg8bit_rain").rename(archive / "leftImg8bit_rain")
    (cityscapes / "depth_rain").rename(archive / "depth_rain")
    assert len(RainCityscapes(cityscapes, "val", with_depth=True)) == 2
    (archive / "depth_rain" / "val" / "frankfurt" / "frankfurt_000000_000294_depth_rain.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"rain depth map.*frankfurt_000000_000294_depth_rain.png"):
        RainCityscapes(cityscapes, "val", with_depth=True)
    assert len(RainCityscapes(cityscapes, "val")) == 2  # depth is optional
    with pytest.raises(FileNotFoundError, match=r"no RainCityscapes images found"):
        RainCityscapes(cityscapes, "val", beta=0.5)
    bad = archive / "leftImg8bit_rain" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit_rain_x.png"
    _save(bad, _rgb(0))
    with pytest.raises(ValueError, match=r"not a RainCityscapes image name"):
        RainCityscapes(cityscapes, "val")
    with pytest.raises(FileNotFoundError, match=r"no leftImg8bit_rain/ folder"):
        RainCityscapes(cityscapes / "gtFine")


# ----------------------------------------------------------------------------- VOC
VOC_IDS = ("2007_000032", "2007_000039", "2008_000002")


def _voc_mask(k: int) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[2:6, 2:10] = 15 if k % 2 else 1  # person / aeroplane
    mask[2, 2:10] = 255  # object border
    mask[0, 0] = 20
    return mask


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    base = tmp_path / "data" / "VOCdevkit" / "VOC2012"
    palette = [c for colour in VOC_COLORS for c in colour] + [224, 224, 192] * (256 - len(VOC_COLORS))
    for k, image_id in enumerate(VOC_IDS):
        _save(base / "JPEGImages" / f"{image_id}.jpg", _rgb(40 * k + 40))
        label = Image.fromarray(_voc_mask(k), "P")
        label.putpalette(palette)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        label.save(base / "SegmentationClass" / f"{image_id}.png")
    listing = base / "ImageSets" / "Segmentation"
    listing.mkdir(parents=True)
    (listing / "train.txt").write_text("\n".join(VOC_IDS[:2]) + "\n")
    (listing / "val.txt").write_text(VOC_IDS[2] + "\n")
    return tmp_path / "data"


def test_voc_keeps_ids_and_borders(voc):
    data = VOCSegmentation(voc, "train")
    assert len(data) == 2 and data.names == list(VOC_IDS[:2]) and data.num_classes == 21
    assert data.class_names[15] == "person" and data.palette[15] == (192, 128, 128)
    for k in range(2):
        item = data[k]
        assert torch.equal(item["mask"], torch.from_numpy(_voc_mask(k)).long())  # 255 stays 255
        assert (item["image"] - (40 * k + 40) / 255).abs().max() < 3 / 255  # JPEG: nearly the stored grey
    for root in (voc / "VOCdevkit", voc / "VOCdevkit" / "VOC2012"):
        assert len(VOCSegmentation(root, "val")) == 1
    assert build_dataset("voc", root=voc, split="val", size=(4, 8))[0]["mask"].shape == (4, 8)


def test_voc_clear_errors(voc):
    base = voc / "VOCdevkit" / "VOC2012"
    with pytest.raises(FileNotFoundError, match=r"trainval.txt' not found \(splits found: \['train', 'val'\]\)"):
        VOCSegmentation(voc, "trainval")
    (base / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"empty.txt' lists no image ids"):
        VOCSegmentation(voc, "empty")
    (base / "SegmentationClass" / "2008_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"2008_000002.png"):
        VOCSegmentation(voc, "val")
    (base / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000039.jpg"):
        VOCSegmentation(voc, "train")
    bad = _voc_mask(0)
    bad[0, 1] = 30
    _save(base / "SegmentationClass" / "2007_000032.png", bad)
    (base / "ImageSets" / "Segmentation" / "one.txt").write_text("2007_000032\n")
    with pytest.raises(ValueError, match=r"2007_000032.png' holds ids \[30\]"):
        VOCSegmentation(voc, "one")[0]


# ----------------------------------------------------------------------------- ADE20K
@pytest.fixture()
def ade(tmp_path: Path) -> Path:
    base = tmp_path / "ADEChallengeData2016"
    for folder, prefix, count in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for k in range(count):
            stem = f"{prefix}_{k + 1:08d}"
            _save(base / "images" / folder / f"{stem}.jpg", _rgb(50 * k + 50))
            _save(base / "annotations" / folder / f"{stem}.png", np.tile(np.arange(W, dtype=np.uint8) * 10, (H, 1)))
    return tmp_path


def test_ade20k_reduce_zero_label(ade):
    data = ADE20K(ade, "train")
    assert len(data) == 2 and data.names == ["ADE_train_00000001", "ADE_train_00000002"]
    assert data.num_classes == 150 and data.class_names[0] == "wall" and len(set(data.palette)) == 150
    row = data[0]["mask"][0]
    stored = torch.arange(W) * 10
    assert torch.equal(row, torch.where(stored == 0, 255, stored - 1))  # 0 -> 255, k -> k - 1
    assert (int(row[0]), int(row[1]), int(row[15])) == (255, 9, 149)
    raw = ADE20K(ade / "ADEChallengeData2016", "validation", reduce_zero_label=False)
    assert raw.num_classes == 151 and raw.class_names[0] == "other" and torch.equal(raw[0]["mask"][0], stored)
    assert len(build_dataset("ade20k", root=ade, split="val", size=(4, 8))) == 1


def test_ade20k_clear_errors(ade):
    with pytest.raises(ValueError, match=r"split must be one of"):
        ADE20K(ade, "test")
    with pytest.raises(FileNotFoundError, match=r"no ADEChallengeData2016 folder"):
        ADE20K(ade / "ADEChallengeData2016" / "annotations")
    (ade / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ADE_train_00000002.png"):
        ADE20K(ade, "train")
    _save(
        ade / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png",
        np.full((H, W), 151, np.uint8),
    )
    with pytest.raises(ValueError, match=r"ADE_val_00000001.png' holds ids \[151\]"):
        ADE20K(ade, "val")[0]


# ----------------------------------------------------------------------------- torchvision
def test_torchvision_adapter_with_voc_and_transforms_v2(voc):
    from torchvision import tv_tensors
    from torchvision.datasets import VOCSegmentation as TorchvisionVOC
    from torchvision.datasets import wrap_dataset_for_transforms_v2
    from torchvision.transforms import v2

    theirs = TorchvisionVOC(voc, year="2012", image_set="train", download=False)
    data = TorchvisionSegmentation(theirs, num_classes=21, class_names=VOCSegmentation.class_names)
    ours = VOCSegmentation(voc, "train")
    assert len(data) == 2 and data.num_classes == 21 and data.class_names[15] == "person"
    for k in range(2):
        assert torch.equal(data[k]["mask"], ours[k]["mask"]) and torch.allclose(data[k]["image"], ours[k]["image"])
    pipeline = v2.Compose([v2.ToImage(), v2.Resize((4, 8))])
    transformed = wrap_dataset_for_transforms_v2(TorchvisionVOC(voc, image_set="train", transforms=pipeline))
    assert isinstance(transformed[1][1], tv_tensors.Mask)
    item = TorchvisionSegmentation(transformed, num_classes=21)[1]
    assert item["image"].shape == (3, 4, 8) and item["image"].dtype == torch.float32 and item["image"].max() <= 1
    assert item["mask"].dtype == torch.int64 and set(item["mask"].unique().tolist()) <= {0, 15, 20, 255}
    pairs = [(tv_tensors.Image(torch.zeros(1, 4, 4)), tv_tensors.Mask(torch.full((1, 4, 4), 2)))]
    gray = TorchvisionSegmentation(pairs, size=(2, 2))[0]
    assert gray["image"].shape == (3, 2, 2) and torch.equal(gray["mask"], torch.full((2, 2), 2))


def test_torchvision_adapter_errors():
    image = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*Normalize"):
        TorchvisionSegmentation([(image * 3 - 1, torch.zeros(4, 4))])[0]
    with pytest.raises(ValueError, match=r"image is \(4, 4\).*mask is \(4, 5\)"):
        TorchvisionSegmentation([(image, torch.zeros(4, 5))])[0]
    with pytest.raises(ValueError, match=r"item 0 .*ids \[7\]"):
        TorchvisionSegmentation([(image, torch.full((4, 4), 7))], num_classes=3)[0]
    with pytest.raises(ValueError, match=r"\(image, target\) pair"):
        TorchvisionSegmentation([image])[0]
    with pytest.raises(TypeError, match=r"len\(\) and indexing"):
        TorchvisionSegmentation(object())
    with pytest.raises(IndexError):
        TorchvisionSegmentation([(image, torch.zeros(4, 4))])[1]


# ----------------------------------------------------------------------------- ids no loader may turn into void
def _save16(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint16)).save(path)


@pytest.mark.parametrize("name", ["cityscapes", "rain-cityscapes", "voc", "ade20k"])
@pytest.mark.parametrize("bad", [250, 256, 300])
def test_every_loader_refuses_undefined_ids_naming_the_file(name, bad, cityscapes, voc, ade):
    label = {
        "cityscapes": cityscapes / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png",
        "rain-cityscapes": cityscapes / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png",
        "voc": voc / "VOCdevkit" / "VOC2012" / "SegmentationClass" / "2007_000032.png",
        "ade20k": ade / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png",
    }[name]
    labels = np.array(Image.open(label)).astype(np.int64)
    labels[1, 2] = bad
    _save16(label, labels)  # 16-bit: the id is stored whole, never truncated to 8 bits
    roots = {"cityscapes": cityscapes, "rain-cityscapes": cityscapes, "voc": voc, "ade20k": ade}
    with pytest.raises(ValueError, match=rf"{label.name}' holds ids \[{bad}\] that \w+ does not define \(it defines"):
        build_dataset(name, root=roots[name], split="train")[0]


def test_sixteen_bit_label_files_load_like_eight_bit_ones(cityscapes):
    label = cityscapes / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    _save16(label, np.array(Image.open(label)))
    assert torch.equal(Cityscapes(cityscapes, "train")[0]["mask"], _city_train(0))


@pytest.mark.parametrize("name", ["cityscapes", "rain-cityscapes", "rain-clean", "voc", "voc-list", "ade20k"])
def test_every_loader_refuses_fifo_image_files(name, cityscapes, voc, ade):
    # issue 22: an image file that is a FIFO blocked forever.
    voc_base = voc / "VOCdevkit" / "VOC2012"
    path, load = {
        "cityscapes": (
            cityscapes / "leftImg8bit" / "train" / "aachen" / "aachen_000000_000019_leftImg8bit.png",
            lambda: Cityscapes(cityscapes, "train")[0],
        ),
        "rain-cityscapes": (
            cityscapes
            / "leftImg8bit_rain"
            / "val"
            / "frankfurt"
            / f"frankfurt_000000_000294_leftImg8bit_rain_{RAIN[0]}.png",
            lambda: RainCityscapes(cityscapes, "val", with_clean=True)[0],
        ),
        "rain-clean": (
            cityscapes / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png",
            lambda: RainCityscapes(cityscapes, "val", with_clean=True)[0],
        ),
        "voc": (voc_base / "JPEGImages" / "2007_000032.jpg", lambda: VOCSegmentation(voc, "train")[0]),
        "voc-list": (voc_base / "ImageSets" / "Segmentation" / "train.txt", lambda: VOCSegmentation(voc, "train")),
        "ade20k": (
            ade / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000001.jpg",
            lambda: ADE20K(ade, "train")[0],
        ),
    }[name]
    error = error_reading_fifo(path, load)
    assert isinstance(error, ValueError) and f"{path}: not a regular file (a FIFO)" in str(error)


def test_torchvision_adapter_checks_ids_against_the_class_names_it_was_given():
    # issue 22: with class names (e.g. torchvision's dataset.classes) but no num_classes, nothing was checked.
    image = torch.rand(3, 4, 4)
    mask = torch.zeros(4, 4, dtype=torch.long)
    mask[0, 0] = 77
    with pytest.raises(ValueError, match=r"item 0 .*ids \[77\] outside \[0, 3\)"):
        TorchvisionSegmentation([(image, mask)], class_names=("a", "b", "c"))[0]
    mask[0, 0] = -1
    with pytest.raises(ValueError, match=r"ids \[-1\] outside \[0, \.\.\.\)"):
        TorchvisionSegmentation([(image, mask)])[0]


def test_torchvision_adapter_maps_cityscapes_label_ids_with_the_official_table():
    stored = torch.from_numpy(np.tile(CITY_IDS, (H, 1))).long()
    pairs = [(torch.rand(3, H, W), stored)]
    data = TorchvisionSegmentation(pairs, class_names=CITYSCAPES_CLASSES, label_map=CITYSCAPES_TRAIN_IDS)
    assert torch.equal(data[0]["mask"], torch.from_numpy(np.tile(CITY_TRAIN, (H, 1))).long())
    for bad in (34, 255, 1000, -1):
        stored[0, 0] = bad
        with pytest.raises(ValueError, match=rf"ids \[{bad}\] that label_map does not define"):
            data[0]
    with pytest.raises(ValueError, match=r"label_map\[7\] must be a class id in 0..18"):
        TorchvisionSegmentation(pairs, class_names=CITYSCAPES_CLASSES, label_map={7: 19})


# ----------------------------------------------------------------------------- benchmark
@pytest.mark.parametrize("name", ["cityscapes", "rain-cityscapes", "voc", "ade20k"])
def test_benchmark_reads_class_names_of_each_new_data_set(name, cityscapes, voc, ade):
    from segrobust.benchmark import run_benchmark

    roots = {"cityscapes": cityscapes, "rain-cityscapes": cityscapes, "voc": voc, "ade20k": ade}
    data = build_dataset(name, root=roots[name], split="train", size=(8, 8))
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, data.num_classes, 1).eval()
    results = run_benchmark(model, data, attacks="none", rain="none", batch_size=2, progress=False, write_report=False)
    assert results.class_names == list(data.class_names) and len(results.class_names) == data.num_classes


@pytest.mark.parametrize("name", ["cityscapes", "rain-cityscapes", "voc", "ade20k"])
def test_cli_benchmark_runs_on_each_new_data_set(name, cityscapes, voc, ade, tmp_path, capsys):
    """`segrobust benchmark --fast --dataset NAME --data-root FIXTURE` on a tree in the data set's own layout."""
    import json

    from segrobust.cli import main

    roots = {"cityscapes": cityscapes, "rain-cityscapes": cityscapes, "voc": voc, "ade20k": ade}
    num_classes = build_dataset(name, root=roots[name], split="train", size=(8, 8)).num_classes
    args = [
        "benchmark",
        "--fast",
        "--dataset",
        name,
        "--data-root",
        str(roots[name]),
        "--size",
        "32x32",
        "--model",
        "unet:resnet18:encoder_depth=3:decoder_channels=16,8,8",
        "--num-classes",
        str(num_classes),
        "--attacks",
        "naa",
        "--rain",
        "none",
        "--eps",
        "4/255",
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    assert main(args) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["class_names"]) == num_classes
    assert {row["key"] for row in results["rows"]} >= {"clean", "naa"}


# ----------------------------------------------------------------------------- properties
@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(sorted(CITYSCAPES_TRAIN_IDS)), min_size=1, max_size=64))
def test_cityscapes_table_maps_every_stored_id(stored):
    table = label_lookup(CITYSCAPES_TRAIN_IDS, ignore_index=255)
    expected = [255 if CITYSCAPES_TRAIN_IDS[i] is None else CITYSCAPES_TRAIN_IDS[i] for i in stored]
    assert table[np.array(stored)].tolist() == expected


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0001, 1.0), st.floats(0.0001, 1.0), st.floats(0.0001, 1.0), st.integers(1, 99))
def test_rain_names_round_trip(alpha, beta, dropsize, pattern):
    stem = f"ulm_000001_000019_leftImg8bit_rain_alpha_{alpha}_beta_{beta}_dropsize_{dropsize}_pattern_{pattern}"
    frame, params = parse_rain_name(stem)
    assert frame == "ulm_000001_000019"
    assert params == {"alpha": alpha, "beta": beta, "dropsize": dropsize, "pattern": float(pattern)}


def test_palettes_are_distinct():
    assert len(set(pascal_palette(256))) == 256 and pascal_palette(1) == ((0, 0, 0),)
