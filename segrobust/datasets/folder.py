"""FolderDataset: your own images and masks in two folders.

Layout::

    root/images/<stem>.png | .jpg | .jpeg
    root/masks/<stem>.png            single-channel class ids (L, P, I or 16-bit)

Ids are kept as stored, every bit of them (a 16-bit mask is not truncated).
With ``num_classes`` each mask is checked against ``0..num_classes - 1`` and
``ignore_index``; without it, negative ids are still refused and the ids are
checked by whoever knows the class count (the benchmark checks them against
the model's).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import Dataset

from segrobust.datasets._image_files import ImagePairStore
from segrobust.datasets.functional import IGNORE_INDEX, check_index, check_size

__all__ = ["FolderDataset"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LAYOUT = "expected <root>/images/<stem>.png|.jpg|.jpeg and <root>/masks/<stem>.png (uint8 class ids)"
PathLike = Union[str, "os.PathLike[str]"]


class FolderDataset(Dataset):
    """Image/mask pairs from ``root/images`` and ``root/masks`` (same file stem).

    Args:
        root: folder holding ``images/`` and ``masks/``.
        size: ``None`` keeps each file's size (then all must match to batch);
            ``(H, W)`` resizes (antialiased bilinear image, nearest mask).
        ignore_index: label of pixels that do not count; mask pixels holding
            it are kept as is.
        num_classes: when given, any mask value outside ``[0, num_classes)``
            other than ``ignore_index`` raises a ``ValueError`` naming the file
            (negative values other than ``ignore_index`` always do).
        cache: keep decoded (and resized) uint8 data in memory.
        transform: optional callable applied to each item dict.

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64, "name": str}``.

    Examples:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "images").mkdir(); (root / "masks").mkdir()
        >>> Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
        >>> Image.fromarray(np.ones((8, 8), np.uint8)).save(root / "masks" / "a.png")
        >>> item = FolderDataset(root, num_classes=2)[0]
        >>> item["image"].shape, int(item["mask"].max()), item["name"]
        (torch.Size([3, 8, 8]), 1, 'a')
    """

    def __init__(
        self,
        root: PathLike,
        size: Optional[Sequence[int]] = None,
        ignore_index: int = IGNORE_INDEX,
        num_classes: Optional[int] = None,
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path, got {type(root).__name__}")
        self.root = Path(root).expanduser()
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        for folder in (self.root, images_dir, masks_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"folder {str(folder)!r} not found; {_LAYOUT}")
        images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"no .png/.jpg/.jpeg images in {str(images_dir)!r}; {_LAYOUT}")
        stems = [p.stem for p in images]
        duplicates = sorted({s for s in stems if stems.count(s) > 1})
        if duplicates:
            raise ValueError(f"several images share the stem(s) {duplicates[:5]} in {str(images_dir)!r}")
        masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
        missing = [s for s in stems if s not in masks]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} image(s) have no mask: expected {str(masks_dir / (missing[0] + '.png'))!r}"
                f" (missing stems: {missing[:5]}{' ...' if len(missing) > 5 else ''}); {_LAYOUT}"
            )
        self.pairs: List[Tuple[Path, Path]] = [(p, masks[p.stem]) for p in images]
        self.names = stems
        self.size = None if size is None else check_size(size)
        if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
        self.ignore_index = int(ignore_index)
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        self.num_classes = num_classes
        self.cache = bool(cache)
        self.transform = transform
        self._files = ImagePairStore(self.size, self.cache, check_labels=self._check_labels)

    def __len__(self) -> int:
        return len(self.pairs)

    def _check_labels(self, labels: np.ndarray, mask_path: Path) -> None:
        outside = labels < 0 if self.num_classes is None else (labels < 0) | (labels >= self.num_classes)
        bad = outside & (labels != self.ignore_index)
        if bad.any():
            values = np.unique(labels[bad])[:10].tolist()
            allowed = "[0, ...)" if self.num_classes is None else f"[0, {self.num_classes})"
            raise ValueError(
                f"mask {str(mask_path)!r} holds values {values} outside {allowed} "
                f"that are not ignore_index={self.ignore_index}"
            )

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self))
        image, mask = self._files.load(index, *self.pairs[index])
        item = {"image": image, "mask": mask, "name": self.names[index]}
        return self.transform(item) if self.transform is not None else item
