"""Procedural street worlds: the geometry, materials and lighting that [render][segrobust.datasets.synthetic.render] draws.

World frame: ``X`` forward along the street, ``Y`` to the left, ``Z`` up, metres.
The road occupies ``|Y| < road_half_width`` on the ground plane ``Z = 0``;
raised pavements run on both sides up to the facade line
``|Y| = road_half_width + pavement_width``; buildings, parks with fences and
trees, street lamps, signs, traffic lights, parked and stopped cars, vans,
pedestrians and cyclists populate the street. Everything is an axis-aligned
box or a sphere, which keeps the ray caster fully vectorised.

A scene is drawn from a `numpy.random.Generator`, so ``(seed, index)``
fixes it completely. The camera corridor (the stretch of road the camera will
drive along) is kept free of obstacles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "BICYCLIST",
    "BUILDING",
    "CAR",
    "FENCE",
    "NUM_PARAMS",
    "PAVEMENT",
    "PEDESTRIAN",
    "POLE",
    "ROAD",
    "SIGN_SYMBOL",
    "SKY",
    "TREE",
    "CarParam",
    "FacadeParam",
    "FenceParam",
    "FoliageParam",
    "PavementParam",
    "SignParam",
    "StreetScene",
    "TrafficLightParam",
    "camera_to_world",
    "facade_params",
    "sample_street_scene",
]

# CamVid class ids.
SKY, BUILDING, POLE, ROAD, PAVEMENT, TREE, SIGN_SYMBOL, FENCE, CAR, PEDESTRIAN, BICYCLIST = range(11)

# Material ids understood by the ray caster's shaders.
MAT_SKY = 0
MAT_ROAD = 1
MAT_PAVEMENT = 2
MAT_FACADE = 3
MAT_PLAIN = 4
MAT_FOLIAGE = 5
MAT_CAR_BODY = 6
MAT_CAR_CABIN = 7
MAT_SIGN = 8
MAT_FENCE = 9
MAT_TRAFFIC_LIGHT = 10
#: Material parameters per primitive (``params[:, k]``); their meaning per material is named below.
NUM_PARAMS = 8


class FacadeParam:
    """Indices of a facade's (``MAT_FACADE``) material parameters, as read by its shader."""

    FLOOR_HEIGHT = 0  # metres from one floor to the next
    WINDOW_SPACING = 1  # metres between window centres along the facade
    WINDOW_WIDTH = 2  # window width as a fraction of the spacing
    WINDOW_HEIGHT = 3  # window height as a fraction of the floor height
    GROUND_FLOOR_HEIGHT = 4  # metres
    SHOP_FRONT = 5  # 1.0: shop windows and a fascia on the ground floor, 0.0: a door and windows
    TEXTURE_SEED = 6  # per-building seed of the window colours
    LIGHT_FRAMES = 7  # 1.0: light window frames, 0.0: frames darker than the wall


def facade_params(
    floor_height: float,
    window_spacing: float,
    window_width: float,
    window_height: float,
    ground_floor_height: float,
    shop_front: float,
    texture_seed: float,
    light_frames: float,
) -> Tuple[float, ...]:
    """A facade's material parameters in `FacadeParam` order."""
    return (
        floor_height,
        window_spacing,
        window_width,
        window_height,
        ground_floor_height,
        shop_front,
        texture_seed,
        light_frames,
    )


class CarParam:
    """Indices of a vehicle body's (``MAT_CAR_BODY``) and cabin's (``MAT_CAR_CABIN``) parameters."""

    FACING = 0  # +1 the front points to +X, -1 to -X
    BOX_VEHICLE = 1  # 1.0 van or bus (square front, window band), 0.0 car (body only)


class FoliageParam:
    """Index of a foliage sphere's (``MAT_FOLIAGE``) parameter."""

    NOISE_OFFSET = 0  # shifts the leaf noise so neighbouring crowns differ


class SignParam:
    """Indices of a sign panel's (``MAT_SIGN``) parameters."""

    BORDER_RGB = slice(0, 3)  # border and glyph colour
    TEXTURE_SEED = 3


class FenceParam:
    """Indices of a fence's (``MAT_FENCE``) parameters."""

    BACKING_RGB = slice(0, 3)  # colour seen between the bars (hedge, shadow)
    BAR_PERIOD = 3  # metres between bars
    BAR_HALF_WIDTH = 4  # metres
    TEXTURE_SEED = 5


class TrafficLightParam:
    """Index of a traffic light head's (``MAT_TRAFFIC_LIGHT``) parameter."""

    LIT_LAMP = 0  # 0 red, 1 amber, 2 green


class PavementParam:
    """Index of a pavement slab's (``MAT_PAVEMENT``) parameter."""

    SIDE = 0  # -1 right of the road, +1 left


