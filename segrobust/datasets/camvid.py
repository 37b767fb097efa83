"""CamVid in the SegNet layout (11 classes, void id 11 mapped to ``ignore_index``).

Expected layout under ``root``::

    train/  trainannot/  val/  valannot/  [test/  testannot/]
    train.txt  val.txt  [test.txt]

Each ``<split>.txt`` line is ``<image path> <annotation path>``, relative to
``root`` (SegNet's absolute ``/SegNet/CamVid/train/x.png`` paths are also
understood: the last two components are looked up under ``root``).
Annotations are single-channel PNGs of class ids ``0..10``, ``11`` = void;
any other id (an 8-bit 77 or 200, a 16-bit 256 or more) is an error naming the
file, never void.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from segrobust.datasets._image_files import ImagePairStore
from segrobust.datasets.functional import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    IGNORE_INDEX,
    check_index,
    check_size,
)
from segrobust.datasets.labeled import check_defined_ids, label_lookup, read_list_file

__all__ = ["CAMVID_HORIZONTAL_FOV_DEG", "CamVid", "CamVidTriplets", "camvid_intrinsics", "default_camvid_root"]

#: Void label in the SegNet CamVid annotations.
CAMVID_VOID_ID = 11
#: Native CamVid image size ``(H, W)`` in the SegNet layout.
CAMVID_SIZE = (360, 480)
#: Approximate horizontal field of view of the CamVid camera, in degrees. The
#: SegNet layout ships no calibration; this is an estimate (street geometry in
#: the images is consistent with roughly 60 degrees). Pass your own ``K`` when
#: you know better.
CAMVID_HORIZONTAL_FOV_DEG = 60.0

_LAYOUT = (
    "expected the SegNet CamVid layout: <root>/train/, <root>/trainannot/, <root>/val/, <root>/valannot/ "
    "and <root>/train.txt, <root>/val.txt listing '<image> <annotation>' pairs relative to <root>"
)
_NAME = re.compile(r"^(?P<sequence>.+)_(?P<prefix>[A-Za-z]*)(?P<frame>\d+)$")
PathLike = Union[str, "os.PathLike[str]"]


def default_camvid_root() -> Optional[Path]:
    """The CamVid folder named by the environment variable ``SEGROBUST_CAMVID``, if set.

    Examples:
        >>> import os
        >>> os.environ.pop("SEGROBUST_CAMVID", None) and None
        >>> default_camvid_root() is None
        True
    """
    value = os.environ.get("SEGROBUST_CAMVID")
    return Path(value).expanduser() if value else None


def camvid_intrinsics(
    size: Optional[Sequence[int]] = None, horizontal_fov_deg: float = CAMVID_HORIZONTAL_FOV_DEG
) -> torch.Tensor:
    """Approximate CamVid intrinsics ``(3, 3)`` at image size ``(H, W)`` (default 360x480).

    A centred pinhole with square pixels and the given horizontal field of
    view (an estimate, see `CAMVID_HORIZONTAL_FOV_DEG`).

    Examples:
        >>> K = camvid_intrinsics((360, 480))
        >>> round(float(K[0, 0]), 1), float(K[0, 2]), float(K[1, 2])
        (415.7, 239.5, 179.5)
    """
    from segrobust.datasets.functional import camera_intrinsics

    return camera_intrinsics(CAMVID_SIZE if size is None else check_size(size), horizontal_fov_deg)


def _resolve_root(root: Optional[PathLike]) -> Path:
    if root is None:
        root = default_camvid_root()
        if root is None:
            raise ValueError("root is None and SEGROBUST_CAMVID is not set; pass the CamVid folder as root")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"CamVid root {str(path)!r} does not exist or is not a folder; {_LAYOUT}")
    return path


def _resolve_listed(root: Path, listed: str) -> Path:
    path = Path(listed)
    candidate = path if path.is_absolute() else root / path
    if candidate.exists():
        return candidate
    # SegNet's own list files hold absolute paths of the authors' machine.
    fallback = root / path.parent.name / path.name
    return fallback if fallback.exists() else candidate


def _read_split(root: Path, split: str) -> List[Tuple[Path, Path]]:
    if not isinstance(split, str) or not split or "/" in split or "\\" in split:
        raise ValueError(f"split must be a split name such as 'train' or 'val', got {split!r}")
    listing = root / f"{split}.txt"
    if not listing.exists():
        available = sorted(p.stem for p in root.glob("*.txt"))
        raise FileNotFoundError(f"CamVid split file {str(listing)!r} not found (splits found: {available}); {_LAYOUT}")
    pairs = []
    missing = []
    for number, line in enumerate(read_list_file(listing, "CamVid split file"), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{listing}:{number}: expected '<image> <annotation>', got {line.strip()!r}; {_LAYOUT}")
        image, mask = (_resolve_listed(root, field) for field in fields)
        for path in (image, mask):
            if not path.exists():
                missing.append(str(path))
        pairs.append((image, mask))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} file(s) listed in {str(listing)!r} are missing, e.g. {missing[:3]}; {_LAYOUT}"
        )
    if not pairs:
        raise ValueError(f"{str(listing)!r} lists no image/annotation pairs; {_LAYOUT}")
    return pairs


def _check_ignore_index(ignore_index: object) -> int:
    if (
        not isinstance(ignore_index, (int, np.integer))
        or isinstance(ignore_index, bool)
        or (0 <= ignore_index <= CAMVID_VOID_ID - 1)
    ):
        raise ValueError(f"ignore_index must be an int outside the class ids 0..10, got {ignore_index!r}")
    return int(ignore_index)


class CamVid(Dataset):
    """CamVid (SegNet layout): RGB street images with 11-class masks.

    Args:
        root: the CamVid folder (default: the ``SEGROBUST_CAMVID`` environment variable).
        split: ``"train"``, ``"val"`` (or ``"test"`` when present): reads ``<root>/<split>.txt``.
        size: ``None`` keeps 360x480; ``(H, W)`` resizes (antialiased bilinear
            image, nearest-neighbour mask).
        ignore_index: label given to void pixels (id 11). Any id other than
            0..11 in an annotation raises a ``ValueError`` naming the file.
        cache: keep decoded (and resized) uint8 images in memory; costs about
            0.5 MB per image at full size, nothing is read twice.
        transform: optional callable applied to each item dict (e.g. augmentation).

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64, "name": str}``
        where ``name`` is the file stem, ``SEQUENCE_FRAME``.

    Examples:
        >>> data = CamVid("/path/to/camvid", split="val", size=(96, 128))  # doctest: +SKIP
        >>> data[0]["image"].shape, data[0]["mask"].dtype  # doctest: +SKIP
        (torch.Size([3, 96, 128]), torch.int64)
    """

    num_classes = 11
    class_names = CAMVID_CLASSES
    palette = CAMVID_COLORS

    def __init__(
        self,
        root: Optional[PathLike] = None,
        split: str = "train",
        size: Optional[Sequence[int]] = None,
        ignore_index: int = IGNORE_INDEX,
        cache: bool = False,
        transform: Optional[Callable[[dict], dict]] = None,
    ) -> None:
        self.size = None if size is None else check_size(size)
        self.ignore_index = _check_ignore_index(ignore_index)
        self.root = _resolve_root(root)
        self.split = split
        self.pairs = _read_split(self.root, split)
        self.cache = bool(cache)
        self.transform = transform
        self._lookup = label_lookup(
            {**{k: k for k in range(CAMVID_VOID_ID)}, CAMVID_VOID_ID: None}, self.ignore_index, CAMVID_VOID_ID + 1
        )
        self._files = ImagePairStore(self.size, self.cache, check_labels=self._check_labels)
        self.names = [image.stem for image, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def _check_labels(self, labels: np.ndarray, mask_path: Path) -> None:
        check_defined_ids(labels, self._lookup, mask_path, "CamVid")

    def _raw(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Image float (3, H, W) and mask int64 (H, W) at the requested size (void 11 as ``ignore_index``)."""
        image, labels = self._files.load(index, *self.pairs[index])
        return image, torch.from_numpy(self._lookup)[labels]

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self))
        image, mask = self._raw(index)
        item = {"image": image, "mask": mask, "name": self.names[index]}
        return self.transform(item) if self.transform is not None else item


