"""Pure functions shared by the data sets: class palette, resizing, camera geometry.

Conventions used throughout [`segrobust.datasets`][segrobust.datasets]:

* images are float32 ``(3, H, W)`` in ``[0, 1]``; masks are int64 ``(H, W)`` holding
  CamVid class ids ``0..10`` and ``ignore_index`` (default 255) on void pixels;
* pixel ``(u, v)`` (column, row) has its centre at integer coordinates, the
  convention of `kornia.geometry.depth.depth_to_3d_v2`, so intrinsics put
  the principal point of an undistorted centred camera at ``((W - 1) / 2, (H - 1) / 2)``;
* camera frames are OpenCV-like: ``x`` right, ``y`` down, ``z`` forward; depth is
  the ``z`` coordinate (not the length of the ray), in metres;
* a pose ``T_a_to_b`` is a ``(4, 4)`` rigid transform with ``p_b = T_a_to_b @ p_a``.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_COLORS",
    "IGNORE_INDEX",
    "NUM_CAMVID_CLASSES",
    "camera_intrinsics",
    "check_index",
    "check_size",
    "colorize",
    "relative_pose",
    "resize_image",
    "resize_mask",
    "scale_intrinsics",
]

#: The 11 classes of the SegNet CamVid layout, in id order (void, id 11, is ignored).
CAMVID_CLASSES: Tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)

#: RGB colour of each class in the SegNet tutorial's CamVid palette (same order as the classes).
CAMVID_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)

NUM_CAMVID_CLASSES: int = len(CAMVID_CLASSES)

#: Label of pixels that do not count (CamVid's void class is mapped to it).
IGNORE_INDEX: int = 255

Size = Tuple[int, int]
ArrayOrTensor = Union[np.ndarray, torch.Tensor]


def check_size(size: object, name: str = "size") -> Size:
    """Validate an ``(H, W)`` pair of positive ints and return it as a tuple.

    Examples:
        >>> check_size([48, 64])
        (48, 64)
    """
    if (
        not isinstance(size, Sequence)
        or isinstance(size, str)
        or len(size) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        raise TypeError(f"{name} must be a pair of ints (H, W), got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive (H, W), got {size!r}")
    return height, width


def check_index(index: object, length: int) -> int:
    """Validate an item index of a data set of ``length`` items; negative indices count from the end.

    Examples:
        >>> check_index(-1, 5)
        4
        >>> check_index(5, 5)
        Traceback (most recent call last):
        ...
        IndexError: index 5 out of range for a data set of 5 items
    """
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a data set of {length} items")
    return index


def colorize(
    mask: ArrayOrTensor,
    palette: Sequence[Sequence[int]] = CAMVID_COLORS,
    ignore_index: int = IGNORE_INDEX,
) -> ArrayOrTensor:
    """Colour a mask of class ids with a palette; ignored and unknown ids become black.

    Args:
        mask: integer class ids ``(..., H, W)``, a tensor or a numpy array.
        palette: one RGB triple (0..255) per class id; defaults to `CAMVID_COLORS`.
        ignore_index: label drawn black.

    Returns:
        uint8 RGB ``(..., H, W, 3)`` (channels last, ready for ``PIL.Image.fromarray``),
        of the same kind (tensor or array) as ``mask``.

    Examples:
        >>> import torch
        >>> colorize(torch.tensor([[0, 3], [255, 8]])).tolist()[0]
        [[128, 128, 128], [128, 64, 128]]
        >>> colorize(torch.tensor([[255]])).tolist()
        [[[0, 0, 0]]]
    """
    as_numpy = isinstance(mask, np.ndarray)
    if not isinstance(mask, (np.ndarray, torch.Tensor)):
        raise TypeError(f"mask must be a torch.Tensor or numpy array, got {type(mask).__name__}")
    labels = torch.from_numpy(np.asarray(mask)) if as_numpy else mask
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"mask must hold integer class ids, got dtype {labels.dtype}")
    colors = torch.tensor([list(c) for c in palette], dtype=torch.uint8)
    if colors.ndim != 2 or colors.shape[1] != 3:
        raise ValueError(f"palette must be a sequence of RGB triples, got shape {tuple(colors.shape)}")
    # One extra black row for ignore/unknown ids so a single gather colours everything.
    table = torch.cat([colors, torch.zeros(1, 3, dtype=torch.uint8)])
    labels = labels.detach().to("cpu", torch.int64)
    known = (labels >= 0) & (labels < len(colors)) & (labels != ignore_index)
    rgb = table[torch.where(known, labels, torch.full_like(labels, len(colors)))]
    return rgb.numpy() if as_numpy else rgb


def resize_image(image: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize ``(C, H, W)`` or ``(N, C, H, W)`` float images bilinearly, antialiased when shrinking.

    Examples:
        >>> resize_image(torch.rand(3, 360, 480), (48, 64)).shape
        torch.Size([3, 48, 64])
    """
    height, width = check_size(size)
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise ValueError("image must be a tensor (C, H, W) or (N, C, H, W)")
    if tuple(image.shape[-2:]) == (height, width):
        return image
    batch = image if image.ndim == 4 else image[None]
    out = F.interpolate(
        batch.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True
    ).clamp_(0.0, 1.0)
    return out if image.ndim == 4 else out[0]