_BUILDING_COLORS = np.array(
    [
        (0.56, 0.32, 0.24),  # brick
        (0.44, 0.25, 0.19),  # dark brick
        (0.78, 0.70, 0.56),  # sandstone
        (0.86, 0.83, 0.74),  # cream render
        (0.88, 0.88, 0.86),  # white render
        (0.58, 0.57, 0.55),  # concrete
        (0.36, 0.36, 0.38),  # dark stone
        (0.80, 0.72, 0.48),  # yellow stone
        (0.62, 0.68, 0.74),  # painted blue-grey
        (0.70, 0.55, 0.45),  # terracotta render
    ]
)
_CAR_COLORS = np.array(
    [
        (0.85, 0.85, 0.85),
        (0.06, 0.06, 0.07),
        (0.55, 0.56, 0.58),
        (0.25, 0.26, 0.28),
        (0.60, 0.08, 0.06),
        (0.10, 0.20, 0.50),
        (0.12, 0.28, 0.18),
        (0.70, 0.62, 0.45),
        (0.85, 0.70, 0.10),
        (0.35, 0.10, 0.30),
    ]
)
_CLOTHES = np.array(
    [
        (0.08, 0.08, 0.10),
        (0.15, 0.17, 0.30),
        (0.30, 0.28, 0.25),
        (0.55, 0.10, 0.10),
        (0.45, 0.45, 0.48),
        (0.70, 0.65, 0.55),
        (0.10, 0.25, 0.20),
        (0.80, 0.80, 0.78),
        (0.35, 0.20, 0.12),
    ]
)
_SKIN = np.array([(0.85, 0.66, 0.52), (0.62, 0.43, 0.30), (0.40, 0.27, 0.18), (0.92, 0.75, 0.62)])
_SIGN_COLORS = np.array(
    [(0.10, 0.25, 0.65), (0.80, 0.10, 0.08), (0.95, 0.95, 0.92), (0.92, 0.75, 0.10), (0.10, 0.45, 0.20)]
)


@dataclass
class StreetScene:
    """One procedural street: primitives, road layout, lighting and camera defaults.

    Boxes are ``[lo, hi]`` corners in world coordinates; spheres are centre and
    radius. Each primitive carries a CamVid class id, a material id, an RGB
    albedo and ``NUM_PARAMS`` material parameters (named per material: ``FacadeParam``, ...).
    ``skyline_*`` arrays describe the building heights along each facade line,
    used for the street-canyon sun shadows. Build one with
    [`sample_street_scene`][segrobust.datasets.sample_street_scene].

    Examples:
        >>> scene = sample_street_scene(np.random.default_rng(0))
        >>> scene.box_lo.shape[1], scene.box_hi.shape == scene.box_lo.shape
        (3, True)
    """

    box_lo: np.ndarray
    box_hi: np.ndarray
    box_class: np.ndarray
    box_material: np.ndarray
    box_color: np.ndarray
    box_params: np.ndarray
    sphere_center: np.ndarray
    sphere_radius: np.ndarray
    sphere_class: np.ndarray
    sphere_material: np.ndarray
    sphere_color: np.ndarray
    sphere_params: np.ndarray
    road_half_width: float
    pavement_width: float
    kerb_height: float
    lane_count: int
    asphalt: float
    edge_line_style: int  # 0 none, 1 white line, 2 double yellow
    dash_period: float
    zebra_x: np.ndarray
    pavement_color: np.ndarray
    tile_size: float
    skyline_left: np.ndarray  # (n, 3): x0, x1, height of buildings on the left facade line
    skyline_right: np.ndarray
    car_footprints: np.ndarray  # (n, 4): xmin, xmax, ymin, ymax
    sunny: bool
    sun_direction: np.ndarray
    sun_strength: float
    ambient: float
    sky_horizon: np.ndarray
    sky_zenith: np.ndarray
    cloud_cover: float
    haze_distance: float
    exposure: float
    white_balance: np.ndarray
    noise_std: float
    vignette: float
    texture_seed: int
    camera_x: float
    camera_y: float
    camera_height: float
    camera_yaw: float
    camera_pitch: float
    camera_roll: float
    tensors: dict = field(default_factory=dict, repr=False)

    def torch_tensors(self) -> dict:
        """The primitive table as float32/int64 tensors (built once and cached)."""
        if not self.tensors:
            num_boxes, num_spheres = len(self.box_lo), len(self.sphere_center)
            lo = np.concatenate([self.box_lo, self.sphere_center - self.sphere_radius[:, None]])
            hi = np.concatenate([self.box_hi, self.sphere_center + self.sphere_radius[:, None]])
            self.tensors.update(
                num_boxes=num_boxes,
                num_spheres=num_spheres,
                lo=torch.as_tensor(lo, dtype=torch.float32).reshape(-1, 3),
                hi=torch.as_tensor(hi, dtype=torch.float32).reshape(-1, 3),
                cls=torch.as_tensor(np.concatenate([self.box_class, self.sphere_class]), dtype=torch.int64),
                mat=torch.as_tensor(np.concatenate([self.box_material, self.sphere_material]), dtype=torch.int64),
                color=torch.as_tensor(np.concatenate([self.box_color, self.sphere_color]), dtype=torch.float32).reshape(
                    -1, 3
                ),
                params=torch.as_tensor(
                    np.concatenate([self.box_params, self.sphere_params]), dtype=torch.float32
                ).reshape(-1, NUM_PARAMS),
                lo_np=lo.reshape(-1, 3),
                hi_np=hi.reshape(-1, 3),
            )
        return self.tensors

    def camera_to_world(self, dx: float = 0.0, dy: float = 0.0, dyaw: float = 0.0, dpitch: float = 0.0) -> torch.Tensor:
        """Camera-to-world pose of the scene's camera, optionally moved by the given offsets."""
        return camera_to_world(
            self.camera_x + dx,
            self.camera_y + dy,
            self.camera_height,
            self.camera_yaw + dyaw,
            self.camera_pitch + dpitch,
            self.camera_roll,
        )


