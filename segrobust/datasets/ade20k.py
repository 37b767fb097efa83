"""ADE20K as released for the MIT Scene Parsing Benchmark (ADEChallengeData2016, 150 classes).

Layout (``root`` is the folder holding ``ADEChallengeData2016/`` or that folder itself)::

    ADEChallengeData2016/images/training/ADE_train_<n>.jpg
    ADEChallengeData2016/images/validation/ADE_val_<n>.jpg
    ADEChallengeData2016/annotations/{training,validation}/<same stem>.png   ids 0..150, 0 = other

With ``reduce_zero_label`` (the standard protocol) id 0 ("other", not a
class) becomes ``ignore_index`` and ids ``1..150`` become ``0..149``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from segrobust.datasets.functional import IGNORE_INDEX
from segrobust.datasets.labeled import (
    LabeledPairs,
    PathLike,
    check_ignore_index,
    check_pairs_exist,
    check_root,
    label_lookup,
    pascal_palette,
)

__all__ = ["ADE20K", "ADE20K_CLASSES", "ADE20K_COLORS"]

#: The 150 ADE20K scene-parsing classes (first name of each entry of objectInfo150), in id order after
#: ``reduce_zero_label`` (stored id ``k + 1``).
ADE20K_CLASSES: Tuple[str, ...] = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
#: A distinct colour per class for previews: the PASCAL VOC colour map, entry ``k + 1`` for class ``k``
#: (so no class is black). ADE20K itself ships no official palette.
ADE20K_COLORS: Tuple[Tuple[int, int, int], ...] = pascal_palette(len(ADE20K_CLASSES) + 1)[1:]

_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
_LAYOUT = (
    "expected the ADE20K scene-parsing layout: <root>/ADEChallengeData2016/images/{training,validation}/*.jpg "
    "and <root>/ADEChallengeData2016/annotations/{training,validation}/*.png"
)


def _ade_root(root: Path) -> Path:
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images").is_dir():
            return candidate
    raise FileNotFoundError(f"no ADEChallengeData2016 folder (with images/) found in {str(root)!r}; {_LAYOUT}")


class ADE20K(LabeledPairs):
    """ADE20K scene parsing (ADEChallengeData2016): 150 indoor and outdoor classes.

    Args:
        root: the folder holding ``ADEChallengeData2016/`` (or that folder).
        split: ``"train"`` / ``"training"`` or ``"val"`` / ``"validation"``.
        size: ``None`` keeps each image's size (they differ: batch with a
            ``transform`` or a ``size``); ``(H, W)`` resizes.
        reduce_zero_label: map stored 0 ("other") to ``ignore_index`` and
            ``k`` to ``k - 1`` (150 classes, the standard protocol); ``False``
            keeps the stored ids (151 classes, class 0 named ``"other"``).
        ignore_index, cache, transform: as in [Cityscapes][segrobust.datasets.Cityscapes].

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64, "name": str (file stem)}``.

    Examples:
        >>> ade = ADE20K("/data", split="val", size=(256, 256))  # doctest: +SKIP
        >>> ade.num_classes, ade.class_names[0]  # doctest: +SKIP
        (150, 'wall')
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        size: Optional[Sequence[int]] = None,
        reduce_zero_label: bool = True,
        ignore_index: int = IGNORE_INDEX,
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.reduce_zero_label = bool(reduce_zero_label)
        self.class_names = ADE20K_CLASSES if self.reduce_zero_label else ("other", *ADE20K_CLASSES)
        self.palette = ADE20K_COLORS if self.reduce_zero_label else ((0, 0, 0), *ADE20K_COLORS)
        ignore_index = check_ignore_index(ignore_index, len(self.class_names))
        self.root = _ade_root(check_root(root, "ADE20K", _LAYOUT))
        self.split = split
        images_dir = self.root / "images" / _SPLITS[split]
        if not images_dir.is_dir():
            raise FileNotFoundError(f"ADE20K image folder {str(images_dir)!r} not found; {_LAYOUT}")
        images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        annotations = self.root / "annotations" / _SPLITS[split]
        pairs = [(image, annotations / f"{image.stem}.png") for image in images]
        check_pairs_exist(pairs, "ADE20K", images_dir, _LAYOUT)
        if self.reduce_zero_label:
            mapping = {0: None, **{k: k - 1 for k in range(1, len(ADE20K_CLASSES) + 1)}}
        else:
            mapping = {k: k for k in range(len(ADE20K_CLASSES) + 1)}
        lookup = label_lookup(mapping, ignore_index)
        super().__init__(pairs, [image.stem for image in images], lookup, size, ignore_index, cache, transform)
