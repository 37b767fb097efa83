"""Surface shading of the street worlds: procedural textures, lighting and sky.

Textures are functions of *world* coordinates (value noise, window grids,
lane markings, tiles...), so a surface looks the same from every camera pose,
which is what makes the rendered videos photometrically consistent. Patterns
are box-filtered over the pixel footprint to avoid aliasing. Lighting is a sun
(with street-canyon shadows of the buildings) plus ambient sky light.

Each material's shader reads the primitive's albedo and its
``NUM_PARAMS`` material parameters, whose meaning per material is named in
[scene][segrobust.datasets.synthetic.scene] (e.g. ``FacadeParam``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from segrobust.datasets.synthetic.scene import (
    MAT_CAR_BODY,
    MAT_CAR_CABIN,
    MAT_FACADE,
    MAT_FENCE,
    MAT_FOLIAGE,
    MAT_PAVEMENT,
    MAT_PLAIN,
    MAT_ROAD,
    MAT_SIGN,
    MAT_TRAFFIC_LIGHT,
    CarParam,
    FacadeParam,
    FenceParam,
    FoliageParam,
    SignParam,
    StreetScene,
    TrafficLightParam,
)

__all__ = ["Surface", "shade_materials", "sky_color", "sun_and_sky_light"]

# --------------------------------------------------------------------------- noise


def _hash(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: int) -> torch.Tensor:
    """Integer lattice hash to uniform floats in [0, 1] (int64 arithmetic, no overflow)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435 + 12345)
    h = h & 0x7FFFFFFF
    h = ((h >> 13) ^ h) * 1274126177 & 0x7FFFFFFF
    h = ((h >> 16) ^ h) * 668265263 & 0x7FFFFFFF
    h = (h >> 15) ^ h
    return (h & 0xFFFF).to(torch.float32) / 65535.0


def _cell_hash(*coords: torch.Tensor, seed: int) -> torch.Tensor:
    """Hash of integer cell indices (1 to 3 of them) to [0, 1]."""
    padded = [*coords] + [torch.zeros_like(coords[0])] * (3 - len(coords))
    return _hash(padded[0].long(), padded[1].long(), padded[2].long(), seed)


_LATTICE = 32


def _noise_volume() -> torch.Tensor:
    """A fixed periodic lattice of uniform values, with the first slice repeated for wrapping."""
    if not hasattr(_noise_volume, "cache"):
        values = np.random.default_rng(20240611).random((_LATTICE,) * 3).astype(np.float32)
        values = np.pad(values, ((0, 1), (0, 1), (0, 1)), mode="wrap")
        _noise_volume.cache = torch.from_numpy(values)[None, None]
    return _noise_volume.cache


@functools.lru_cache(maxsize=4096)
def _lattice_shift(seed: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed & 0xFFFFFFFF).uniform(0, _LATTICE, 3), dtype=torch.float32)