def camera_to_world(
    x: float, y: float, height: float, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0
) -> torch.Tensor:
    """Camera-to-world ``(4, 4)`` pose of a street camera (OpenCV camera axes).

    At zero angles the camera looks along world ``+X`` with its ``x`` axis to
    world ``-Y`` (right) and its ``y`` axis down. ``yaw`` (radians) turns left,
    ``pitch`` looks up, ``roll`` turns clockwise as seen by the camera.

    Examples:
        >>> pose = camera_to_world(0.0, 0.0, 1.5)
        >>> pose[:3, 2].tolist(), pose[:3, 3].tolist()  # optical axis, centre
        ([1.0, 0.0, 0.0], [0.0, 0.0, 1.5])
    """
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    yaw_world = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    pitch_cam = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    roll_cam = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[:3, :3] = yaw_world @ base @ pitch_cam @ roll_cam
    pose[:3, 3] = (x, y, height)
    return torch.tensor(pose, dtype=torch.float32)


class _Primitives:
    """Accumulates boxes and spheres while a scene is being laid out."""

    def __init__(self) -> None:
        self.boxes: List[tuple] = []
        self.spheres: List[tuple] = []

    def box(
        self,
        lo: Sequence[float],
        hi: Sequence[float],
        cls: int,
        mat: int,
        color: Sequence[float],
        params: Sequence[float] = (),
    ) -> None:
        lo_arr, hi_arr = np.minimum(lo, hi), np.maximum(lo, hi)
        self.boxes.append((lo_arr, hi_arr, cls, mat, np.asarray(color, float), _pad(params)))

    def sphere(
        self,
        center: Sequence[float],
        radius: float,
        cls: int,
        mat: int,
        color: Sequence[float],
        params: Sequence[float] = (),
    ) -> None:
        self.spheres.append(
            (np.asarray(center, float), float(radius), cls, mat, np.asarray(color, float), _pad(params))
        )


def _pad(params: Sequence[float]) -> np.ndarray:
    out = np.zeros(NUM_PARAMS)
    out[: len(params)] = params
    return out


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float) -> np.ndarray:
    out = color * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 3, 3)
    return np.minimum(np.maximum(out, 0.02), 0.97)


def _add_car(
    prims: _Primitives,
    rng: np.random.Generator,
    x: float,
    y: float,
    facing: int,
    base_z: float = 0.0,
    kind: Optional[str] = None,
) -> Tuple[float, float, float, float]:
    """Add a car, van or bus centred at ``(x, y)``; return its footprint."""
    kind = kind or rng.choice(["car", "van", "bus"], p=[0.8, 0.15, 0.05])
    color = _jitter(rng, _CAR_COLORS[rng.integers(len(_CAR_COLORS))], 0.08)
    if kind == "bus":
        color = _jitter(rng, np.array([(0.75, 0.1, 0.08), (0.85, 0.85, 0.8), (0.2, 0.35, 0.6)][rng.integers(3)]), 0.05)
        length, width, height = rng.uniform(9.5, 12.0), 2.5, rng.uniform(3.0, 4.2)
    elif kind == "van":
        length, width, height = rng.uniform(4.8, 6.5), rng.uniform(1.9, 2.1), rng.uniform(2.0, 2.6)
    else:
        length, width, height = rng.uniform(3.7, 4.8), rng.uniform(1.65, 1.85), rng.uniform(1.35, 1.6)
    hl, hw = length / 2, width / 2
    clearance = 0.22 if kind == "car" else 0.3
    wheel_r = 0.32 if kind == "car" else 0.45
    body_top = base_z + (0.62 * height if kind == "car" else height)
    is_box_vehicle = 0.0 if kind == "car" else 1.0
    prims.box(
        (x - hl, y - hw, base_z + clearance),
        (x + hl, y + hw, body_top),
        CAR,
        MAT_CAR_BODY,
        color,
        (facing, is_box_vehicle),
    )
    if kind == "car":
        cabin_len = length * rng.uniform(0.48, 0.58)
        cabin_x = x - facing * length * rng.uniform(0.02, 0.08)
        prims.box(
            (cabin_x - cabin_len / 2, y - hw + 0.1, body_top),
            (cabin_x + cabin_len / 2, y + hw - 0.1, base_z + height),
            CAR,
            MAT_CAR_CABIN,
            color,
            (facing,),
        )
    tyre = np.array([0.05, 0.05, 0.055])
    for ax in (-1, 1):
        wx = x + ax * (hl - max(0.75, 0.2 * length))
        for side in (-1, 1):
            wy = y + side * (hw - 0.14)
            prims.box(
                (wx - wheel_r, wy - 0.12, base_z), (wx + wheel_r, wy + 0.12, base_z + 2 * wheel_r), CAR, MAT_PLAIN, tyre
            )
    return (x - hl, x + hl, y - hw, y + hw)


