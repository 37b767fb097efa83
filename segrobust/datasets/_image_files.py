"""Decoding, resizing and in-memory caching of image/mask file pairs.

Shared by every file-backed data set (CamVid, folders, Cityscapes, VOC,
ADE20K...) so that all decode, resize and cache the same way.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch

from segrobust.datasets.functional import Size, resize_image, resize_mask
from segrobust.fileio import check_regular_file

LabelCheck = Callable[[np.ndarray, Path], None]


def decode(path: Path, what: str, convert: Callable[[Any], np.ndarray]) -> np.ndarray:
    """Decode the image file ``path`` fully with ``convert(PIL image)``.

    Corrupt or truncated files raise one ``ValueError`` naming the file (and
    ``what`` it should hold); a missing file raises ``FileNotFoundError``; a
    FIFO, socket or device (which would block or never end) raises
    [UnreadableFileError][segrobust.fileio.UnreadableFileError] before anything is read.
    """
    from PIL import Image

    if not Path(path).exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    check_regular_file(path, what)
    try:
        with Image.open(path) as img:
            img.load()
            return convert(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, SyntaxError, EOFError, zlib.error, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot decode {what} {str(path)!r} (corrupt or truncated file?): {error}") from None


def image_size(path: Path, what: str = "image") -> Tuple[int, int]:
    """``(H, W)`` from the file's header (the pixels are not decoded); special files refused as in `decode`."""
    from PIL import Image

    check_regular_file(path, what)
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read {what} {str(path)!r} (corrupt or truncated file?): {error}") from None


def load_rgb(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB, whatever the file's own mode."""
    return decode(path, "image", lambda img: np.array(img.convert("RGB"), dtype=np.uint8))


def _single_channel(img: Any, path: Path) -> np.ndarray:
    if img.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B"):
        raise ValueError(
            f"annotation {str(path)!r} has mode {img.mode!r}; expected a single-channel image of class ids"
        )
    return np.array(img)


def load_labels(path: Path) -> np.ndarray:
    """``(H, W)`` class ids from a single-channel (L, P, I or 16-bit) image, every bit kept."""
    return decode(path, "annotation", lambda img: _single_channel(img, path))


def to_image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 to ``(3, H, W)`` float in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


class ImagePairStore:
    """Loads image/mask pairs at ``size``, keeping decoded copies when ``cache``.

    Cached pairs are stored as uint8 image and int32 labels (4x smaller than
    float) and are always returned from the stored copy, so the first and later
    epochs see identical values.
    """

    def __init__(self, size: Optional[Size], cache: bool, check_labels: Optional[LabelCheck] = None) -> None:
        self.size = size
        self.cache = cache
        self.check_labels = check_labels
        self._store: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}

    def load(self, index: int, image_path: Path, mask_path: Path) -> Tuple[torch.Tensor, torch.Tensor]:
        """Image float ``(3, H, W)`` in ``[0, 1]`` and mask int64 ``(H, W)`` of raw file ids."""
        if index in self._store:
            rgb, labels = self._store[index]
            return to_image_tensor(rgb), torch.from_numpy(labels.astype(np.int64))
        rgb, labels = load_rgb(image_path), load_labels(mask_path)
        if rgb.shape[:2] != labels.shape[:2]:
            raise ValueError(
                f"image {str(image_path)!r} is {rgb.shape[:2]} (H, W) but its mask {str(mask_path)!r} is "
                f"{labels.shape[:2]}"
            )
        if self.check_labels is not None:
            self.check_labels(labels, mask_path)
        image = to_image_tensor(rgb)
        mask = torch.from_numpy(labels.astype(np.int64))
        if self.size is not None:
            image = resize_image(image, self.size)
            mask = resize_mask(mask, self.size)
        if not self.cache:
            return image, mask
        self._store[index] = (
            (image * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy(),
            mask.to(torch.int32).numpy(),
        )
        return self.load(index, image_path, mask_path)
