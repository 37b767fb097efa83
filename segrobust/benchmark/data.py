"""The benchmark's data stage: every item checked once, batches fingerprinted and cached.

Errors name the item and, for file-backed data sets (``CamVid``,
``FolderDataset``, or a ``Subset`` of one), the file; they are raised as
[`DataError`][segrobust.benchmark.DataError] with a one-line message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch

from segrobust.utils import error_line, item_dict
from segrobust.validation import check_class_ids

__all__ = ["BatchSource", "DataError", "as_pair", "item_files"]


class DataError(ValueError):
    """A data set item that cannot be evaluated (unreadable file, wrong shape, class id out of range...)."""


def item_files(dataset: Any, index: int) -> tuple[Optional[str], Optional[str]]:
    """``(image file, mask file)`` of item ``index`` for data sets that keep a file list (through ``Subset``), else ``None``s.

    Examples:
        >>> item_files([1, 2], 0)
        (None, None)
    """
    while isinstance(dataset, torch.utils.data.Subset):
        dataset, index = dataset.dataset, int(dataset.indices[index])
    pairs = getattr(dataset, "pairs", None)
    if isinstance(pairs, Sequence) and 0 <= index < len(pairs):
        pair = pairs[index]
        if isinstance(pair, (tuple, list)) and len(pair) == 2:
            return str(pair[0]), str(pair[1])
    return None, None


def as_pair(item: Any, index: int) -> dict[str, torch.Tensor]:
    """``{"image", "mask"[, "depth"]}`` from a dict item or an ``(image, mask)`` pair."""
    try:
        entries = item_dict(item)
    except TypeError:
        raise DataError(
            f"dataset item {index} must be a dict with 'image' and 'mask' or a pair (image, mask), "
            f"got {type(item).__name__}"
        ) from None
    if "image" not in entries or "mask" not in entries:
        raise DataError(f"dataset item {index} must have keys 'image' and 'mask', got {sorted(map(str, entries))}")
    out = {"image": entries["image"], "mask": entries["mask"]}
    if isinstance(entries.get("depth"), torch.Tensor):
        out["depth"] = entries["depth"]
    return out


def _image_problem(image: Any, size: Optional[tuple[int, int]]) -> Optional[str]:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.dtype.is_floating_point:
        return f"image must be a float tensor (C, H, W) in [0, 1], got {getattr(image, 'shape', type(image).__name__)}"
    if size is not None and tuple(image.shape[-2:]) != size:
        return f"image is {tuple(image.shape[-2:])} (H, W) but the first image is {size}: all images must have one size"
    if not bool(torch.isfinite(image).all()):
        return "image holds NaN or infinite values"
    return None


def _mask_problem(mask: Any, image: torch.Tensor, num_classes: Optional[int], ignore_index: int) -> Optional[str]:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or mask.shape != image.shape[1:]:
        return (
            f"mask must be (H, W) matching its image {tuple(image.shape[1:])}, got {tuple(getattr(mask, 'shape', ()))}"
        )
    if mask.dtype.is_floating_point and not bool((mask == mask.round()).all()):
        return "mask holds non-integer values; expected class ids"
    if num_classes is not None:
        try:
            check_class_ids(mask.long(), num_classes, ignore_index, "mask")
        except ValueError as error:
            return str(error)
    return None


class CheckedItems(torch.utils.data.Dataset):
    """``dataset[i]`` as ``(i, pair, None)`` or ``(i, None, message)``: errors travel as text, also from worker processes."""

    def __init__(self, dataset: Any, size: Optional[tuple[int, int]], num_classes: Optional[int], ignore_index: int):
        self.dataset, self.size, self.num_classes, self.ignore_index = dataset, size, num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Optional[dict[str, torch.Tensor]], Optional[str]]:
        image_file, mask_file = item_files(self.dataset, index)
        try:
            pair = as_pair(self.dataset[index], index)
        except Exception as error:  # any failure of the user's data set becomes one line naming the item
            message = error_line(error)
            named = [f for f in (image_file, mask_file) if f and f in message]
            where = "" if named or image_file is None else f" (image {image_file}, mask {mask_file})"
            return index, None, f"cannot load dataset item {index}{where}: {message}"
        problem = _image_problem(pair["image"], self.size)
        if problem is not None:
            return (
                index,
                None,
                f"dataset item {index}{'' if image_file is None else ' (' + image_file + ')'}: {problem}",
            )
        problem = _mask_problem(pair["mask"], pair["image"], self.num_classes, self.ignore_index)
        if problem is not None:
            return index, None, f"dataset item {index}{'' if mask_file is None else ' (' + mask_file + ')'}: {problem}"
        return index, pair, None


def collate(items: list[tuple[int, Optional[dict[str, torch.Tensor]], Optional[str]]]) -> Any:
    """A batch dict (``image``, ``mask`` int64, optional ``depth``, ``index``), or the first item's error text."""
    for _, _, problem in items:
        if problem is not None:
            return problem
    pairs = [pair for _, pair, _ in items]
    batch = {"image": torch.stack([p["image"] for p in pairs]), "mask": torch.stack([p["mask"] for p in pairs]).long()}
    if all("depth" in p for p in pairs):
        batch["depth"] = torch.stack([p["depth"] for p in pairs])
    batch["index"] = torch.tensor([index for index, _, _ in items])
    return batch


