"""``build_dataset``: one entry point from a name (as typed on a command line) to a data set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

from torch.utils.data import Dataset

from segrobust.datasets.ade20k import ADE20K
from segrobust.datasets.camvid import CamVid, CamVidTriplets
from segrobust.datasets.cityscapes import Cityscapes, RainCityscapes
from segrobust.datasets.folder import FolderDataset
from segrobust.datasets.synthetic import SyntheticStreets, SyntheticStreetTriplets
from segrobust.datasets.voc import VOCSegmentation

__all__ = ["DATASETS", "DATASET_NAMES", "build_dataset"]

#: Default number of synthetic items per split.
SYNTHETIC_SIZES = {"train": 200, "val": 50, "test": 50}
Root = Optional[Union[str, os.PathLike[str]]]
Builder = Callable[..., Dataset]


def _needs_root(name: str, root: Root, what: str = "the folder holding its files") -> Path:
    if root is None:
        raise ValueError(f"the {name!r} data set needs root: {what}")
    return Path(root).expanduser()


def _folder(root: Root, split: str, size: Optional[Sequence[int]], **kwargs: Any) -> Dataset:
    """Your own images/ and masks/ folder (root/<split> when it holds images/)."""
    base = _needs_root("folder", root, "a folder with images/ and masks/")
    folder = base / split if (base / split / "images").is_dir() else base
    return FolderDataset(folder, size=size, **kwargs)


def _synthetic(cls: type, name: str) -> Builder:
    def build(root: Root, split: str, size: Optional[Sequence[int]], **kwargs: Any) -> Dataset:
        if root is not None:
            raise ValueError(f"the {name!r} data set is generated and takes no root (got {root!r})")
        kwargs.setdefault("n", SYNTHETIC_SIZES.get(split, 50))
        return cls(size=(96, 128) if size is None else size, split=split, **kwargs)

    build.__doc__ = cls.__doc__  # `segrobust list` describes a data set by its builder's docstring
    return build


def _rooted(cls: type) -> Builder:
    def build(root: Root, split: str, size: Optional[Sequence[int]], **kwargs: Any) -> Dataset:
        return cls(root, split=split, size=size, **kwargs)

    build.__doc__ = cls.__doc__
    return build


def _on_disk(cls: type, name: str) -> Builder:
    def build(root: Root, split: str, size: Optional[Sequence[int]], **kwargs: Any) -> Dataset:
        return cls(_needs_root(name, root), split=split, size=size, **kwargs)

    build.__doc__ = cls.__doc__
    return build


#: Data set name -> builder ``(root, split, size, **kwargs) -> Dataset``. Add entries to register your own.
DATASETS: Dict[str, Builder] = {
    "camvid": _rooted(CamVid),
    "camvid-triplets": _rooted(CamVidTriplets),
    "folder": _folder,
    "synthetic": _synthetic(SyntheticStreets, "synthetic"),
    "synthetic-triplets": _synthetic(SyntheticStreetTriplets, "synthetic-triplets"),
    "cityscapes": _on_disk(Cityscapes, "cityscapes"),
    "rain-cityscapes": _on_disk(RainCityscapes, "rain-cityscapes"),
    "voc": _on_disk(VOCSegmentation, "voc"),
    "ade20k": _on_disk(ADE20K, "ade20k"),
}
#: Names accepted by [`build_dataset`][segrobust.datasets.build_dataset] (``_`` and ``-`` are interchangeable).
DATASET_NAMES = tuple(DATASETS)


def build_dataset(
    name: str,
    root: Root = None,
    split: str = "train",
    size: Optional[Sequence[int]] = None,
    **kwargs: Any,
) -> Dataset:
    """Build a data set by name (the keys of ``DATASETS``).

    * ``"camvid"``: [CamVid][segrobust.datasets.CamVid] (``root`` defaults to ``$SEGROBUST_CAMVID``).
    * ``"camvid-triplets"``: [CamVidTriplets][segrobust.datasets.CamVidTriplets].
    * ``"folder"``: [FolderDataset][segrobust.datasets.FolderDataset] on ``root/<split>`` when
      that folder holds ``images/``, else on ``root`` itself.
    * ``"synthetic"``: [SyntheticStreets][segrobust.datasets.SyntheticStreets]; ``n`` defaults
      to 200 (train) or 50 (val/test) and ``size`` to ``(96, 128)``. Splits are disjoint worlds.
    * ``"synthetic-triplets"``: [SyntheticStreetTriplets][segrobust.datasets.SyntheticStreetTriplets],
      same defaults.
    * ``"cityscapes"``, ``"rain-cityscapes"``, ``"voc"``, ``"ade20k"``:
      [Cityscapes][segrobust.datasets.Cityscapes], [RainCityscapes][segrobust.datasets.RainCityscapes],
      [VOCSegmentation][segrobust.datasets.VOCSegmentation], [ADE20K][segrobust.datasets.ADE20K]
      on their official folder layouts under ``root``.

    Extra keyword arguments go to the class (e.g. ``n``, ``seed``, ``cache``).

    Examples:
        >>> data = build_dataset("synthetic", split="val", size=(24, 32), n=3)
        >>> len(data), data[0]["image"].shape
        (3, torch.Size([3, 24, 32]))
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {DATASET_NAMES}, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {tuple(DATASETS)}")
    return DATASETS[key](root, split, size, **kwargs)
