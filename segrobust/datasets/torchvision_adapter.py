"""Use torchvision segmentation data sets (and transforms v2 pipelines) with segrobust.

torchvision's segmentation data sets (``VOCSegmentation``, ``Cityscapes`` with
``target_type="semantic"``, ``SBDataset``, your own ``Dataset``) return
``(image, target)`` pairs: PIL images, tensors, or ``tv_tensors.Image`` /
``tv_tensors.Mask`` after a ``transforms.v2`` pipeline. [TorchvisionSegmentation][segrobust.datasets.TorchvisionSegmentation]
turns each pair into segrobust's item dict, checking every mask id against
the ids the data set defines (its classes and ``ignore_index``) or mapping
them with a ``label_map`` (e.g. ``CITYSCAPES_TRAIN_IDS`` for torchvision's
``Cityscapes``, whose semantic targets hold the 34 stored label ids).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from segrobust.datasets.functional import (
    IGNORE_INDEX,
    check_index,
    check_size,
    resize_image,
    resize_mask,
)
from segrobust.datasets.labeled import UNDEFINED, label_lookup

__all__ = ["TorchvisionSegmentation", "as_image_tensor", "as_mask_tensor"]


def as_image_tensor(image: Any, where: str = "image") -> torch.Tensor:
    """A PIL image, ``(H, W, 3)`` uint8 array or ``(C, H, W)`` tensor as ``(3, H, W)`` float32 in ``[0, 1]``.

    uint8 tensors (including ``tv_tensors.Image``) are divided by 255; float
    tensors must already lie in ``[0, 1]``; one channel is repeated to three.

    Examples:
        >>> as_image_tensor(torch.full((3, 2, 2), 255, dtype=torch.uint8)).max().item()
        1.0
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        image = np.array(image.convert("RGB"), dtype=np.uint8)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ValueError(f"{where} must be an (H, W, 3) array, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{where} must be a PIL image, numpy array or tensor, got {type(image).__name__}")
    tensor = image.as_subclass(torch.Tensor)
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"{where} must have shape (3, H, W) or (1, H, W), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float() / 255.0
    elif tensor.dtype.is_floating_point:
        tensor = tensor.float()
        if not bool(torch.isfinite(tensor).all()) or float(tensor.min()) < 0.0 or float(tensor.max()) > 1.0:
            raise ValueError(
                f"{where} is a float tensor outside [0, 1] (normalised already? drop Normalize from the "
                "transforms: segrobust models take [0, 1] images)"
            )
    else:
        raise TypeError(f"{where} must be uint8 or floating point, got dtype {tensor.dtype}")
    return tensor.expand(3, -1, -1).contiguous() if tensor.shape[0] == 1 else tensor


def as_mask_tensor(target: Any, where: str = "target") -> torch.Tensor:
    """A PIL label image, array or tensor (``tv_tensors.Mask`` included) as an ``(H, W)`` int64 mask.

    Examples:
        >>> as_mask_tensor(torch.zeros(1, 2, 3, dtype=torch.uint8)).shape
        torch.Size([2, 3])
    """
    if hasattr(target, "convert") and hasattr(target, "mode"):  # PIL image
        if target.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"{where} has PIL mode {target.mode!r}; expected a single-channel image of class ids")
        target = np.array(target)
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(np.ascontiguousarray(target).astype(np.int64))
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{where} must be a PIL image, numpy array or tensor of class ids, got {type(target).__name__}")
    mask = target.as_subclass(torch.Tensor)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"{where} must have shape (H, W) or (1, H, W), got {tuple(target.shape)}")
    if mask.dtype.is_floating_point:
        if not bool((mask == mask.round()).all()):
            raise ValueError(f"{where} holds non-integer values; masks must be class ids")
    elif mask.dtype == torch.bool or mask.dtype.is_complex:
        raise TypeError(f"{where} must hold integer class ids, got dtype {mask.dtype}")
    return mask.long()