def _add_person(
    prims: _Primitives,
    rng: np.random.Generator,
    x: float,
    y: float,
    base_z: float,
    cls: int = PEDESTRIAN,
    seated: bool = False,
) -> None:
    height = rng.uniform(1.55, 1.92)
    trousers = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 0.1)
    coat = _jitter(rng, _CLOTHES[rng.integers(len(_CLOTHES))], 0.1)
    skin = _SKIN[rng.integers(len(_SKIN))]
    half_w, half_d = rng.uniform(0.19, 0.25), rng.uniform(0.12, 0.16)
    leg_top = base_z + (0.47 if not seated else 0.55) * height
    head_r = 0.105 * height / 1.75
    torso_top = base_z + height - 2 * head_r - 0.03
    if not seated:
        prims.box(
            (x - half_d, y - half_w * 0.8, base_z), (x + half_d, y + half_w * 0.8, leg_top), cls, MAT_PLAIN, trousers
        )
    prims.box(
        (x - half_d * 1.05, y - half_w, leg_top), (x + half_d * 1.05, y + half_w, torso_top), cls, MAT_PLAIN, coat
    )
    prims.sphere((x, y, torso_top + head_r + 0.02), head_r, cls, MAT_PLAIN, skin)


def _add_tree(
    prims: _Primitives, rng: np.random.Generator, x: float, y: float, base_z: float, size: float = 1.0
) -> None:
    trunk_h = rng.uniform(1.8, 3.2) * size
    trunk_w = rng.uniform(0.14, 0.22) * size
    bark = _jitter(rng, np.array([0.30, 0.24, 0.18]), 0.15)
    prims.box(
        (x - trunk_w, y - trunk_w, base_z),
        (x + trunk_w, y + trunk_w, base_z + trunk_h + 0.8 * size),
        TREE,
        MAT_PLAIN,
        bark,
    )
    green = _jitter(
        rng,
        np.array([(0.22, 0.36, 0.12), (0.16, 0.30, 0.14), (0.30, 0.38, 0.14), (0.20, 0.28, 0.18)][rng.integers(4)]),
        0.12,
    )
    radius = rng.uniform(1.3, 2.3) * size
    center_z = base_z + trunk_h + radius * 0.8
    for k in range(int(rng.integers(3, 6))):
        r = radius * (rng.uniform(0.6, 0.85) if k else 1.0)
        offset = rng.normal(0, 0.45 * radius, 3) if k else np.zeros(3)
        offset[2] = abs(offset[2]) * 0.6
        prims.sphere(
            (x + offset[0], y + offset[1], center_z + offset[2]),
            r,
            TREE,
            MAT_FOLIAGE,
            _jitter(rng, green, 0.06),
            (rng.uniform(0, 1000),),
        )


def _add_lamp(
    prims: _Primitives, rng: np.random.Generator, x: float, y: float, base_z: float, toward_road: float, style: int
) -> None:
    height = rng.uniform(6.0, 8.5)
    w = 0.08 + 0.03 * style
    metal = np.array([(0.35, 0.36, 0.37), (0.12, 0.13, 0.13), (0.55, 0.56, 0.55)][style])
    prims.box((x - w, y - w, base_z), (x + w, y + w, base_z + height), POLE, MAT_PLAIN, metal)
    arm = rng.uniform(1.0, 1.8)
    y_end = y + toward_road * arm
    prims.box(
        (x - 0.05, min(y, y_end), base_z + height - 0.15),
        (x + 0.05, max(y, y_end), base_z + height - 0.05),
        POLE,
        MAT_PLAIN,
        metal,
    )
    prims.box(
        (x - 0.25, y_end - 0.18, base_z + height - 0.3),
        (x + 0.25, y_end + 0.18, base_z + height - 0.08),
        POLE,
        MAT_PLAIN,
        metal * 0.8,
    )


def _add_sign(prims: _Primitives, rng: np.random.Generator, x: float, y: float, base_z: float) -> None:
    height = rng.uniform(2.2, 3.0)
    prims.box((x - 0.04, y - 0.04, base_z), (x + 0.04, y + 0.04, base_z + height), POLE, MAT_PLAIN, (0.45, 0.46, 0.47))
    half_w, half_h = rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.55)
    color = _SIGN_COLORS[rng.integers(len(_SIGN_COLORS))]
    border = np.array([0.95, 0.95, 0.95]) if color.mean() < 0.8 else np.array([0.8, 0.1, 0.08])
    prims.box(
        (x - 0.06, y - half_w, base_z + height - 0.1),
        (x - 0.02, y + half_w, base_z + height + 2 * half_h - 0.1),
        SIGN_SYMBOL,
        MAT_SIGN,
        color,
        (*border, rng.uniform(0, 1000)),
    )