def _value_noise(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Smooth periodic 3-D value noise in [0, 1] at points ``p`` ``(N, 3)`` (lattice spacing 1).

    Trilinear interpolation of a fixed random lattice, done by ``grid_sample``
    (one C++ call instead of eight hashed corners); the seed shifts the lattice.
    """
    q = torch.remainder(p + _lattice_shift(seed), _LATTICE) / _LATTICE * 2 - 1  # in [-1, 1] over one period
    grid = q.reshape(1, 1, 1, -1, 3)
    out = F.grid_sample(_noise_volume(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(-1)


def _fbm(p: torch.Tensor, freq: float, seed: int, footprint: torch.Tensor, octaves: int = 3) -> torch.Tensor:
    """Fractal noise centred on 0 (about [-0.5, 0.5]); octaves finer than a pixel fade out."""
    total = torch.zeros(p.shape[0], dtype=p.dtype)
    amplitude, norm = 1.0, 0.0
    for k in range(octaves):
        f = freq * 2.0**k
        visible = (1.0 - footprint * f).clamp(0.0, 1.0)
        total += amplitude * visible * (_value_noise(p * f, seed + 101 * k) - 0.5)
        norm += amplitude
        amplitude *= 0.5
    return total / norm


# --------------------------------------------------------------------------- antialiased patterns


def _band(x: torch.Tensor, half_width: float | torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """Coverage of the band ``|x| < half_width`` by a pixel box of width ``footprint`` centred at x."""
    fp = footprint.clamp_min(1e-4)
    lo = torch.maximum(x - fp / 2, -torch.as_tensor(half_width))
    hi = torch.minimum(x + fp / 2, torch.as_tensor(half_width))
    return ((hi - lo) / fp).clamp(0.0, 1.0)


def _periodic_band(
    x: torch.Tensor,
    period: float | torch.Tensor,
    half_width: float | torch.Tensor,
    footprint: torch.Tensor,
    phase: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Box-filtered stripes of width ``2 half_width`` every ``period``; fades to the mean when too fine."""
    period = torch.as_tensor(period, dtype=x.dtype)
    centred = x - phase
    centred = centred - period * torch.round(centred / period)
    coverage = _band(centred, half_width, footprint)
    mean = (2 * torch.as_tensor(half_width) / period).clamp(0, 1)
    fade = ((footprint - 0.35 * period) / (0.35 * period)).clamp(0.0, 1.0)
    return coverage * (1 - fade) + mean * fade


def _rect(u: torch.Tensor, v: torch.Tensor, u0, u1, v0, v1, fp_u: torch.Tensor, fp_v: torch.Tensor):
    """Box-filtered indicator of the rectangle ``[u0, u1] x [v0, v1]``."""
    cu, hu = (u0 + u1) / 2, (u1 - u0) / 2
    cv, hv = (v0 + v1) / 2, (v1 - v0) / 2
    return _band(u - cu, hu, fp_u) * _band(v - cv, hv, fp_v)


def _mix(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return a + (b - a) * w[:, None]


# --------------------------------------------------------------------------- shading


class Surface:
    """Per-pixel hit data (all 1-D over the pixels): point ``p``, ``normal``, face ``axis``,
    primitive box ``lo``/``hi``, footprints ``fp``/``fp_axis``, albedo ``color``, material
    ``params`` and ray ``distance``."""

    def __init__(self, **fields: torch.Tensor) -> None:
        self.__dict__.update(fields)


def _face_coords(s: Surface):
    """In-plane coordinates of box hits: ``u`` horizontal along the face, ``v`` up (or Y on tops)."""
    axis = s.axis
    vertical = axis != 2
    along_y = axis == 0  # faces whose normal is X run along Y
    u = torch.where(along_y, s.p[:, 1] - s.lo[:, 1], s.p[:, 0] - s.lo[:, 0])
    u_len = torch.where(along_y, s.hi[:, 1] - s.lo[:, 1], s.hi[:, 0] - s.lo[:, 0])
    v = torch.where(vertical, s.p[:, 2] - s.lo[:, 2], s.p[:, 1] - s.lo[:, 1])
    v_len = torch.where(vertical, s.hi[:, 2] - s.lo[:, 2], s.hi[:, 1] - s.lo[:, 1])
    fp_u = torch.where(along_y, s.fp_axis[:, 1], s.fp_axis[:, 0])
    fp_v = torch.where(vertical, s.fp_axis[:, 2], s.fp_axis[:, 1])
    return u, v, u_len, v_len, fp_u, fp_v


def _shade_road(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    x, y = s.p[:, 0], s.p[:, 1]
    fpx, fpy = s.fp_axis[:, 0], s.fp_axis[:, 1]
    grey = scene.asphalt * (1 + 0.35 * _fbm(s.p, 0.08, seed, s.fp) + 0.35 * _fbm(s.p, 1.5, seed + 7, s.fp))
    half = scene.road_half_width
    lane_w = 2 * half / scene.lane_count
    # Darker wheel tracks in the middle of each lane's halves.
    track = torch.zeros_like(x)
    for k in range(scene.lane_count):
        centre = -half + (k + 0.5) * lane_w
        for side in (-0.8, 0.8):
            track = torch.maximum(track, _band(y - centre - side, 0.35, fpy + 0.3))
    grey = grey * (1 - 0.06 * track)
    white = torch.zeros_like(x)
    yellow = torch.zeros_like(x)
    for k in range(1, scene.lane_count):
        boundary = -half + k * lane_w
        across = _band(y - boundary, 0.06, fpy)
        if scene.lane_count == 4 and k == 2:
            along = torch.ones_like(x)
        else:
            along = _periodic_band(x, scene.dash_period, scene.dash_period * 0.22, fpx)
        white = torch.maximum(white, across * along)
    for side in (-1.0, 1.0):
        edge = side * y
        if scene.edge_line_style == 1:
            white = torch.maximum(white, _band(edge - (half - 0.3), 0.05, fpy))
        elif scene.edge_line_style == 2:
            yellow = torch.maximum(yellow, _band(edge - (half - 0.2), 0.04, fpy))
            yellow = torch.maximum(yellow, _band(edge - (half - 0.36), 0.04, fpy))
    for zx in scene.zebra_x:
        stripes = _periodic_band(y, 1.0, 0.25, fpy) * _band(x - (zx + 1.5), 1.5, fpx)
        white = torch.maximum(white, stripes * (y.abs() < half).float())
    outside = (y.abs() > half + 0.05).float()  # side streets: no markings
    white, yellow = white * (1 - outside), yellow * (1 - outside)
    color = grey[:, None].expand(-1, 3).clone()
    color = _mix(color, torch.tensor([0.82, 0.82, 0.8]), white * 0.9)
    color = _mix(color, torch.tensor([0.78, 0.64, 0.18]), yellow * 0.9)
    # Contact shadows under vehicles: the road seen below a car body is dark.
    near_cars = scene.car_footprints
    if len(near_cars) and len(x):
        # Shadows are 0.5 m wide: cars far from every visible road point cannot matter.
        x_lo, x_hi = float(x.min()) - 1.0, float(x.max()) + 1.0
        near_cars = near_cars[(near_cars[:, 1] > x_lo) & (near_cars[:, 0] < x_hi)]
        near_cars = near_cars[np.argsort(np.maximum(near_cars[:, 0] - x_lo, 0.0))[:16]]
    if len(near_cars):
        fp = torch.as_tensor(near_cars, dtype=torch.float32)
        cx, hx = (fp[:, 0] + fp[:, 1]) / 2, (fp[:, 1] - fp[:, 0]) / 2
        cy, hy = (fp[:, 2] + fp[:, 3]) / 2, (fp[:, 3] - fp[:, 2]) / 2
        dx = ((x[:, None] - cx).abs() - hx).clamp_min(0)
        dy = ((y[:, None] - cy).abs() - hy).clamp_min(0)
        dist = (dx * dx + dy * dy).sqrt().min(1).values
        color = color * (0.3 + 0.7 * (dist / 0.5).clamp(0, 1))[:, None]
    return color


def _shade_pavement(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    x, y = s.p[:, 0], s.p[:, 1]
    top = s.axis == 2
    tile = scene.tile_size
    grout = torch.maximum(
        _periodic_band(x, tile, 0.012, s.fp_axis[:, 0]), _periodic_band(y, tile, 0.012, s.fp_axis[:, 1])
    )
    stains = 1 + 0.3 * _fbm(s.p, 0.25, seed, s.fp) + 0.2 * _fbm(s.p, 2.0, seed + 3, s.fp)
    base = s.color * stains[:, None]
    kerb_stone = _band(y.abs() - scene.road_half_width - 0.15, 0.15, s.fp_axis[:, 1])
    top_color = base * (1 - 0.3 * grout)[:, None]
    top_color = _mix(top_color, s.color * 1.08, kerb_stone * 0.8)
    side_color = (s.color * 1.1).clamp(0, 1).expand_as(base)
    return torch.where(top[:, None], top_color, side_color)


def _shade_facade(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    u, v, u_len, v_len, fp_u, fp_v = _face_coords(s)
    prm, P = s.params, FacadeParam
    floor_h, spacing = prm[:, P.FLOOR_HEIGHT], prm[:, P.WINDOW_SPACING]
    win_w, win_h, ground_h = prm[:, P.WINDOW_WIDTH], prm[:, P.WINDOW_HEIGHT], prm[:, P.GROUND_FLOOR_HEIGHT]
    shop, bseed, light_frames = prm[:, P.SHOP_FRONT] > 0.5, prm[:, P.TEXTURE_SEED], prm[:, P.LIGHT_FRAMES] > 0.5
    vertical = s.axis != 2
    wall = (
        s.color
        * (
            1
            + 0.25 * _fbm(s.p, 0.4, seed, s.fp)
            + 0.12 * _fbm(s.p * torch.tensor([1.0, 1.0, 0.15]), 1.2, seed + 1, s.fp)
        )[:, None]
    )
    # Window grid, centred on the face, above the ground floor and below the cornice.
    cols = torch.floor(u_len / spacing).clamp_min(1)
    margin = (u_len - cols * spacing) / 2
    cu = (u - margin) / spacing
    col_id = torch.floor(cu)
    fv = (v - ground_h) / floor_h
    floor_id = torch.floor(fv)
    in_grid = (col_id >= 0) & (col_id < cols) & (v > ground_h) & (v < v_len - 1.0)
    du = (cu - col_id - 0.5) * spacing
    dv = (fv - floor_id - 0.52) * floor_h
    hw, hh = win_w * spacing / 2, win_h * floor_h / 2
    glass = _band(du, hw, fp_u) * _band(dv, hh, fp_v)
    frame = _band(du, hw + 0.12, fp_u) * _band(dv, hh + 0.12, fp_v) - glass
    upper = in_grid.float()
    cell = _cell_hash(col_id, floor_id, bseed.long(), seed=seed + 11)
    glass_color = torch.stack([0.10 + 0.10 * cell, 0.12 + 0.10 * cell, 0.15 + 0.12 * cell], 1)
    curtain = (cell > 0.75).float()
    glass_color = _mix(glass_color, torch.tensor([0.55, 0.5, 0.42]), curtain * 0.6)
    frame_color = torch.where(light_frames[:, None], torch.tensor([0.85, 0.84, 0.8]).expand_as(wall), wall * 0.7)
    color = _mix(wall, frame_color, frame * upper)
    color = _mix(color, glass_color, glass * upper)
    # Ground floor: shop windows with a coloured fascia, or a door and windows.
    sign_color = torch.stack([_cell_hash(bseed.long(), torch.full_like(col_id, k), seed=seed + 5) for k in range(3)], 1)
    sign_color = sign_color * 0.8 + 0.1
    bay = 4.5
    bay_u = u - bay * torch.round(u / bay)
    shop_glass = _band(bay_u, bay / 2 - 0.35, fp_u) * _band(
        v - (0.5 + (ground_h - 1.3)) / 2 - 0.25, (ground_h - 1.3 - 0.5) / 2, fp_v
    )
    fascia = _band(v - (ground_h - 0.55), 0.3, fp_v)
    ground = (v < ground_h).float() * vertical.float()
    shop_f = shop.float() * ground
    color = _mix(color, torch.tensor([0.1, 0.11, 0.12]).expand_as(color) + 0.15 * sign_color * 0.3, shop_glass * shop_f)
    color = _mix(color, sign_color, fascia * shop_f)
    door = _band(u - u_len * 0.5, 0.55, fp_u) * _band(v - 1.1, 1.1, fp_v)
    plain_ground = (1 - shop.float()) * ground
    low_dv = v - ground_h * 0.55
    low_glass = _band(du, hw, fp_u) * _band(low_dv, hh * 0.9, fp_v) * (col_id >= 0).float() * (col_id < cols).float()
    low_glass = low_glass * (1 - _band(u - u_len * 0.5, 1.0, fp_u))
    color = _mix(color, glass_color, low_glass * plain_ground)
    color = _mix(color, wall * 0.45, door * plain_ground)
    cornice = _band(v - (v_len - 0.35), 0.35, fp_v) * vertical.float()
    color = _mix(color, wall * 0.8, cornice)
    roof = (~vertical).float()
    return _mix(color, torch.tensor([0.3, 0.3, 0.32]).expand_as(color), roof)


def _shade_plain(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    return s.color * (1 + 0.25 * _fbm(s.p, 3.0, seed, s.fp))[:, None]


def _shade_foliage(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    q = s.p + s.params[:, FoliageParam.NOISE_OFFSET, None]
    leaves = _fbm(q, 2.5, seed, s.fp, octaves=3)
    clumps = _fbm(q, 0.7, seed + 9, s.fp, octaves=2)
    shade = (0.75 + 1.4 * leaves + 0.8 * clumps).clamp(0.3, 1.6)
    hue = torch.stack([0.15 * clumps, 0.05 * leaves, -0.1 * clumps], 1)
    return (s.color * shade[:, None] + hue).clamp(0.01, 1)


def _shade_car_body(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    u, v, u_len, v_len, fp_u, fp_v = _face_coords(s)
    facing, box_vehicle = s.params[:, CarParam.FACING], s.params[:, CarParam.BOX_VEHICLE] > 0.5
    end_face = s.axis == 0
    side_face = s.axis == 1
    ur = u / u_len.clamp_min(1e-3)  # 0..1 across the face
    vr = v / v_len.clamp_min(1e-3)
    color = s.color.clone()
    is_front = end_face & (torch.sign(s.normal[:, 0]) == torch.sign(facing))
    is_rear = end_face & ~is_front
    fpu_r, fpv_r = fp_u / u_len.clamp_min(1e-3), fp_v / v_len.clamp_min(1e-3)
    # Lamps near the corners, a plate in the middle, a dark bumper.
    lamps = _rect(ur, vr, 0.05, 0.22, 0.55, 0.75, fpu_r, fpv_r) + _rect(ur, vr, 0.78, 0.95, 0.55, 0.75, fpu_r, fpv_r)
    low = torch.where(box_vehicle, torch.full_like(vr, 0.12), torch.full_like(vr, 0.0))
    lamps = lamps * (~box_vehicle).float() + box_vehicle.float() * (
        _rect(ur, vr, 0.04, 0.14, 0.12, 0.3, fpu_r, fpv_r) + _rect(ur, vr, 0.86, 0.96, 0.12, 0.3, fpu_r, fpv_r)
    )
    plate = _rect(ur, vr, 0.36, 0.64, 0.25 + low, 0.42 + low, fpu_r, fpv_r)
    bumper = _band(vr - 0.08, 0.1, fpv_r)
    grille = _rect(ur, vr, 0.3, 0.7, 0.5, 0.72, fpu_r, fpv_r) * (~box_vehicle).float()
    rear_lamp = torch.tensor([0.75, 0.08, 0.06])
    head_lamp = torch.tensor([0.92, 0.92, 0.85])
    lamp_color = torch.where(is_front[:, None], head_lamp, rear_lamp)
    plate_color = torch.where(is_front[:, None], torch.tensor([0.92, 0.92, 0.9]), torch.tensor([0.9, 0.78, 0.15]))
    ends = end_face.float()
    color = _mix(color, color * 0.35, bumper * ends)
    color = _mix(color, torch.tensor([0.08, 0.08, 0.09]).expand_as(color), grille * is_front.float())
    color = _mix(color, lamp_color, lamps.clamp(0, 1) * ends)
    color = _mix(color, plate_color, plate * ends)
    # Windscreens and side windows of vans and buses.
    band = _band(vr - 0.76, 0.13, fpv_r) * box_vehicle.float()
    pillars = _periodic_band(u, 1.6, 0.08, fp_u)
    glass = band * (
        side_face.float() * (1 - pillars) + (is_front.float() + is_rear.float() * 0.8) * _band(ur - 0.5, 0.42, fpu_r)
    )
    color = _mix(color, torch.tensor([0.09, 0.1, 0.12]).expand_as(color), glass)
    sill = _band(vr - 0.05, 0.08, fpv_r) * side_face.float()
    door_line = _band(ur - 0.5, 0.006, fpu_r) * side_face.float() * (~box_vehicle).float()
    color = _mix(color, color * 0.4, (sill + door_line).clamp(0, 1))
    return color


def _shade_car_cabin(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    u, v, u_len, v_len, fp_u, fp_v = _face_coords(s)
    vertical = s.axis != 2
    ur, vr = u / u_len.clamp_min(1e-3), v / v_len.clamp_min(1e-3)
    fpu_r, fpv_r = fp_u / u_len.clamp_min(1e-3), fp_v / v_len.clamp_min(1e-3)
    pane = _band(ur - 0.5, 0.44, fpu_r) * _band(vr - 0.45, 0.38, fpv_r)
    b_pillar = _band(ur - 0.5, 0.03, fpu_r) * (s.axis == 1).float()
    glass = (pane - b_pillar).clamp(0, 1) * vertical.float()
    tint = 0.1 + 0.08 * _fbm(s.p, 0.5, seed, s.fp)
    glass_color = torch.stack([tint, tint * 1.08, tint * 1.2], 1)
    return _mix(s.color, glass_color, glass)


def _shade_sign(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    u, v, u_len, v_len, fp_u, fp_v = _face_coords(s)
    facing_road = s.normal[:, 0] < 0
    border_color = s.params[:, SignParam.BORDER_RGB]
    inner = _band(u - u_len / 2, u_len / 2 - 0.06, fp_u) * _band(v - v_len / 2, v_len / 2 - 0.06, fp_v)
    # A few glyph-like bars as "text".
    rows = _periodic_band(v, 0.16, 0.035, fp_v) * _band(u - u_len / 2, u_len / 2 - 0.15, fp_u)
    rows = rows * _band(v - v_len / 2, v_len / 2 - 0.15, fp_v)
    color = _mix(border_color, s.color, inner)
    color = _mix(color, border_color, rows * 0.8)
    return torch.where(facing_road[:, None], color, torch.tensor([0.45, 0.45, 0.45]).expand_as(color))


def _shade_traffic_light(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    return s.color * (1 + 0.1 * _fbm(s.p, 3.0, seed, s.fp))[:, None]


def _traffic_light_emission(s: Surface) -> torch.Tensor:
    u, v, u_len, v_len, fp_u, fp_v = _face_coords(s)
    front = (s.normal[:, 0] < 0).float()
    lit = s.params[:, TrafficLightParam.LIT_LAMP]
    out = torch.zeros_like(s.color)
    lamp_colors = torch.tensor([[0.95, 0.12, 0.08], [0.95, 0.65, 0.1], [0.2, 0.9, 0.35]])
    for k in range(3):
        centre = v_len * (0.8 - 0.3 * k)
        disc = _band(u - u_len / 2, 0.09, fp_u) * _band(v - centre, 0.09, fp_v)
        strength = torch.where(lit == k, torch.ones_like(lit), torch.full_like(lit, 0.12))
        out = out + (disc * strength * front)[:, None] * lamp_colors[k]
    return out


def _shade_fence(s: Surface, scene: StreetScene, seed: int) -> torch.Tensor:
    u, v, _, v_len, fp_u, fp_v = _face_coords(s)
    backing = s.params[:, FenceParam.BACKING_RGB] * (1 + 0.5 * _fbm(s.p, 1.5, seed, s.fp))[:, None]
    period, half_bar = s.params[:, FenceParam.BAR_PERIOD], s.params[:, FenceParam.BAR_HALF_WIDTH]
    bars = _periodic_band(u, period, half_bar, fp_u)
    rails = torch.maximum(_band(v - (v_len - 0.05), 0.05, fp_v), _band(v - 0.15, 0.04, fp_v))
    metal = torch.maximum(bars, rails)
    return _mix(backing, s.color, metal)


_SHADERS = {
    MAT_ROAD: _shade_road,
    MAT_PAVEMENT: _shade_pavement,
    MAT_FACADE: _shade_facade,
    MAT_PLAIN: _shade_plain,
    MAT_FOLIAGE: _shade_foliage,
    MAT_CAR_BODY: _shade_car_body,
    MAT_CAR_CABIN: _shade_car_cabin,
    MAT_SIGN: _shade_sign,
    MAT_FENCE: _shade_fence,
    MAT_TRAFFIC_LIGHT: _shade_traffic_light,
}


def sky_color(dirs: torch.Tensor, scene: StreetScene, seed: int) -> torch.Tensor:
    """Sky colour for unit directions ``(N, 3)``: a gradient with clouds on a distant plane."""
    up = dirs[:, 2].clamp_min(0.0)
    t = (up * 2.2).clamp(0, 1) ** 0.8
    horizon = torch.as_tensor(scene.sky_horizon, dtype=torch.float32)
    zenith = torch.as_tensor(scene.sky_zenith, dtype=torch.float32)
    color = horizon + (zenith - horizon) * t[:, None]
    plane = dirs[:, :2] / dirs[:, 2:3].clamp_min(0.02)
    q = torch.cat([plane * 0.9, torch.zeros_like(plane[:, :1])], 1)
    zero_fp = torch.zeros_like(up)
    n = _fbm(q, 1.0, seed, zero_fp, octaves=4) + 0.5
    cover = scene.cloud_cover
    clouds = ((n - (1.0 - cover) * 0.75 - 0.15) / 0.2).clamp(0, 1) * (up / 0.05).clamp(0, 1)
    brightness = 0.82 + 0.3 * (_fbm(q, 2.0, seed + 5, zero_fp, octaves=2))
    if not scene.sunny:
        brightness = brightness * 0.92
    cloud_color = (horizon.mean() * 0.4 + 0.6) * brightness
    return color + (cloud_color[:, None] - color) * clouds[:, None]


def _canyon_shadow(p: torch.Tensor, scene: StreetScene) -> torch.Tensor:
    """1 where the buildings on the sun's side of the street hide the sun, else 0."""
    sun = torch.as_tensor(scene.sun_direction, dtype=torch.float32)
    if abs(float(sun[1])) < 1e-3:
        return torch.zeros(p.shape[0])
    side = 1.0 if sun[1] > 0 else -1.0
    skyline = scene.skyline_left if side > 0 else scene.skyline_right
    if len(skyline) == 0:
        return torch.zeros(p.shape[0])
    facade_y = side * (scene.road_half_width + scene.pavement_width)
    lam = (facade_y - p[:, 1]) / sun[1]
    x_hit = p[:, 0] + lam * sun[0]
    z_hit = p[:, 2] + lam * sun[2]
    sky = torch.as_tensor(skyline, dtype=torch.float32)
    idx = (torch.searchsorted(sky[:, 0].contiguous(), x_hit.contiguous(), right=True) - 1).clamp(0, len(sky) - 1)
    inside = (x_hit >= sky[idx, 0]) & (x_hit < sky[idx, 1])
    height = torch.where(inside, sky[idx, 2], torch.zeros_like(x_hit))
    return ((lam > 1e-3) & (z_hit < height)).float()


def shade_materials(
    surface: Surface, mats: torch.Tensor, scene: StreetScene, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Albedo and lamp emission ``(N, 3)`` of surface points sorted by material id ``mats``."""
    albedo = torch.zeros_like(surface.p)
    emission = torch.zeros_like(surface.p)
    counts = torch.bincount(mats, minlength=max(_SHADERS) + 1).tolist()
    start = 0
    for m in range(len(counts)):
        stop = start + counts[m]
        if stop > start and m in _SHADERS:
            sub = Surface(**{k: v[start:stop] for k, v in surface.__dict__.items()})
            albedo[start:stop] = _SHADERS[m](sub, scene, seed + 1000 * m)
            if m == MAT_TRAFFIC_LIGHT:
                emission[start:stop] = _traffic_light_emission(sub)
        start = stop
    return albedo, emission


def sun_and_sky_light(surface: Surface, mats: torch.Tensor, scene: StreetScene) -> torch.Tensor:
    """Incoming light ``(N, 3)``: ambient sky light plus the sun, shadowed by the street canyon."""
    normal = surface.normal
    sun = torch.as_tensor(scene.sun_direction, dtype=torch.float32)
    up = normal[:, 2]
    if scene.sunny:
        lambert = (normal @ sun).clamp_min(0)
        foliage = mats == MAT_FOLIAGE
        lambert = torch.where(foliage, 0.3 + 0.7 * (normal @ sun * 0.5 + 0.5), lambert)
        lit = 1 - _canyon_shadow(surface.p, scene)
        return scene.ambient * (0.8 + 0.2 * up)[:, None] * torch.tensor([0.95, 0.98, 1.04]) + (
            scene.sun_strength * lambert * lit
        )[:, None] * torch.tensor([1.0, 0.96, 0.88])
    return (scene.ambient * (0.78 + 0.22 * (up * 0.5 + 0.5)))[:, None].expand(-1, 3)
