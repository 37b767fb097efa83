"""Cityscapes and RainCityscapes in their official folder layouts (19 training classes).

Cityscapes under ``root``::

    leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<frame>_gtFine_labelIds.png

where ``<frame>`` is ``<city>_<sequence>_<frame number>``. The stored label
ids (0..33) are mapped to the 19 training ids with the official table (road
= 0 ... bicycle = 18); every other id (void, ego vehicle, parking, guard
rail, caravan, trailer, ...) becomes ``ignore_index``.

RainCityscapes adds, under the same ``root`` (or under
``root/leftImg8bit_trainval_rain/`` as unpacked from its archive)::

    leftImg8bit_rain/<split>/<city>/<frame>_leftImg8bit_rain_alpha_<a>_beta_<b>_dropsize_<d>_pattern_<p>.png
    depth_rain/<split>/<city>/<frame>_depth_rain.png          (optional)

Each rainy image is paired with the clean frame's ``gtFine`` labels.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from segrobust.datasets._image_files import decode, image_size, load_rgb, to_image_tensor
from segrobust.datasets.functional import IGNORE_INDEX, check_index, resize_image
from segrobust.datasets.labeled import (
    LabeledPairs,
    PathLike,
    check_ignore_index,
    check_pairs_exist,
    check_root,
    check_split_folder,
    label_lookup,
)

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_COLORS",
    "CITYSCAPES_TRAIN_IDS",
    "Cityscapes",
    "RainCityscapes",
    "parse_rain_name",
]

#: The 19 Cityscapes training classes, in train-id order.
CITYSCAPES_CLASSES: Tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
#: The official colour of each training class.
CITYSCAPES_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
#: Official label id -> training id (``None``: ignored). Ids 0..33 are all the stored ones.
CITYSCAPES_TRAIN_IDS: Dict[int, Optional[int]] = {
    0: None,
    1: None,
    2: None,
    3: None,
    4: None,
    5: None,
    6: None,  # unlabeled .. ground
    7: 0,
    8: 1,  # road, sidewalk
    9: None,
    10: None,  # parking, rail track
    11: 2,
    12: 3,
    13: 4,  # building, wall, fence
    14: None,
    15: None,
    16: None,  # guard rail, bridge, tunnel
    17: 5,  # pole
    18: None,  # polegroup
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,  # traffic light .. bus
    29: None,
    30: None,  # caravan, trailer
    31: 16,
    32: 17,
    33: 18,  # train, motorcycle, bicycle
}

_LAYOUT = (
    "expected the Cityscapes layout: <root>/leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png and "
    "<root>/gtFine/<split>/<city>/<frame>_gtFine_labelIds.png"
)
_RAIN_LAYOUT = (
    "expected the RainCityscapes layout: <root>/leftImg8bit_rain/<split>/<city>/"
    "<frame>_leftImg8bit_rain_alpha_<a>_beta_<b>_dropsize_<d>_pattern_<p>.png (or the same under "
    "<root>/leftImg8bit_trainval_rain/) with the Cityscapes labels in <root>/gtFine/<split>/<city>/"
    "<frame>_gtFine_labelIds.png"
)
_LABEL_SUFFIXES = {"labelIds": "_gtFine_labelIds.png", "labelTrainIds": "_gtFine_labelTrainIds.png"}
_RAIN_NAME = re.compile(
    r"^(?P<frame>.+)_leftImg8bit_rain_alpha_(?P<alpha>[0-9.]+)_beta_(?P<beta>[0-9.]+)"
    r"_dropsize_(?P<dropsize>[0-9.]+)_pattern_(?P<pattern>\d+)$"
)
RainValues = Optional[Union[float, Collection[float]]]


def _lookup(labels: str, ignore_index: int) -> np.ndarray:
    if labels == "labelIds":
        return label_lookup(CITYSCAPES_TRAIN_IDS, ignore_index)
    # labelTrainIds files (made by cityscapesScripts' createTrainIdLabelImgs) store 0..18 and 255.
    return label_lookup({**{k: k for k in range(len(CITYSCAPES_CLASSES))}, 255: None}, ignore_index)


def _check_labels_kind(labels: object) -> str:
    if labels not in _LABEL_SUFFIXES:
        raise ValueError(f"labels must be one of {sorted(_LABEL_SUFFIXES)}, got {labels!r}")
    return str(labels)


def _label_path(root: Path, split: str, image: Path, frame: str, labels: str) -> Path:
    """The label file of ``frame``, in the same ``<city>`` folder as its ``image``."""
    return root / "gtFine" / split / image.parent.name / f"{frame}{_LABEL_SUFFIXES[labels]}"


class Cityscapes(LabeledPairs):
    """Cityscapes fine annotations: street images with the 19 training classes.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` or ``"test"`` (a folder of ``leftImg8bit/``).
        size: ``None`` keeps 1024x2048; ``(H, W)`` resizes (antialiased bilinear
            image, nearest-neighbour mask).
        labels: ``"labelIds"`` (the official files, mapped to training ids) or
            ``"labelTrainIds"`` (files already holding 0..18 and 255).
        ignore_index: label of the pixels outside the 19 classes.
        cache: keep decoded (and resized) uint8 data in memory.
        transform: optional callable applied to each item dict.

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64 train ids 0..18
        or ignore_index, "name": str}`` (``name`` is ``<city>_<sequence>_<frame>``).

    Examples:
        >>> data = Cityscapes("/data/cityscapes", split="val", size=(256, 512))  # doctest: +SKIP
        >>> data.class_names[13], data[0]["mask"].shape  # doctest: +SKIP
        ('car', torch.Size([256, 512]))
    """

    class_names = CITYSCAPES_CLASSES
    palette = CITYSCAPES_COLORS

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        size: Optional[Sequence[int]] = None,
        labels: str = "labelIds",
        ignore_index: int = IGNORE_INDEX,
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
    ) -> None:
        ignore_index = check_ignore_index(ignore_index, len(CITYSCAPES_CLASSES))
        self.labels = _check_labels_kind(labels)
        self.root = check_root(root, "Cityscapes", _LAYOUT)
        self.split = split
        images_dir = check_split_folder(self.root / "leftImg8bit", split, "Cityscapes", _LAYOUT)
        images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
        frames = [p.name[: -len("_leftImg8bit.png")] for p in images]
        pairs = [
            (image, _label_path(self.root, split, image, frame, self.labels)) for image, frame in zip(images, frames)
        ]
        check_pairs_exist(pairs, "Cityscapes", images_dir, _LAYOUT)
        super().__init__(pairs, frames, _lookup(self.labels, ignore_index), size, ignore_index, cache, transform)


def parse_rain_name(stem: str) -> Tuple[str, Dict[str, float]]:
    """Split a RainCityscapes file stem into the clean frame name and its rain parameters.

    Examples:
        >>> parse_rain_name("aachen_000000_000019_leftImg8bit_rain_alpha_0.01_beta_0.005_dropsize_0.01_pattern_1")
        ('aachen_000000_000019', {'alpha': 0.01, 'beta': 0.005, 'dropsize': 0.01, 'pattern': 1.0})
    """
    match = _RAIN_NAME.match(stem)
    if match is None:
        raise ValueError(
            f"{stem!r} is not a RainCityscapes image name "
            "(<frame>_leftImg8bit_rain_alpha_<a>_beta_<b>_dropsize_<d>_pattern_<p>)"
        )
    return match["frame"], {key: float(match[key]) for key in ("alpha", "beta", "dropsize", "pattern")}


def _rain_root(root: Path) -> Path:
    """The folder holding ``leftImg8bit_rain/``: ``root`` itself or the unpacked archive inside it."""
    for candidate in (root, root / "leftImg8bit_trainval_rain"):
        if (candidate / "leftImg8bit_rain").is_dir():
            return candidate
    raise FileNotFoundError(f"no leftImg8bit_rain/ folder in {str(root)!r}; {_RAIN_LAYOUT}")


def _wanted(value: float, selection: RainValues) -> bool:
    if selection is None:
        return True
    allowed = [selection] if isinstance(selection, (int, float)) else list(selection)
    return any(abs(value - float(a)) <= 1e-9 * max(1.0, abs(value)) for a in allowed)


class RainCityscapes(LabeledPairs):
    """RainCityscapes: Cityscapes frames with rendered rain streaks and haze, with their clean labels.

    Each rainy image is paired with the clean frame's ``gtFine`` labels (mapped
    to the 19 training ids as in [Cityscapes][segrobust.datasets.Cityscapes]); optionally the clean
    image and the depth map the rain was rendered with come along, so real
    rain can be compared with clean images frame by frame.

    Args:
        root: the Cityscapes folder holding ``gtFine/`` (and ``leftImg8bit/``
            for ``with_clean``) and ``leftImg8bit_rain/`` (directly or in
            ``leftImg8bit_trainval_rain/``).
        split: ``"train"`` or ``"val"``.
        size, labels, ignore_index, cache, transform: as in [Cityscapes][segrobust.datasets.Cityscapes].
        with_clean: add ``"clean"``, the rain-free frame.
        with_depth: add ``"rain_depth"`` from ``depth_rain/`` (missing file: ``FileNotFoundError``).
        alpha, beta, dropsize, pattern: keep only images with these rain
            parameters (a value or a collection of values; ``None`` keeps all).

    Items:
        ``{"image": (3, H, W) rainy, "mask": (H, W) int64, "name": str (file stem),
        "frame": str (clean frame name), "rain": {"alpha", "beta", "dropsize",
        "pattern"} floats, ["clean": (3, H, W)], ["rain_depth": (1, H, W) float32, the
        stored values divided by the file's maximum code (255 or 65535), as stored:
        not metres]}``.

    Examples:
        >>> rain = RainCityscapes("/data/cityscapes", "val", size=(256, 512), with_clean=True)  # doctest: +SKIP
        >>> item = rain[0]; item["rain"]["alpha"], item["clean"].shape  # doctest: +SKIP
        (0.01, torch.Size([3, 256, 512]))
    """

    class_names = CITYSCAPES_CLASSES
    palette = CITYSCAPES_COLORS

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        size: Optional[Sequence[int]] = None,
        labels: str = "labelIds",
        ignore_index: int = IGNORE_INDEX,
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
        with_clean: bool = False,
        with_depth: bool = False,
        alpha: RainValues = None,
        beta: RainValues = None,
        dropsize: RainValues = None,
        pattern: RainValues = None,
    ) -> None:
        ignore_index = check_ignore_index(ignore_index, len(CITYSCAPES_CLASSES))
        self.labels = _check_labels_kind(labels)
        self.root = check_root(root, "RainCityscapes", _RAIN_LAYOUT)
        self.split = split
        rain_root = _rain_root(self.root)
        images_dir = check_split_folder(rain_root / "leftImg8bit_rain", split, "RainCityscapes", _RAIN_LAYOUT)
        selection = {"alpha": alpha, "beta": beta, "dropsize": dropsize, "pattern": pattern}
        self.frames: List[str] = []
        self.rain: List[Dict[str, float]] = []
        images = []
        for path in sorted(images_dir.glob("*/*_leftImg8bit_rain_*.png")):
            frame, params = parse_rain_name(path.stem)
            if all(_wanted(params[key], selection[key]) for key in selection):
                images.append(path)
                self.frames.append(frame)
                self.rain.append(params)
        pairs = [
            (image, _label_path(self.root, split, image, frame, self.labels))
            for image, frame in zip(images, self.frames)
        ]
        check_pairs_exist(pairs, "RainCityscapes", images_dir, _RAIN_LAYOUT)
        super().__init__(
            pairs, [p.stem for p in images], _lookup(self.labels, ignore_index), size, ignore_index, cache, transform
        )
        self.with_clean, self.with_depth = bool(with_clean), bool(with_depth)
        self._extra_store: Dict[int, Dict[str, torch.Tensor]] = {}
        cities = [image.parent.name for image in images]
        self.clean_paths = [
            self.root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png"
            for city, frame in zip(cities, self.frames)
        ]
        self.depth_paths = [
            rain_root / "depth_rain" / split / city / f"{frame}_depth_rain.png"
            for city, frame in zip(cities, self.frames)
        ]
        for wanted, paths, what in (
            (self.with_clean, self.clean_paths, "clean image"),
            (self.with_depth, self.depth_paths, "rain depth map"),
        ):
            missing = [str(p) for p in paths if not p.exists()] if wanted else []
            if missing:
                raise FileNotFoundError(f"{len(missing)} RainCityscapes {what}(s) missing, e.g. {missing[0]!r}")

    def _extras(self, index: int) -> Dict[str, torch.Tensor]:
        """The clean image and/or rain depth of item ``index`` at the output size (kept when ``cache``)."""
        if index in self._extra_store:
            return {key: value.clone() for key, value in self._extra_store[index].items()}
        reference = image_size(self.pairs[index][0])
        extras = {}
        if self.with_clean:
            # Quantised like the cached rainy images, so rainy and clean frames stay comparable.
            clean = self._checked(
                self.clean_paths[index], reference, "clean image", lambda p: to_image_tensor(load_rgb(p))
            )
            extras["clean"] = (clean * 255.0).round() / 255.0 if self.cache else clean
        if self.with_depth:
            extras["rain_depth"] = self._checked(self.depth_paths[index], reference, "rain depth map", _load_depth)
        if self.cache:
            self._extra_store[index] = extras
            return self._extras(index)
        return extras

    def _checked(
        self, path: Path, reference: Tuple[int, int], what: str, load: Callable[[Path], torch.Tensor]
    ) -> torch.Tensor:
        tensor = load(path)
        if tuple(tensor.shape[-2:]) != reference:
            raise ValueError(
                f"{what} {str(path)!r} is {tuple(tensor.shape[-2:])} (H, W) but its rainy image is {reference}"
            )
        return tensor if self.size is None else resize_image(tensor, self.size)

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self))
        image, mask = self.load_pair(index)
        item = {
            "image": image,
            "mask": mask,
            "name": self.names[index],
            "frame": self.frames[index],
            "rain": dict(self.rain[index]),
        }
        if self.with_clean or self.with_depth:
            item.update(self._extras(index))
        return self.transform(item) if self.transform is not None else item


def _load_depth(path: Path) -> torch.Tensor:
    """``(1, H, W)`` float32: the stored grey levels divided by the largest code of the file's bit depth."""

    def convert(img) -> np.ndarray:
        if img.mode in ("I;16", "I"):
            return np.array(img, dtype=np.float32) / 65535.0
        return np.array(img.convert("L"), dtype=np.float32) / 255.0

    return torch.from_numpy(decode(path, "rain depth map", convert))[None]