def _add_traffic_light(prims: _Primitives, rng: np.random.Generator, x: float, y: float, base_z: float) -> None:
    height = rng.uniform(2.6, 3.2)
    prims.box((x - 0.06, y - 0.06, base_z), (x + 0.06, y + 0.06, base_z + height), POLE, MAT_PLAIN, (0.12, 0.12, 0.12))
    prims.box(
        (x - 0.25, y - 0.16, base_z + height),
        (x + 0.05, y + 0.16, base_z + height + 0.85),
        SIGN_SYMBOL,
        MAT_TRAFFIC_LIGHT,
        (0.08, 0.08, 0.08),
        (float(rng.integers(3)),),
    )


def sample_street_scene(rng: np.random.Generator, travel: float = 0.0) -> StreetScene:
    """Draw a street world and a camera placement from ``rng``.

    Args:
        rng: the random generator; the same generator state gives the same scene.
        travel: metres the camera will drive forward along ``+X`` from its
            start; the road ahead of it over that stretch is kept clear.

    Examples:
        >>> a = sample_street_scene(np.random.default_rng(3))
        >>> b = sample_street_scene(np.random.default_rng(3))
        >>> bool(np.array_equal(a.box_lo, b.box_lo)), a.camera_height == b.camera_height
        (True, True)
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not 0.0 <= float(travel) <= 10_000.0:
        raise ValueError(f"travel must be in [0, 10000] metres, got {travel}")
    # The stages draw from rng in this order; changing it changes every world.
    prims = _Primitives()
    layout = _draw_layout(rng, travel)
    pave_color = _add_pavements(prims, rng, layout)
    skylines = _add_buildings_and_parks(prims, rng, layout)
    _add_street_furniture(prims, rng, layout)
    footprints = _add_traffic(prims, rng, layout)
    _add_pedestrians(prims, rng, layout, footprints)
    sky = _draw_sky(rng)
    return _assemble_scene(prims, rng, layout, pave_color, skylines, footprints, sky)


@dataclass
class _Layout:
    """The road cross-section, the stretch of street to build and the camera's lane."""

    lane_count: int
    lane_width: float
    road_half: float
    pavement_w: float
    kerb_h: float
    cam_x: float
    x_start: float
    x_end: float
    cam_y: float
    corridor: Tuple[float, float, float, float]

    @property
    def facade(self) -> float:
        return self.road_half + self.pavement_w

    def in_corridor(self, x0: float, x1: float, y0: float, y1: float) -> bool:
        """Whether the footprint overlaps the obstacle-free stretch the camera drives along."""
        c = self.corridor
        return x1 > c[0] and x0 < c[1] and y1 > c[2] and y0 < c[3]


def _draw_layout(rng: np.random.Generator, travel: float) -> _Layout:
    lane_count = int(rng.choice([2, 2, 3, 4]))
    lane_width = rng.uniform(3.0, 3.6)
    road_half = lane_count * lane_width / 2
    pavement_w = rng.uniform(2.2, 5.0)
    kerb_h = rng.uniform(0.1, 0.16)
    cam_x = rng.uniform(0.0, 10.0)
    # The world only needs to reach as far as the camera can see through the haze.
    x_start, x_end = cam_x - 25.0, cam_x + travel + 160.0
    lane = int(rng.integers(lane_count))
    cam_y = -road_half + (lane + 0.5) * lane_width + rng.uniform(-0.4, 0.4)
    corridor = (cam_x - 8.0, cam_x + travel + 10.0, cam_y - 1.6, cam_y + 1.6)
    return _Layout(lane_count, lane_width, road_half, pavement_w, kerb_h, cam_x, x_start, x_end, cam_y, corridor)


def _add_pavements(prims: _Primitives, rng: np.random.Generator, layout: _Layout) -> np.ndarray:
    pave_color = _jitter(
        rng,
        np.array([(0.60, 0.60, 0.58), (0.66, 0.62, 0.55), (0.52, 0.52, 0.54), (0.70, 0.68, 0.64)][rng.integers(4)]),
        0.06,
    )
    for side in (-1, 1):
        y0, y1 = sorted((side * layout.road_half, side * layout.facade))
        prims.box(
            (layout.x_start, y0, 0.0), (layout.x_end, y1, layout.kerb_h), PAVEMENT, MAT_PAVEMENT, pave_color, (side,)
        )
    return pave_color


@dataclass
class _Streetscape:
    """Per-street style of the facade lines: building heights, palette, shop and park rates."""

    height_scale: float
    palette_bias: np.ndarray
    shop_rate: float
    park_rate: float


