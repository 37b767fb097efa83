"""PASCAL VOC 2012 segmentation in its official folder layout (21 classes, 255 = ignore).

Layout (``root`` may be the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself
or ``VOCdevkit/VOC2012/``)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNGs: 0..20, 255 on object borders
    VOCdevkit/VOC2012/ImageSets/Segmentation/<split>.txt one <id> per line (train, val, trainval)
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
    read_list_file,
)

__all__ = ["VOC_CLASSES", "VOC_COLORS", "VOCSegmentation"]

#: The 20 PASCAL VOC object classes after ``background``, in id order.
VOC_CLASSES: Tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
#: The official VOC colour of each class (the palette stored in the annotation PNGs).
VOC_COLORS: Tuple[Tuple[int, int, int], ...] = pascal_palette(len(VOC_CLASSES))

_LAYOUT = (
    "expected the PASCAL VOC 2012 layout: <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg, "
    "SegmentationClass/<id>.png and ImageSets/Segmentation/<split>.txt"
)


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    raise FileNotFoundError(f"no VOC2012 folder (with JPEGImages/ and ImageSets/) found in {str(root)!r}; {_LAYOUT}")


def _read_ids(listing: Path) -> list:
    if not listing.exists():
        found = sorted(p.stem for p in listing.parent.glob("*.txt")) if listing.parent.is_dir() else []
        raise FileNotFoundError(f"VOC split file {str(listing)!r} not found (splits found: {found}); {_LAYOUT}")
    ids = [line.split()[0] for line in read_list_file(listing, "VOC split file") if line.strip()]
    if not ids:
        raise ValueError(f"VOC split file {str(listing)!r} lists no image ids; {_LAYOUT}")
    return ids


class VOCSegmentation(LabeledPairs):
    """PASCAL VOC 2012 semantic segmentation: 20 object classes plus background.

    Object borders are stored as 255 and stay ``ignore_index``.

    Args:
        root: the folder holding ``VOCdevkit/`` (or ``VOCdevkit/`` or ``VOC2012/`` itself).
        split: a list in ``ImageSets/Segmentation/`` (``"train"``, ``"val"``, ``"trainval"``).
        size: ``None`` keeps each image's size (they differ: batch with a
            ``transform`` or a ``size``); ``(H, W)`` resizes.
        ignore_index: label of the border pixels (stored 255).
        mask_folder: the label folder, ``"SegmentationClass"`` or e.g.
            ``"SegmentationClassAug"`` (SBD-augmented labels, same ids).
        cache, transform: as in [Cityscapes][segrobust.datasets.Cityscapes].

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64 ids 0..20 or
        ignore_index, "name": str (the image id)}``.

    Examples:
        >>> voc = VOCSegmentation("/data", split="val", size=(256, 256))  # doctest: +SKIP
        >>> voc.class_names[15], voc.num_classes  # doctest: +SKIP
        ('person', 21)
    """

    class_names = VOC_CLASSES
    palette = VOC_COLORS

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        size: Optional[Sequence[int]] = None,
        ignore_index: int = IGNORE_INDEX,
        mask_folder: str = "SegmentationClass",
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
    ) -> None:
        ignore_index = check_ignore_index(ignore_index, len(VOC_CLASSES))
        if not isinstance(split, str) or not split or "/" in split or "\\" in split:
            raise ValueError(f"split must be a split name such as 'train' or 'val', got {split!r}")
        self.root = _voc_root(check_root(root, "PASCAL VOC", _LAYOUT))
        self.split = split
        ids = _read_ids(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")
        pairs = [(self.root / "JPEGImages" / f"{i}.jpg", self.root / mask_folder / f"{i}.png") for i in ids]
        missing_images = [str(image) for image, _ in pairs if not image.exists()]
        if missing_images:
            raise FileNotFoundError(
                f"{len(missing_images)} VOC image(s) listed in {split}.txt are missing, e.g. {missing_images[0]!r}"
            )
        check_pairs_exist(pairs, "VOC", self.root, _LAYOUT)
        lookup = label_lookup({**{k: k for k in range(len(VOC_CLASSES))}, 255: None}, ignore_index)
        super().__init__(pairs, ids, lookup, size, ignore_index, cache, transform)