def parse_frame_name(name: str) -> Tuple[str, int]:
    """Split a CamVid file stem ``SEQUENCE_FRAME`` into ``(sequence, frame number)``.

    Examples:
        >>> parse_frame_name("0006R0_f00930"), parse_frame_name("0016E5_07959")
        (('0006R0', 930), ('0016E5', 7959))
    """
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a CamVid frame name of the form SEQUENCE_FRAME (e.g. 0001TP_006690)")
    return match["sequence"], int(match["frame"])


def find_triplets(names: Sequence[str], max_gap: int) -> List[Tuple[int, int, int]]:
    """Indices ``(previous, current, next)`` of frames whose neighbours are in the same sequence.

    Frames of a sequence are ordered by frame number; a frame qualifies when
    both its predecessor and successor exist and each lies at most
    ``max_gap`` video frames away (this drops jumps across gaps in a sequence).

    Examples:
        >>> find_triplets(["a_00030", "a_00000", "a_00060", "a_09000", "b_00010"], max_gap=45)
        [(1, 0, 2)]
    """
    by_sequence: Dict[str, List[Tuple[int, int]]] = {}
    for index, name in enumerate(names):
        sequence, frame = parse_frame_name(name)
        by_sequence.setdefault(sequence, []).append((frame, index))
    triplets = []
    for frames in by_sequence.values():
        frames.sort()
        for k in range(1, len(frames) - 1):
            (f0, i0), (f1, i1), (f2, i2) = frames[k - 1], frames[k], frames[k + 1]
            if 0 < f1 - f0 <= max_gap and 0 < f2 - f1 <= max_gap:
                triplets.append((i0, i1, i2))
    return sorted(triplets, key=lambda t: t[1])