def _add_buildings_and_parks(prims: _Primitives, rng: np.random.Generator, layout: _Layout) -> dict:
    """Buildings and parks along both facade lines, a back row, and buildings closing the far end.

    Returns the skyline of each facade line (``{side: (n, 3) array}``).
    """
    style = _Streetscape(
        height_scale=rng.uniform(0.7, 1.4),
        palette_bias=rng.integers(len(_BUILDING_COLORS), size=3),
        shop_rate=rng.uniform(0.2, 0.9),
        park_rate=rng.uniform(0.0, 0.25),
    )
    skylines = {}
    for side in (-1, 1):
        skylines[side] = _add_facade_line(prims, rng, layout, style, side)
        _add_back_row(prims, rng, layout, style, side)
    for side in (-1, 1):
        ys = sorted((side * (layout.road_half + 0.5), side * (layout.facade + 30.0)))
        color = _jitter(rng, _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))], 0.07)
        prims.box(
            (layout.x_end, ys[0], 0.0),
            (layout.x_end + 15.0, ys[1], rng.uniform(10.0, 25.0)),
            BUILDING,
            MAT_FACADE,
            color,
            facade_params(3.2, 2.5, 0.5, 0.5, 3.5, 0.0, rng.uniform(0, 1000), 0.0),
        )
    return skylines


def _add_facade_line(
    prims: _Primitives, rng: np.random.Generator, layout: _Layout, style: _Streetscape, side: int
) -> np.ndarray:
    """Buildings, parks and gaps along one facade line; returns its skyline ``(n, 3)``: x0, x1, height."""
    facade = layout.facade
    skyline = []
    x = layout.x_start
    while x < layout.x_end:
        kind = rng.choice(["building", "park", "gap"], p=[0.9 - style.park_rate, style.park_rate, 0.1])
        if kind == "building":
            length = rng.uniform(5.0, 18.0)
            height = float(np.clip(rng.uniform(5.0, 18.0) * style.height_scale, 4.0, 30.0))
            setback = 0.0 if rng.random() < 0.7 else rng.uniform(0.3, 2.5)
            color_id = (
                style.palette_bias[rng.integers(3)] if rng.random() < 0.5 else rng.integers(len(_BUILDING_COLORS))
            )
            color = _jitter(rng, _BUILDING_COLORS[color_id], 0.07)
            params = facade_params(
                floor_height=rng.uniform(2.8, 3.6),
                window_spacing=rng.uniform(1.6, 3.2),
                window_width=rng.uniform(0.35, 0.6),
                window_height=rng.uniform(0.4, 0.65),
                ground_floor_height=rng.uniform(3.4, 4.6),
                shop_front=float(rng.random() < style.shop_rate),
                texture_seed=rng.uniform(0, 1000),
                light_frames=float(rng.random() < 0.35),
            )
            near = facade + setback
            ys = sorted((side * near, side * (near + rng.uniform(8.0, 14.0))))
            prims.box((x, ys[0], 0.0), (x + length, ys[1], height), BUILDING, MAT_FACADE, color, params)
            skyline.append((x, x + length, height if setback < 1.0 else 0.0))
        elif kind == "park":
            length = rng.uniform(10.0, 30.0)
            fence_h = rng.uniform(0.9, 1.6)
            bars = np.array([(0.06, 0.07, 0.06), (0.12, 0.2, 0.14), (0.4, 0.4, 0.4)][rng.integers(3)])
            backing = np.array([(0.12, 0.2, 0.1), (0.18, 0.26, 0.12), (0.15, 0.15, 0.14)][rng.integers(3)])
            ys = sorted((side * (facade - 0.05), side * (facade + 0.03)))
            prims.box(
                (x, ys[0], 0.0),
                (x + length, ys[1], fence_h),
                FENCE,
                MAT_FENCE,
                bars,
                (*backing, rng.uniform(0.12, 0.25), rng.uniform(0.015, 0.03), rng.uniform(0, 1000)),
            )
            for tx in np.arange(x + rng.uniform(1, 4), x + length - 1, rng.uniform(4.0, 8.0)):
                _add_tree(prims, rng, tx, side * (facade + rng.uniform(2.0, 9.0)), 0.0, rng.uniform(1.0, 1.6))
            skyline.append((x, x + length, 0.0))
        else:
            length = rng.uniform(8.0, 14.0)
            skyline.append((x, x + length, 0.0))
        x += length
    return np.array(skyline)


def _add_back_row(
    prims: _Primitives, rng: np.random.Generator, layout: _Layout, style: _Streetscape, side: int
) -> None:
    """A second row of buildings, showing through gaps and parks."""
    x = layout.x_start
    while x < layout.x_end:
        length = rng.uniform(10.0, 25.0)
        height = float(np.clip(rng.uniform(8.0, 22.0) * style.height_scale, 6.0, 35.0))
        color = _jitter(rng, _BUILDING_COLORS[rng.integers(len(_BUILDING_COLORS))], 0.07)
        params = facade_params(
            rng.uniform(2.8, 3.6),
            rng.uniform(1.6, 3.2),
            rng.uniform(0.35, 0.6),
            rng.uniform(0.4, 0.65),
            3.5,
            0.0,
            rng.uniform(0, 1000),
            0.0,
        )
        ys = sorted((side * (layout.facade + 16.0), side * (layout.facade + 28.0)))
        prims.box((x, ys[0], 0.0), (x + length, ys[1], height), BUILDING, MAT_FACADE, color, params)
        x += length


