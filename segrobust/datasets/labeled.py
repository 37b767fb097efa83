"""The engine behind the standard benchmark layouts: image/label file pairs plus a label table.

Cityscapes, PASCAL VOC and ADE20K all store one image and one single-channel
label PNG per frame; they differ in where the files live and in what the
stored ids mean. [LabeledPairs][segrobust.datasets.LabeledPairs] takes the list of file pairs and a
lookup table from stored id to training class id (or ``ignore_index``), and
shares decoding, resizing, caching and input checks with CamVid and
[FolderDataset][segrobust.datasets.FolderDataset].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from segrobust.datasets._image_files import ImagePairStore
from segrobust.datasets.functional import check_index, check_size
from segrobust.fileio import read_bytes_limited

__all__ = [
    "UNDEFINED",
    "LabeledPairs",
    "check_defined_ids",
    "check_ignore_index",
    "label_lookup",
    "pascal_palette",
]

PathLike = Union[str, "os.PathLike[str]"]
RGB = Tuple[int, int, int]
#: Marks stored ids that the data set does not define (a file holding one is rejected).
UNDEFINED = -1


def label_lookup(mapping: Mapping[int, Optional[int]], ignore_index: int, size: int = 256) -> np.ndarray:
    """A lookup table from stored label id to class id: ``None`` values become ``ignore_index``.

    Ids absent from ``mapping`` are ``UNDEFINED`` (-1).

    Examples:
        >>> label_lookup({0: None, 1: 0, 2: 1}, ignore_index=255, size=4).tolist()
        [255, 0, 1, -1]
    """
    table = np.full(size, UNDEFINED, dtype=np.int64)
    for stored, target in mapping.items():
        table[stored] = ignore_index if target is None else target
    return table


def _ranges(ids: np.ndarray) -> str:
    """``[0, 1, 2, 5, 255]`` as ``"0..2, 5, 255"``."""
    parts, start = [], None
    for k, value in enumerate(ids.tolist()):
        if start is None:
            start = value
        if k + 1 == len(ids) or ids[k + 1] != value + 1:
            parts.append(str(value) if value == start else f"{start}..{value}")
            start = None
    return ", ".join(parts)


def check_defined_ids(labels: np.ndarray, lookup: np.ndarray, path: Path, owner: str) -> None:
    """Refuse a label file holding a stored id that ``lookup`` marks ``UNDEFINED`` (or lies outside it).

    The error names the file, up to ten offending ids and the ids the data set
    defines, so an undefined id never turns silently into void (or a class).

    Examples:
        >>> table = label_lookup({0: 0, 1: 1, 11: None}, ignore_index=255, size=12)
        >>> check_defined_ids(np.array([[0, 11]]), table, Path("a.png"), "CamVid")
        >>> check_defined_ids(np.array([[0, 77, 300]]), table, Path("a.png"), "CamVid")
        Traceback (most recent call last):
        ...
        ValueError: label file 'a.png' holds ids [77, 300] that CamVid does not define (it defines 0..1, 11)
    """
    outside = (labels < 0) | (labels >= len(lookup))
    undefined = outside.copy()
    undefined[~outside] = lookup[labels[~outside]] == UNDEFINED
    if undefined.any():
        values = np.unique(labels[undefined])[:10].tolist()
        defined = _ranges(np.flatnonzero(lookup != UNDEFINED))
        raise ValueError(
            f"label file {str(path)!r} holds ids {values} that {owner} does not define (it defines {defined})"
        )


def pascal_palette(count: int) -> Tuple[RGB, ...]:
    """The PASCAL VOC colour map: colour ``k`` spreads the bits of ``k`` over R, G and B, high bits first.

    Examples:
        >>> pascal_palette(4)
        ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
    """
    colours = []
    for k in range(count):
        r = g = b = 0
        c = k
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


#: Largest split list file read (CamVid's and VOC's are tens of kB).
MAX_LIST_BYTES = 64 * 2**20


def read_list_file(path: Path, what: str) -> List[str]:
    """The lines of a split list, read as a regular file of at most `MAX_LIST_BYTES` (FIFOs refused)."""
    data = read_bytes_limited(path, what, MAX_LIST_BYTES)
    return data.decode("utf-8", errors="replace").splitlines()


def check_ignore_index(ignore_index: object, num_classes: int) -> int:
    """``ignore_index`` must be an int outside the class ids ``0..num_classes - 1``.

    Examples:
        >>> check_ignore_index(255, 19)
        255
    """
    if (
        not isinstance(ignore_index, (int, np.integer))
        or isinstance(ignore_index, bool)
        or (0 <= ignore_index < num_classes)
    ):
        raise ValueError(
            f"ignore_index must be an int outside the class ids 0..{num_classes - 1}, got {ignore_index!r}"
        )
    return int(ignore_index)


def check_root(root: object, what: str, layout: str) -> Path:
    """An existing folder, or a ``FileNotFoundError`` naming it and the expected ``layout``."""
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path to the {what} folder, got {type(root).__name__}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} root {str(path)!r} does not exist or is not a folder; {layout}")
    return path


def check_split_folder(folder: Path, split: object, what: str, layout: str) -> Path:
    """``folder/split`` when it exists, else a ``FileNotFoundError`` listing the splits found."""
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise ValueError(f"split must be a split name such as 'train' or 'val', got {split!r}")
    path = folder / split
    if not path.is_dir():
        found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        raise FileNotFoundError(f"{what} split folder {str(path)!r} not found (splits found: {found}); {layout}")
    return path


def check_pairs_exist(pairs: Sequence[Tuple[Path, Path]], what: str, source: Path, layout: str) -> None:
    """Every image needs its label file; an empty list is an error naming ``source``."""
    if not pairs:
        raise FileNotFoundError(f"no {what} images found under {str(source)!r}; {layout}")
    missing = [str(label) for _, label in pairs if not label.exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} {what} label file(s) missing, e.g. {missing[0]!r}"
            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; {layout}"
        )


class LabeledPairs(Dataset):
    """Image/label file pairs whose stored ids are mapped to class ids by a lookup table.

    Subclasses find the files of their layout and set `class_names`,
    `palette` and the table; this class loads, checks and maps.

    Args:
        pairs: ``(image path, label path)`` per item.
        names: one name per item (returned as ``item["name"]``).
        lookup: stored id -> class id, ``ignore_index``, or ``UNDEFINED`` (-1)
            (a label file holding an undefined id raises ``ValueError`` naming it).
        size: ``None`` keeps each file's size; ``(H, W)`` resizes (antialiased
            bilinear image, nearest-neighbour mask).
        ignore_index: the label of pixels that do not count.
        cache: keep decoded (and resized) uint8 data in memory.
        transform: optional callable applied to each item dict.

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64 class ids or
        ignore_index, "name": str}``.
    """

    #: Class names in id order.
    class_names: Tuple[str, ...] = ()
    #: RGB colour of each class, in id order.
    palette: Tuple[RGB, ...] = ()

    def __init__(
        self,
        pairs: Sequence[Tuple[Path, Path]],
        names: Sequence[str],
        lookup: np.ndarray,
        size: Optional[Sequence[int]],
        ignore_index: int,
        cache: bool,
        transform: Optional[Callable[[dict], dict]],
    ) -> None:
        self.pairs: List[Tuple[Path, Path]] = list(pairs)
        self.names = list(names)
        self.size = None if size is None else check_size(size)
        self.ignore_index = ignore_index
        self.cache = bool(cache)
        self.transform = transform
        self._lookup = np.asarray(lookup, dtype=np.int64)
        self._lookup_t = torch.from_numpy(self._lookup.copy())
        self._files = ImagePairStore(self.size, self.cache, check_labels=self._check_labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.pairs)

    def _check_labels(self, labels: np.ndarray, mask_path: Path) -> None:
        check_defined_ids(labels, self._lookup, mask_path, type(self).__name__)

    def map_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Stored ids ``(H, W)`` (already checked) to class ids or ``ignore_index``."""
        return self._lookup_t[labels]

    def load_pair(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Image ``(3, H, W)`` float and mapped mask ``(H, W)`` int64 of item ``index``."""
        image, labels = self._files.load(index, *self.pairs[index])
        return image, self.map_labels(labels)

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self))
        image, mask = self.load_pair(index)
        item = {"image": image, "mask": mask, "name": self.names[index]}
        return self.transform(item) if self.transform is not None else item