class CamVidTriplets(Dataset):
    """Consecutive CamVid frames (previous, current, next) for self-supervised depth.

    The current frame must have a predecessor and a successor from the same
    sequence *in the same split*, each at most ``max_gap`` video frames away
    (frame numbers are 30 fps video frame indices). In the SegNet train split
    neighbours are 30 video frames (1 s) apart, which is coarse: the car moves
    several metres between frames and large parts of the view change. The val
    split's ``0016E5`` frames are only 2 video frames apart. Prefer one
    neighbour, or a lower weight for the photometric loss, on 1 s spacing.
    No poses are given (estimate them, e.g. with a pose network).

    Args:
        root, split, ignore_index, cache: as in [`CamVid`][segrobust.datasets.CamVid].
        size: ``None`` keeps 360x480, ``(H, W)`` resizes.
        K: intrinsics at the output size; default [`camvid_intrinsics`][segrobust.datasets.camvid_intrinsics]
            (an approximation: horizontal field of view
            `CAMVID_HORIZONTAL_FOV_DEG`).
        max_gap: largest allowed distance to a neighbour, in video frames.

    Items:
        ``{"frames": (3, 3, H, W) float32 = (previous, current, next), "mask": (H, W)
        int64 of the current frame, "K": (3, 3) float32, "frame_gaps": (2,) int64
        video frames from previous to current and current to next, "name": str}``.

    Examples:
        >>> triplets = CamVidTriplets("/path/to/camvid", "train", size=(96, 128))  # doctest: +SKIP
        >>> triplets[0]["frames"].shape  # doctest: +SKIP
        torch.Size([3, 3, 96, 128])
    """

    num_classes = 11

    def __init__(
        self,
        root: Optional[PathLike] = None,
        split: str = "train",
        size: Optional[Sequence[int]] = None,
        K: Optional[torch.Tensor] = None,
        max_gap: int = 45,
        ignore_index: int = IGNORE_INDEX,
        cache: bool = False,
    ) -> None:
        self.frames = CamVid(root, split, size=size, ignore_index=ignore_index, cache=cache)
        if not isinstance(max_gap, int) or isinstance(max_gap, bool) or max_gap < 1:
            raise ValueError(f"max_gap must be a positive int (video frames), got {max_gap!r}")
        self.max_gap = max_gap
        self.triplets = find_triplets(self.frames.names, max_gap)
        out_size = self.frames.size or CAMVID_SIZE
        if K is None:
            K = camvid_intrinsics(out_size)
        K = torch.as_tensor(K, dtype=torch.float32)
        if K.shape != (3, 3) or not torch.isfinite(K).all():
            raise ValueError(f"K must be a finite (3, 3) intrinsics matrix, got shape {tuple(K.shape)}")
        self.K = K

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self))
        ids = self.triplets[index]
        images, masks = zip(*(self.frames._raw(i) for i in ids))
        frame_numbers = [parse_frame_name(self.frames.names[i])[1] for i in ids]
        return {
            "frames": torch.stack(images),
            "mask": masks[1],
            "K": self.K.clone(),
            "frame_gaps": torch.tensor(
                [frame_numbers[1] - frame_numbers[0], frame_numbers[2] - frame_numbers[1]], dtype=torch.int64
            ),
            "name": self.frames.names[ids[1]],
        }