def resize_mask(mask: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize integer masks ``(H, W)`` or ``(N, H, W)`` with nearest-neighbour sampling.

    ``nearest-exact`` samples at pixel centres, so label maps stay aligned with
    the bilinearly resized image (plain ``nearest`` shifts them by half a pixel).

    Examples:
        >>> resize_mask(torch.zeros(360, 480, dtype=torch.long), (48, 64)).shape
        torch.Size([48, 64])
    """
    height, width = check_size(size)
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise ValueError("mask must be a tensor (H, W) or (N, H, W)")
    if tuple(mask.shape[-2:]) == (height, width):
        return mask
    # The source row and column torch's nearest-exact picks, gathered from the mask itself: every id
    # is kept bit for bit (16- and 32-bit ids included; interpolating the ids as float32 would not).
    rows = _nearest_exact_sources(mask.shape[-2], height, mask.device)
    cols = _nearest_exact_sources(mask.shape[-1], width, mask.device)
    return mask.index_select(-2, rows).index_select(-1, cols)


def _nearest_exact_sources(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    positions = torch.arange(size_in, dtype=torch.float32, device=device).view(1, 1, -1)
    return F.interpolate(positions, size=size_out, mode="nearest-exact").view(-1).long()


def camera_intrinsics(size: Size, horizontal_fov_deg: float = 60.0) -> torch.Tensor:
    """Pinhole intrinsics ``(3, 3)`` of a centred camera with square pixels.

    ``fx = fy = (W / 2) / tan(fov / 2)`` and the principal point is the image
    centre ``((W - 1) / 2, (H - 1) / 2)`` (pixel centres at integer coordinates).

    Examples:
        >>> K = camera_intrinsics((96, 128), horizontal_fov_deg=90.0)
        >>> [round(v, 3) for v in K[0].tolist()], K[1, 2].item()
        ([64.0, 0.0, 63.5], 47.5)
    """
    height, width = check_size(size)
    if not 1.0 <= float(horizontal_fov_deg) <= 170.0:
        raise ValueError(f"horizontal_fov_deg must be in [1, 170], got {horizontal_fov_deg}")
    focal = 0.5 * width / math.tan(math.radians(float(horizontal_fov_deg)) / 2.0)
    return torch.tensor(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )


def scale_intrinsics(K: torch.Tensor, from_size: Size, to_size: Size) -> torch.Tensor:
    """Intrinsics of the same camera after the image is resized from ``from_size`` to ``to_size``.

    Keeps the pixel-centre convention: ``u' + 0.5 = (u + 0.5) * W' / W``.

    Examples:
        >>> K = camera_intrinsics((360, 480))
        >>> torch.allclose(scale_intrinsics(K, (360, 480), (96, 128)), camera_intrinsics((96, 128)))
        True
    """
    h0, w0 = check_size(from_size, "from_size")
    h1, w1 = check_size(to_size, "to_size")
    if not isinstance(K, torch.Tensor) or K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be a tensor (..., 3, 3), got {getattr(K, 'shape', type(K))}")
    sx, sy = w1 / w0, h1 / h0
    out = K.clone()
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def relative_pose(cam_to_world_src: torch.Tensor, cam_to_world_dst: torch.Tensor) -> torch.Tensor:
    """Transform mapping points in the source camera frame to the destination camera frame.

    ``T_src_to_dst = inverse(cam_to_world_dst) @ cam_to_world_src``: with the
    current frame as source and the previous frame as destination this is
    ``T_{cur->prev}``, the ``src_trans_dst`` argument that
    `kornia.geometry.depth.warp_frame_depth` needs to warp the previous
    image onto the current one (kornia's "dst" is the frame holding the depth).

    Examples:
        >>> forward = torch.eye(4); forward[2, 3] = 1.0  # a camera 1 m further along z
        >>> relative_pose(torch.eye(4), forward)[:3, 3].tolist()
        [0.0, 0.0, -1.0]
    """
    for name, pose in (("cam_to_world_src", cam_to_world_src), ("cam_to_world_dst", cam_to_world_dst)):
        if not isinstance(pose, torch.Tensor) or pose.shape[-2:] != (4, 4):
            raise ValueError(f"{name} must be a tensor (..., 4, 4), got {getattr(pose, 'shape', type(pose))}")
    rot = cam_to_world_dst[..., :3, :3]
    trans = cam_to_world_dst[..., :3, 3:]
    # Closed-form rigid inverse: exact and cheaper than a general matrix inverse.
    inv = torch.zeros_like(cam_to_world_dst)
    inv[..., :3, :3] = rot.transpose(-1, -2)
    inv[..., :3, 3:] = -rot.transpose(-1, -2) @ trans
    inv[..., 3, 3] = 1.0
    return inv @ cam_to_world_src