def _add_street_furniture(prims: _Primitives, rng: np.random.Generator, layout: _Layout) -> None:
    """Lamps, street trees, signs, traffic lights and kerb railings on the pavements."""
    road_half, kerb_h, cam_x = layout.road_half, layout.kerb_h, layout.cam_x
    x_start, x_end = layout.x_start, layout.x_end
    kerb_side_y = road_half + 0.35
    lamp_style = int(rng.integers(3))
    for side in (-1, 1):
        x = x_start + rng.uniform(0.0, 20.0)
        spacing = rng.uniform(18.0, 35.0)
        while x < x_end:
            _add_lamp(prims, rng, x, side * kerb_side_y, kerb_h, -side, lamp_style)
            x += spacing * rng.uniform(0.9, 1.1)
    if rng.random() < 0.6:
        tree_spacing = rng.uniform(7.0, 14.0)
        for side in (-1, 1):
            if rng.random() < 0.75:
                for tx in np.arange(x_start + rng.uniform(0, tree_spacing), x_end, tree_spacing):
                    if rng.random() < 0.85:
                        _add_tree(
                            prims,
                            rng,
                            tx + rng.uniform(-1, 1),
                            side * (road_half + rng.uniform(0.8, 1.3)),
                            kerb_h,
                            rng.uniform(0.8, 1.2),
                        )
    for _ in range(int(rng.integers(2, 7))):
        side = rng.choice([-1, 1])
        _add_sign(prims, rng, cam_x + rng.uniform(4.0, 80.0), side * (road_half + rng.uniform(0.3, 0.7)), kerb_h)
    if rng.random() < 0.5:
        jx = cam_x + rng.uniform(20.0, 70.0)
        for side in (-1, 1):
            if rng.random() < 0.8:
                _add_traffic_light(prims, rng, jx + rng.uniform(-2, 2), side * (road_half + 0.4), kerb_h)
    for _ in range(int(rng.integers(0, 3))):
        side = rng.choice([-1, 1])
        fx0 = cam_x + rng.uniform(-5.0, 60.0)
        ys = sorted((side * (road_half + 0.12), side * (road_half + 0.17)))
        prims.box(
            (fx0, ys[0], kerb_h),
            (fx0 + rng.uniform(4.0, 15.0), ys[1], kerb_h + 1.0),
            FENCE,
            MAT_FENCE,
            (0.55, 0.56, 0.55),
            (0.35, 0.36, 0.36, 0.3, 0.025, rng.uniform(0, 1000)),
        )


def _add_traffic(prims: _Primitives, rng: np.random.Generator, layout: _Layout) -> list:
    """Parked cars along the kerbs, stopped cars in the lanes, cyclists; returns the car footprints."""
    road_half, cam_x = layout.road_half, layout.cam_x
    footprints = []
    park_rate = rng.uniform(0.1, 0.85)
    for side in (-1, 1):
        x = layout.x_start + rng.uniform(0, 5)
        while x < layout.x_end:
            slot = rng.uniform(5.5, 8.0)
            if rng.random() < park_rate:
                cy = side * (road_half - 1.05)
                if not layout.in_corridor(x, x + slot, cy - 1.0, cy + 1.0):
                    footprints.append(_add_car(prims, rng, x + slot / 2, cy, int(rng.choice([-1, 1]))))
            x += slot
    for _ in range(int(rng.integers(0, 8))):
        lane_k = int(rng.integers(layout.lane_count))
        cy = -road_half + (lane_k + 0.5) * layout.lane_width + rng.uniform(-0.3, 0.3)
        cx = cam_x + rng.uniform(-10.0, 110.0)
        if layout.in_corridor(cx - 6.5, cx + 6.5, cy - 1.3, cy + 1.3):
            continue
        if any(abs(cx - (f[0] + f[1]) / 2) < 7.0 and abs(cy - (f[2] + f[3]) / 2) < 2.2 for f in footprints):
            continue
        footprints.append(_add_car(prims, rng, cx, cy, 1 if cy < 0 else -1))
    for _ in range(int(rng.choice([0, 0, 1, 1, 2, 3]))):
        side = rng.choice([-1, 1])
        cy = side * (road_half - rng.uniform(0.5, 0.9))
        cx = cam_x + rng.uniform(6.0, 60.0)
        if layout.in_corridor(cx - 1.0, cx + 1.0, cy - 0.4, cy + 0.4):
            continue
        if any(f[0] - 1 < cx < f[1] + 1 and f[2] - 0.5 < cy < f[3] + 0.5 for f in footprints):
            continue
        frame = np.array([(0.1, 0.1, 0.1), (0.6, 0.1, 0.1), (0.15, 0.3, 0.6)][rng.integers(3)])
        prims.box((cx - 0.85, cy - 0.04, 0.0), (cx + 0.85, cy + 0.04, 0.95), BICYCLIST, MAT_PLAIN, frame)
        _add_person(prims, rng, cx - 0.1, cy, 0.55, BICYCLIST, seated=True)
    return footprints


