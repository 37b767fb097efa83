"""SyntheticStreets: procedural street scenes, the library's built-in default data.

Each item is a street world drawn from ``(seed, split, index)`` and rendered
by the ray caster of `segrobust.datasets.synthetic.render`: a road with lane
markings, raised pavements, buildings with windows and shop fronts, parks
with fences, trees, lamps, signs, traffic lights, parked and stopped cars,
vans, buses, pedestrians and cyclists, under sunny or overcast skies. Labels
use CamVid's 11 class ids; metric depth and the camera intrinsics come free.

The video variants move the camera forward along the road with a small
lateral and yaw/pitch sway, and render the same *static* world from every
pose (other vehicles do not move), so the relative poses they return are
exact.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from segrobust.datasets.functional import (
    CAMVID_CLASSES,
    CAMVID_COLORS,
    camera_intrinsics,
    check_index,
    check_size,
    relative_pose,
)
from segrobust.datasets.synthetic.render import render_street
from segrobust.datasets.synthetic.scene import StreetScene, sample_street_scene

__all__ = ["SyntheticStreetTriplets", "SyntheticStreetVideo", "SyntheticStreets"]

_SPLITS = {"train": 0, "val": 1, "test": 2}
# Salts keep stills, videos and triplets with the same seed from sharing worlds.
_STILLS, _VIDEO, _TRIPLETS = 11, 12, 13

SpeedArg = Union[float, Tuple[float, float]]


def _check_count(value: object, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_max_depth(max_depth: object) -> float:
    if not isinstance(max_depth, (int, float)) or isinstance(max_depth, bool) or not 0 < max_depth < float("inf"):
        raise ValueError(f"max_depth must be a positive finite number of metres, got {max_depth!r}")
    return float(max_depth)


def _check_split(split: object) -> int:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    return _SPLITS[str(split)]


def _check_speed(speed: SpeedArg) -> Tuple[float, float]:
    low, high = (speed, speed) if isinstance(speed, (int, float)) else tuple(speed)
    if not (0.0 <= float(low) <= float(high) <= 40.0):
        raise ValueError(f"speed must be in [0, 40] m/s as a number or a (min, max) pair, got {speed!r}")
    return float(low), float(high)


class _Trajectory:
    """Camera path ``pose(t)`` through a scene: forward at constant speed with gentle sway.

    ``t`` is in seconds from the scene's camera placement. Lateral offset, yaw
    and pitch are small sinusoids (zero offset at ``t = 0``).
    """

    def __init__(self, scene: StreetScene, rng: np.random.Generator, speed: Tuple[float, float]) -> None:
        self.scene = scene
        self.speed = float(rng.uniform(*speed)) if speed[1] > speed[0] else speed[0]
        self.lateral = (rng.uniform(0.0, 0.25), rng.uniform(0.3, 1.2), rng.uniform(0, 2 * math.pi))
        self.yaw = (math.radians(rng.uniform(0.0, 2.0)), rng.uniform(0.4, 1.5), rng.uniform(0, 2 * math.pi))
        self.pitch = (math.radians(rng.uniform(0.0, 0.6)), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * math.pi))

    @staticmethod
    def _sway(params: Tuple[float, float, float], t: float) -> float:
        amplitude, omega, phase = params
        return amplitude * (math.sin(omega * t + phase) - math.sin(phase))

    def pose(self, t: float) -> torch.Tensor:
        return self.scene.camera_to_world(
            dx=self.speed * t,
            dy=self._sway(self.lateral, t),
            dyaw=self._sway(self.yaw, t),
            dpitch=self._sway(self.pitch, t),
        )


class _Cache:
    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self.items: Dict[int, dict] = {}

    def get(self, index: int, make) -> dict:
        if not self.enabled:
            return make(index)
        if index not in self.items:
            self.items[index] = make(index)
        # Copies: callers may edit the item (even in place) without touching the cache.
        return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in self.items[index].items()}


class SyntheticStreets(Dataset):
    """Procedural street scenes with CamVid labels, metric depth and intrinsics.

    Items are rendered lazily and, with ``cache=True``, kept in memory, so the
    second epoch costs nothing. Item ``i`` depends only on ``(seed, split, i)``
    (and the rendering arguments), never on the access order or on ``n``.

    Args:
        n: number of scenes.
        size: image size ``(H, W)``.
        seed: base seed.
        split: ``"train"``, ``"val"`` or ``"test"``; different splits draw
            disjoint worlds from the same seed (held-out scenes).
        horizontal_fov_deg: camera field of view (sets ``K``).
        max_depth: depth of the sky and cap for far geometry, metres.
        noise: add the per-scene sensor noise.
        cache: keep rendered items in memory.

    Items:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64 CamVid ids
        0..10, "depth": (1, H, W) float32 metres (camera z), "K": (3, 3) float32,
        "name": str}``.

    Examples:
        >>> data = SyntheticStreets(n=2, size=(24, 32), seed=0)
        >>> item = data[0]
        >>> item["image"].shape, item["mask"].shape, item["depth"].shape, item["K"].shape
        (torch.Size([3, 24, 32]), torch.Size([24, 32]), torch.Size([1, 24, 32]), torch.Size([3, 3]))
        >>> bool(torch.equal(item["image"], SyntheticStreets(n=5, size=(24, 32), seed=0)[0]["image"]))
        True
    """

    num_classes = 11
    ignore_index = 255
    class_names = CAMVID_CLASSES
    palette = CAMVID_COLORS

    def __init__(
        self,
        n: int = 200,
        size: Sequence[int] = (96, 128),
        seed: int = 0,
        split: str = "train",
        horizontal_fov_deg: float = 60.0,
        max_depth: float = 100.0,
        noise: bool = True,
        cache: bool = True,
    ) -> None:
        self.n = _check_count(n, "n", 0)
        _init_render_settings(self, size, seed, split, horizontal_fov_deg, max_depth, noise, cache)

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> StreetScene:
        """The world behind item ``index`` (for custom renders, e.g. other sizes or poses)."""
        index = check_index(index, self.n)
        return sample_street_scene(np.random.default_rng([self.seed, self._split_id, _STILLS, index]))

    def _render(self, index: int) -> dict:
        scene = self.scene(index)
        noise_seed = (self.seed * 1_000_003 + index * 7 + self._split_id) if self.noise else None
        out = render_street(
            scene, scene.camera_to_world(), self.K, self.size, max_depth=self.max_depth, noise_seed=noise_seed
        )
        out["K"] = self.K.clone()
        out["name"] = f"synthetic_{self.split}_{self.seed}_{index:05d}"
        return out

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, self.n)
        return self._cache.get(index, self._render)


def _render_poses(data: Any, scene: StreetScene, poses: Sequence[torch.Tensor], index: int) -> List[dict]:
    """Renders ``scene`` from each camera pose of sample ``index``, with per-frame sensor noise seeds."""
    outs = []
    for k, pose in enumerate(poses):
        noise_seed = (data.seed * 1_000_003 + index * 1009 + k * 7 + data._split_id) if data.noise else None
        outs.append(render_street(scene, pose, data.K, data.size, max_depth=data.max_depth, noise_seed=noise_seed))
    return outs


def _init_render_settings(
    dataset: Any,
    size: Sequence[int],
    seed: int,
    split: str,
    horizontal_fov_deg: float,
    max_depth: float,
    noise: bool,
    cache: bool,
) -> None:
    """Check and store the rendering settings shared by every synthetic street data set."""
    dataset.size = check_size(size)
    dataset.seed = _check_count(seed, "seed", 0)
    dataset.split = split
    dataset._split_id = _check_split(split)
    dataset.K = camera_intrinsics(dataset.size, horizontal_fov_deg)
    dataset.max_depth = _check_max_depth(max_depth)
    dataset.noise = bool(noise)
    dataset._cache = _Cache(cache)


def _init_video_settings(
    dataset: Any,
    size: Sequence[int],
    seed: int,
    speed: SpeedArg,
    frame_interval: float,
    split: str,
    horizontal_fov_deg: float,
    max_depth: float,
    noise: bool,
    cache: bool,
) -> None:
    """Check and store the settings shared by the synthetic video data sets."""
    _init_render_settings(dataset, size, seed, split, horizontal_fov_deg, max_depth, noise, cache)
    dataset.speed = _check_speed(speed)
    if not 0.0 < float(frame_interval) <= 2.0:
        raise ValueError(f"frame_interval must be in (0, 2] seconds, got {frame_interval}")
    dataset.frame_interval = float(frame_interval)


class SyntheticStreetVideo(Dataset):
    """Sequences of consecutive frames driving down a synthetic street, with exact poses.

    Item ``i`` is one sequence of ``length`` frames ``frame_interval`` seconds
    apart; the camera drives along the road at ``speed`` with a small lateral,
    yaw and pitch sway. The world is static (cars do not move), so the poses
    are exact. Relative poses between frames ``a`` and ``b`` follow from
    [`relative_pose`][segrobust.datasets.relative_pose]:
    ``T_a_to_b = relative_pose(cam_to_world[a], cam_to_world[b])``.

    Args:
        num_sequences: number of sequences (one world each).
        length: frames per sequence.
        size: image size ``(H, W)``.
        seed: base seed.
        speed: metres per second, or a ``(min, max)`` range drawn per sequence.
        frame_interval: seconds between frames.
        split, horizontal_fov_deg, max_depth, noise, cache: as in [`SyntheticStreets`][segrobust.datasets.SyntheticStreets].

    Items:
        ``{"frames": (L, 3, H, W), "masks": (L, H, W) int64, "depth": (L, 1, H, W)
        metres, "K": (3, 3), "cam_to_world": (L, 4, 4) camera-to-world poses
        (OpenCV camera axes; world X forward, Y left, Z up), "name": str}``.

    Examples:
        >>> video = SyntheticStreetVideo(num_sequences=1, length=3, size=(24, 32))
        >>> seq = video[0]
        >>> seq["frames"].shape, seq["cam_to_world"].shape
        (torch.Size([3, 3, 24, 32]), torch.Size([3, 4, 4]))
        >>> bool(seq["cam_to_world"][2, 0, 3] > seq["cam_to_world"][0, 0, 3])  # drives forward (+X)
        True
    """

    num_classes = 11
    ignore_index = 255
    class_names = CAMVID_CLASSES
    palette = CAMVID_COLORS

    def __init__(
        self,
        num_sequences: int = 10,
        length: int = 10,
        size: Sequence[int] = (96, 128),
        seed: int = 0,
        speed: SpeedArg = 8.0,
        frame_interval: float = 0.1,
        split: str = "train",
        horizontal_fov_deg: float = 60.0,
        max_depth: float = 100.0,
        noise: bool = True,
        cache: bool = False,
    ) -> None:
        self.num_sequences = _check_count(num_sequences, "num_sequences", 0)
        self.length = _check_count(length, "length", 1)
        _init_video_settings(
            self, size, seed, speed, frame_interval, split, horizontal_fov_deg, max_depth, noise, cache
        )

    def __len__(self) -> int:
        return self.num_sequences

    def _world(self, index: int) -> Tuple[StreetScene, _Trajectory]:
        rng = np.random.default_rng([self.seed, self._split_id, _VIDEO, index])
        travel = self.speed[1] * self.frame_interval * (self.length - 1) + 1.0
        scene = sample_street_scene(rng, travel=travel)
        return scene, _Trajectory(scene, rng, self.speed)

    def _render(self, index: int) -> dict:
        scene, path = self._world(index)
        poses = [path.pose(k * self.frame_interval) for k in range(self.length)]
        outs = _render_poses(self, scene, poses, index)
        return {
            "frames": torch.stack([out["image"] for out in outs]),
            "masks": torch.stack([out["mask"] for out in outs]),
            "depth": torch.stack([out["depth"] for out in outs]),
            "K": self.K.clone(),
            "cam_to_world": torch.stack(poses),
            "name": f"synthetic_video_{self.split}_{self.seed}_{index:05d}",
        }

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, self.num_sequences)
        return self._cache.get(index, self._render)


class SyntheticStreetTriplets(Dataset):
    """Frame triplets (previous, current, next) with the current frame's labels, depth and exact poses.

    The format consumed by self-supervised depth training (monodepth2-style).
    Each item is its own world; the camera drives forward at ``speed`` with a
    small sway and the three frames are ``frame_interval`` seconds apart. The
    world is static, so poses are exact.

    Pose convention: ``poses[0] = T_{cur->prev}`` and ``poses[1] = T_{cur->next}``
    map a point expressed in the *current* camera frame to the previous / next
    camera frame (``p_prev = T_{cur->prev} @ p_cur``; OpenCV camera axes,
    metres). This is exactly the ``src_trans_dst`` argument of
    `kornia.geometry.depth.warp_frame_depth` with the neighbour as source
    and the current frame (holding the depth) as destination::

        warped_prev = warp_frame_depth(frames[None, 0], depth[None], poses[None, 0], K[None])
        # ~= frames[1] except at occlusions and where the point left the view

    Depth is the camera-``z`` depth in metres (``normalize_points=False`` in kornia).

    Args:
        n: number of triplets (one world each).
        size: image size ``(H, W)``.
        seed: base seed.
        speed: metres per second, or a ``(min, max)`` range drawn per item.
        frame_interval: seconds between consecutive frames (default 0.1 s:
            0.8 m per frame at the default 8 m/s).
        split, horizontal_fov_deg, max_depth, noise, cache: as in [`SyntheticStreets`][segrobust.datasets.SyntheticStreets].

    Items:
        ``{"frames": (3, 3, H, W) float32 = (previous, current, next), "mask": (H, W)
        int64, "depth": (1, H, W) float32, "K": (3, 3) float32, "poses": (2, 4, 4)
        float32 = (T_{cur->prev}, T_{cur->next}), "name": str}``.

    Examples:
        >>> triplets = SyntheticStreetTriplets(n=1, size=(24, 32))
        >>> item = triplets[0]
        >>> item["frames"].shape, item["poses"].shape
        (torch.Size([3, 3, 24, 32]), torch.Size([2, 4, 4]))
        >>> round(float(item["poses"][0, 2, 3]), 1)  # the current camera is 0.8 m ahead of the previous
        0.8
    """

    num_classes = 11
    ignore_index = 255
    class_names = CAMVID_CLASSES
    palette = CAMVID_COLORS

    def __init__(
        self,
        n: int = 200,
        size: Sequence[int] = (96, 128),
        seed: int = 0,
        speed: SpeedArg = 8.0,
        frame_interval: float = 0.1,
        split: str = "train",
        horizontal_fov_deg: float = 60.0,
        max_depth: float = 100.0,
        noise: bool = True,
        cache: bool = True,
    ) -> None:
        self.n = _check_count(n, "n", 0)
        _init_video_settings(
            self, size, seed, speed, frame_interval, split, horizontal_fov_deg, max_depth, noise, cache
        )

    def __len__(self) -> int:
        return self.n

    def _render(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self._split_id, _TRIPLETS, index])
        # The scene's camera placement is the *current* frame; the previous frame
        # lies behind it, still inside the obstacle-free corridor.
        scene = sample_street_scene(rng, travel=self.speed[1] * self.frame_interval + 1.0)
        path = _Trajectory(scene, rng, self.speed)
        poses = [path.pose(k * self.frame_interval) for k in (-1, 0, 1)]
        outs = _render_poses(self, scene, poses, index)
        current = outs[1]
        return {
            "frames": torch.stack([out["image"] for out in outs]),
            "mask": current["mask"],
            "depth": current["depth"],
            "K": self.K.clone(),
            "poses": torch.stack([relative_pose(poses[1], poses[0]), relative_pose(poses[1], poses[2])]),
            "name": f"synthetic_triplet_{self.split}_{self.seed}_{index:05d}",
        }

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, self.n)
        return self._cache.get(index, self._render)
