"""Data sets: CamVid, Cityscapes, RainCityscapes, PASCAL VOC, ADE20K, your own folders,
torchvision data sets, and procedural synthetic streets.

Every segmentation item is a dict ``{"image": (3, H, W) float32 in [0, 1],
"mask": (H, W) int64, "name": str, ...}`` with the data set's class ids and
``ignore_index`` (255) on void pixels; data sets expose ``class_names`` and
``palette``. Triplet items carry ``"frames"`` ``(3, 3, H, W)`` = (previous,
current, next). See ``docs/datasets.md``.
"""

from segrobust.datasets.ade20k import ADE20K, ADE20K_CLASSES, ADE20K_COLORS
from segrobust.datasets.camvid import (
    CAMVID_HORIZONTAL_FOV_DEG,
    CamVid,
    CamVidTriplets,
    camvid_intrinsics,
    default_camvid_root,
    find_triplets,
    parse_frame_name,
)
from segrobust.datasets.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_COLORS,
    CITYSCAPES_TRAIN_IDS,
    Cityscapes,
    RainCityscapes,
)
from segrobust.datasets.factory import DATASET_NAMES, DATASETS, build_dataset
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
from segrobust.datasets.labeled import LabeledPairs
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
from segrobust.datasets.torchvision_adapter import TorchvisionSegmentation
from segrobust.datasets.voc import VOC_CLASSES, VOC_COLORS, VOCSegmentation

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "ADE20K_COLORS",
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "CAMVID_HORIZONTAL_FOV_DEG",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_COLORS",
    "CITYSCAPES_TRAIN_IDS",
    "DATASETS",
    "DATASET_NAMES",
    "IGNORE_INDEX",
    "NUM_CAMVID_CLASSES",
    "VOC_CLASSES",
    "VOC_COLORS",
    "CamVid",
    "CamVidTriplets",
    "Cityscapes",
    "FolderDataset",
    "LabeledPairs",
    "RainCityscapes",
    "StreetScene",
    "SyntheticStreetTriplets",
    "SyntheticStreetVideo",
    "SyntheticStreets",
    "TorchvisionSegmentation",
    "VOCSegmentation",
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