class TorchvisionSegmentation(Dataset):
    """Wraps a data set of ``(image, target)`` pairs into segrobust items.

    Works with torchvision's segmentation data sets and any ``transforms.v2``
    pipeline (``tv_tensors.Image`` / ``tv_tensors.Mask`` outputs) as long as
    it leaves images in ``[0, 1]`` or uint8 (no ``Normalize``: segrobust
    models and attacks take ``[0, 1]`` images).

    Mask ids are checked against the classes the adapter knows of (``num_classes``,
    else ``len(class_names)``): an id outside ``[0, num_classes)`` other than
    ``ignore_index`` raises a ``ValueError`` naming the item, never counts as
    void. With ``label_map`` stored ids are mapped first and ids absent from
    it are refused. When neither the class count nor a map is known, only
    negative ids are refused here and the ids are checked by whoever knows the
    class count (the benchmark checks them against the model's).

    Args:
        dataset: indexable, ``dataset[i]`` returns ``(image, target)``.
        num_classes: the number of classes (default: ``len(class_names)`` when
            known).
        class_names: names for reports, in id order (default: ``dataset.classes``
            when it exists; for torchvision's ``Cityscapes`` these are the names of
            the stored label ids, not of the 19 training ids).
        label_map: stored id -> class id, or ``None`` for ``ignore_index``
            (e.g. ``CITYSCAPES_TRAIN_IDS``
            with ``class_names=CITYSCAPES_CLASSES`` for torchvision's ``Cityscapes``);
            a stored id the map lacks raises a ``ValueError`` naming the item.
        palette: RGB colour per class, for previews.
        ignore_index: label of pixels that do not count (VOC's 255 borders).
        size: ``None`` keeps each item's size; ``(H, W)`` resizes (bilinear
            image, nearest-neighbour mask).

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64, "name": str}``
        (``name`` is the item index, zero-padded).

    Examples:
        >>> from torchvision import tv_tensors
        >>> pairs = [(tv_tensors.Image(torch.zeros(3, 4, 4, dtype=torch.uint8)),
        ...           tv_tensors.Mask(torch.ones(4, 4, dtype=torch.uint8)))]
        >>> item = TorchvisionSegmentation(pairs, num_classes=2)[0]
        >>> item["image"].dtype, item["mask"].dtype, item["mask"].shape
        (torch.float32, torch.int64, torch.Size([4, 4]))
    """

    def __init__(
        self,
        dataset: Any,
        num_classes: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
        palette: Optional[Sequence[Tuple[int, int, int]]] = None,
        ignore_index: int = IGNORE_INDEX,
        size: Optional[Sequence[int]] = None,
        label_map: Optional[Mapping[int, Optional[int]]] = None,
    ) -> None:
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
        self.dataset = dataset
        self._num_classes = num_classes
        names = class_names if class_names is not None else getattr(dataset, "classes", None)
        self.class_names = _class_names(names)
        self.palette = tuple(tuple(int(c) for c in colour) for colour in palette) if palette is not None else ()
        self.ignore_index = int(ignore_index)
        self.size = None if size is None else check_size(size)
        self._lookup = None if label_map is None else _label_table(label_map, self.ignore_index, self.num_classes)

    @property
    def num_classes(self) -> Optional[int]:
        return self._num_classes if self._num_classes is not None else (len(self.class_names) or None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self))
        pair = self.dataset[index]
        where = f"item {index} of {type(self.dataset).__name__}"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{where} must be an (image, target) pair, got {type(pair).__name__}")
        image = as_image_tensor(pair[0], f"the image of {where}")
        mask = as_mask_tensor(pair[1], f"the target of {where}")
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise ValueError(f"{where}: image is {tuple(image.shape[-2:])} (H, W) but its mask is {tuple(mask.shape)}")
        mask = self._checked_ids(mask, where)
        if self.size is not None:
            image, mask = resize_image(image, self.size), resize_mask(mask, self.size)
        return {"image": image, "mask": mask, "name": f"{index:06d}"}

    def _checked_ids(self, mask: torch.Tensor, where: str) -> torch.Tensor:
        """``mask`` mapped through ``label_map`` (when given), after every id was found defined."""
        if self._lookup is not None:
            stored = mask.clamp(-1, len(self._lookup))  # -1 and len(...) both land on UNDEFINED below
            table = torch.cat([self._lookup, torch.tensor([UNDEFINED, UNDEFINED])])
            mapped = table[stored]  # index -1 is the last entry: UNDEFINED
            bad = mapped == UNDEFINED
            if bool(bad.any()):
                values = torch.unique(mask[bad])[:10].tolist()
                raise ValueError(f"{where}: mask holds ids {values} that label_map does not define")
            return mapped
        classes = self.num_classes
        outside = (mask < 0) if classes is None else (mask < 0) | (mask >= classes)
        bad = outside & (mask != self.ignore_index)
        if bool(bad.any()):
            values = torch.unique(mask[bad])[:10].tolist()
            allowed = "[0, ...)" if classes is None else f"[0, {classes})"
            raise ValueError(
                f"{where}: mask holds ids {values} outside {allowed} that are not ignore_index={self.ignore_index}"
            )
        return mask


def _label_table(label_map: Mapping[int, Optional[int]], ignore_index: int, num_classes: Optional[int]) -> torch.Tensor:
    if not isinstance(label_map, Mapping) or not label_map:
        raise TypeError(f"label_map must be a non-empty mapping stored id -> class id or None, got {label_map!r}")
    for stored, target in label_map.items():
        if isinstance(stored, bool) or not isinstance(stored, (int, np.integer)) or not 0 <= stored < 2**16:
            raise ValueError(f"label_map keys must be stored ids in 0..65535, got {stored!r}")
        valid_target = target is None or (
            isinstance(target, (int, np.integer))
            and not isinstance(target, bool)
            and target >= 0
            and (num_classes is None or target < num_classes)
        )
        if not valid_target:
            classes = "a class id" if num_classes is None else f"a class id in 0..{num_classes - 1}"
            raise ValueError(f"label_map[{stored}] must be {classes} or None (ignored), got {target!r}")
    table = label_lookup(label_map, ignore_index, size=max(int(k) for k in label_map) + 1)
    return torch.from_numpy(table)


def _class_names(names: Any) -> Tuple[str, ...]:
    if names is None:
        return ()
    # torchvision's Cityscapes.classes holds namedtuples (in label-id order) with a .name field.
    return tuple(str(getattr(name, "name", name)) for name in names)
