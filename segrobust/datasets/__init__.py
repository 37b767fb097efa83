"""Data sets: CamVid, your own image/mask folders, and procedural synthetic streets.

Every segmentation item is a dict ``{"image": (3, H, W) float32 in [0, 1],
"mask": (H, W) int64, "name": str, ...}`` with CamVid's 11 class ids and
``ignore_index`` (255) on void pixels; triplet items carry ``"frames"``
``(3, 3, H, W)`` = (previous, current, next). See ``docs/datasets.md``.
"""

from segrobust.datasets.camvid import (
    CAMVID_HORIZONTAL_FOV_DEG,
    CamVid,
    CamVidTriplets,
    camvid_intrinsics,
    default_camvid_root,
    find_triplets,
    parse_frame_name,
)
from segrobust.datasets.factory import DATASET_NAMES, build_dataset
from segrobust.datasets.folder import FolderDataset
from segrobust.datasets.functional import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    IGNORE_INDEX,
    NUM_CAMVID_CLASSES,
    camera_intrinsics,
    colorize,
    relative_pose,
    resize_image,
    resize_mask,
    scale_intrinsics,
)
from segrobust.datasets.preview import depth_to_rgb, preview_grid
from segrobust.datasets.synthetic import (
    StreetScene,
    SyntheticStreets,
    SyntheticStreetTriplets,
    SyntheticStreetVideo,
    camera_to_world,
    render_street,
    sample_street_scene,
)

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_HORIZONTAL_FOV_DEG",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "NUM_CAMVID_CLASSES",
    "CamVid",
    "CamVidTriplets",
    "FolderDataset",
    "StreetScene",
    "SyntheticStreetTriplets",
    "SyntheticStreetVideo",
    "SyntheticStreets",
    "build_dataset",
    "camera_intrinsics",
    "camera_to_world",
    "camvid_intrinsics",
    "colorize",
    "default_camvid_root",
    "depth_to_rgb",
    "find_triplets",
    "parse_frame_name",
    "preview_grid",
    "relative_pose",
    "render_street",
    "resize_image",
    "resize_mask",
    "sample_street_scene",
    "scale_intrinsics",
]