def batch_fingerprint(batch: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a batch's tensors as loaded (what a unit was computed on)."""
    digest = hashlib.sha256()
    for name in sorted(batch):
        tensor = batch[name].detach().cpu().contiguous()
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


class BatchSource:
    """Batches ``b`` (sample indices ``batches[b]``) of a data set, checked item by item, kept up to ``cache_bytes``."""

    def __init__(self, items: CheckedItems, batches: list[list[int]], num_workers: int, cache_bytes: int):
        self.items, self.batches, self.num_workers = items, batches, num_workers
        self.cache: dict[int, dict[str, torch.Tensor]] = {}
        self.cache_bytes, self.cached_bytes, self.caching = cache_bytes, 0, True
        self.fingerprints: dict[int, str] = {}
        self.labelled_pixels = 0  # pixels other than ignore_index in the batches loaded so far
        # valid pixels per class in the batches loaded so far (SEA's class weights come from them)
        self.class_pixels = torch.zeros(items.num_classes or 0, dtype=torch.long)

    def check(self, wanted: list[int]) -> dict[int, str]:
        """Load every batch in ``wanted`` once (every item checked); returns their fingerprints."""
        for _ in self(wanted):
            pass
        return {b: self.fingerprints[b] for b in wanted}

    def __call__(self, wanted: list[int]) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        missing = [b for b in wanted if b not in self.cache]
        loader = (
            iter(
                torch.utils.data.DataLoader(
                    self.items,
                    batch_sampler=[self.batches[b] for b in missing],
                    num_workers=self.num_workers,
                    collate_fn=collate,
                )
            )
            if missing
            else None
        )
        for b in wanted:
            if b in self.cache:
                yield b, self.cache[b]
                continue
            batch = next(loader)
            if isinstance(batch, str):
                raise DataError(batch)
            if b not in self.fingerprints:
                labelled = batch["mask"][batch["mask"] != self.items.ignore_index]
                self.labelled_pixels += int(labelled.numel())
                if self.class_pixels.numel():
                    self.class_pixels += torch.bincount(labelled.flatten(), minlength=self.class_pixels.numel())
            self.fingerprints[b] = batch_fingerprint(batch)
            self._keep(b, batch)
            yield b, batch

    def _keep(self, b: int, batch: dict[str, torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in batch.values())
        if self.caching and self.cached_bytes + size <= self.cache_bytes:
            self.cache[b] = batch
            self.cached_bytes += size
        else:
            self.caching = False
