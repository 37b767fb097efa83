"""``build_dataset``: one entry point from a name (as typed on a command line) to a data set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from torch.utils.data import Dataset

from segrobust.datasets.camvid import CamVid, CamVidTriplets
from segrobust.datasets.folder import FolderDataset
from segrobust.datasets.synthetic import SyntheticStreets, SyntheticStreetTriplets

__all__ = ["DATASET_NAMES", "build_dataset"]

#: Names accepted by :func:`build_dataset` (``_`` and ``-`` are interchangeable).
DATASET_NAMES = ("camvid", "camvid-triplets", "folder", "synthetic", "synthetic-triplets")
#: Default number of synthetic items per split.
SYNTHETIC_SIZES = {"train": 200, "val": 50, "test": 50}


def build_dataset(
    name: str,
    root: Optional[Union[str, os.PathLike[str]]] = None,
    split: str = "train",
    size: Optional[Sequence[int]] = None,
    **kwargs: Any,
) -> Dataset:
    """Build a data set by name.

    * ``"camvid"``: :class:`CamVid` (``root`` defaults to ``$SEGROBUST_CAMVID``).
    * ``"camvid-triplets"``: :class:`CamVidTriplets`.
    * ``"folder"``: :class:`FolderDataset` on ``root/<split>`` when that folder
      holds ``images/``, else on ``root`` itself.
    * ``"synthetic"``: :class:`SyntheticStreets`; ``n`` defaults to 200 (train)
      or 50 (val/test) and ``size`` to ``(96, 128)``. Splits are disjoint worlds.
    * ``"synthetic-triplets"``: :class:`SyntheticStreetTriplets`, same defaults.

    Extra keyword arguments go to the class (e.g. ``n``, ``seed``, ``cache``).

    Examples:
        >>> data = build_dataset("synthetic", split="val", size=(24, 32), n=3)
        >>> len(data), data[0]["image"].shape
        (3, torch.Size([3, 24, 32]))
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, one of {DATASET_NAMES}, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key == "camvid":
        return CamVid(root, split=split, size=size, **kwargs)
    if key == "camvid-triplets":
        return CamVidTriplets(root, split=split, size=size, **kwargs)
    if key == "folder":
        if root is None:
            raise ValueError("the 'folder' data set needs root: a folder with images/ and masks/")
        base = Path(root).expanduser()
        folder = base / split if (base / split / "images").is_dir() else base
        return FolderDataset(folder, size=size, **kwargs)
    if key in ("synthetic", "synthetic-triplets"):
        if root is not None:
            raise ValueError(f"the {key!r} data set is generated and takes no root (got {root!r})")
        kwargs.setdefault("n", SYNTHETIC_SIZES.get(split, 50))
        size = (96, 128) if size is None else size
        cls = SyntheticStreets if key == "synthetic" else SyntheticStreetTriplets
        return cls(size=size, split=split, **kwargs)
    raise ValueError(f"unknown data set {name!r}; expected one of {DATASET_NAMES}")