def _add_pedestrians(prims: _Primitives, rng: np.random.Generator, layout: _Layout, footprints: list) -> None:
    """Pedestrians on the pavements, a few crossing the road (never through a car)."""
    road_half, cam_x = layout.road_half, layout.cam_x
    for _ in range(int(rng.integers(1, 14))):
        side = rng.choice([-1, 1])
        _add_person(
            prims,
            rng,
            cam_x + rng.uniform(2.0, 70.0),
            side * (road_half + rng.uniform(0.6, layout.pavement_w - 0.3)),
            layout.kerb_h,
        )
    for _ in range(int(rng.choice([0, 0, 0, 1, 2]))):
        px, py = cam_x + rng.uniform(8.0, 40.0), rng.uniform(-road_half + 0.5, road_half - 0.5)
        if not layout.in_corridor(px - 0.3, px + 0.3, py - 0.3, py + 0.3) and not any(
            f[0] - 0.4 < px < f[1] + 0.4 and f[2] - 0.4 < py < f[3] + 0.4 for f in footprints
        ):
            _add_person(prims, rng, px, py, 0.0)


def _draw_sky(rng: np.random.Generator) -> Tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """Weather and sun: ``(sunny, sun direction, horizon colour, zenith colour)``."""
    sunny = bool(rng.random() < 0.6)
    elevation = math.radians(rng.uniform(18.0, 55.0))
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array(
        [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
    )
    if sunny:
        horizon = _jitter(rng, np.array([0.78, 0.84, 0.90]), 0.04)
        zenith = _jitter(rng, np.array([0.30, 0.50, 0.82]), 0.08)
    else:
        grey = rng.uniform(0.7, 0.9)
        horizon = np.clip(grey + rng.normal(0, 0.015, 3), 0, 1)
        zenith = np.clip(horizon * rng.uniform(0.7, 0.9) + rng.normal(0, 0.01, 3), 0, 1)
    return sunny, sun, horizon, zenith


def _assemble_scene(
    prims: _Primitives,
    rng: np.random.Generator,
    layout: _Layout,
    pave_color: np.ndarray,
    skylines: dict,
    footprints: list,
    sky: tuple,
) -> StreetScene:
    """The primitive tables plus the last draws: road markings, lighting levels, sensor and camera pose."""
    sunny, sun, horizon, zenith = sky
    cam_x = layout.cam_x
    boxes, spheres = prims.boxes, prims.spheres
    return StreetScene(
        box_lo=np.array([b[0] for b in boxes], dtype=np.float64).reshape(-1, 3),
        box_hi=np.array([b[1] for b in boxes], dtype=np.float64).reshape(-1, 3),
        box_class=np.array([b[2] for b in boxes], dtype=np.int64),
        box_material=np.array([b[3] for b in boxes], dtype=np.int64),
        box_color=np.array([b[4] for b in boxes]).reshape(-1, 3),
        box_params=np.array([b[5] for b in boxes]).reshape(-1, NUM_PARAMS),
        sphere_center=np.array([s[0] for s in spheres], dtype=np.float64).reshape(-1, 3),
        sphere_radius=np.array([s[1] for s in spheres], dtype=np.float64),
        sphere_class=np.array([s[2] for s in spheres], dtype=np.int64),
        sphere_material=np.array([s[3] for s in spheres], dtype=np.int64),
        sphere_color=np.array([s[4] for s in spheres]).reshape(-1, 3),
        sphere_params=np.array([s[5] for s in spheres]).reshape(-1, NUM_PARAMS),
        road_half_width=layout.road_half,
        pavement_width=layout.pavement_w,
        kerb_height=layout.kerb_h,
        lane_count=layout.lane_count,
        asphalt=rng.uniform(0.27, 0.42),
        edge_line_style=int(rng.choice([0, 1, 2, 2])),
        dash_period=rng.uniform(6.0, 12.0),
        zebra_x=np.array([cam_x + rng.uniform(12.0, 60.0)] if rng.random() < 0.3 else []),
        pavement_color=pave_color,
        tile_size=rng.uniform(0.45, 0.9),
        skyline_left=skylines[1],
        skyline_right=skylines[-1],
        car_footprints=np.array(footprints, dtype=np.float64).reshape(-1, 4),
        sunny=sunny,
        sun_direction=sun,
        sun_strength=rng.uniform(0.55, 0.8) if sunny else 0.0,
        ambient=rng.uniform(0.45, 0.6) if sunny else rng.uniform(0.85, 1.05),
        sky_horizon=horizon,
        sky_zenith=zenith,
        cloud_cover=rng.uniform(0.0, 0.6) if sunny else rng.uniform(0.5, 1.0),
        haze_distance=rng.uniform(120.0, 350.0),
        exposure=rng.uniform(0.85, 1.15),
        white_balance=rng.uniform(0.93, 1.07, 3),
        noise_std=rng.uniform(0.004, 0.02),
        vignette=rng.uniform(0.0, 0.25),
        texture_seed=int(rng.integers(0, 2**20)),
        camera_x=cam_x,
        camera_y=layout.cam_y,
        camera_height=rng.uniform(1.2, 1.7),
        camera_yaw=math.radians(rng.uniform(-5.0, 5.0)),
        camera_pitch=math.radians(rng.uniform(-4.0, 1.0)),
        camera_roll=math.radians(rng.uniform(-1.0, 1.0)),
    )
