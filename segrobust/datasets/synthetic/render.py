"""A small vectorised ray caster that renders [`StreetScene`][segrobust.datasets.StreetScene] worlds.

One primary ray per pixel (through the pixel centre, kornia's convention) is
intersected with the ground plane, every box and every sphere; the nearest hit
gives the class label, the metric depth (the camera-frame ``z``, exactly what
`kornia.geometry.depth.depth_to_3d_v2` expects) and the surface to shade.

Speed comes from screen-space binning instead of per-pixel Python: each
primitive's projected bounding rectangle is computed once, the image is cut
into tiles, and each tile tests only the primitives that overlap it, in
batched tensor operations (tiles with similar primitive counts are batched
together to limit padding).

Surfaces are shaded by [shading][segrobust.datasets.synthetic.shading] (world-space textures, sun and sky
light), then aerial haze and a sensor model (exposure, white balance,
vignetting, noise) finish the image.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from segrobust.datasets.functional import check_size
from segrobust.datasets.synthetic.scene import MAT_ROAD, MAT_SKY, ROAD, SKY, StreetScene
from segrobust.datasets.synthetic.shading import (
    Surface,
    shade_materials,
    sky_color,
    sun_and_sky_light,
)

__all__ = ["render_street", "single_intra_op_thread"]

_INF = float("inf")
_NEAR = 1e-3


# --------------------------------------------------------------------------- intersection


def _project_rects(
    lo: np.ndarray,
    hi: np.ndarray,
    origin: np.ndarray,
    rot_wc: np.ndarray,
    K: np.ndarray,
    height: int,
    width: int,
    far: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """Screen rectangles ``(M, 4)`` = row0, row1, col0, col1 of the visible primitives, and their ids."""
    if len(lo) == 0:
        return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)
    corners = np.stack(
        [np.stack([(hi if (k >> a) & 1 else lo)[:, a] for a in range(3)], axis=1) for k in range(8)], axis=1
    )
    cam = (corners - origin) @ rot_wc  # (M, 8, 3) in camera coordinates
    near = 0.05
    # Clip the 12 edges against the near plane: the projected rectangle of a box
    # crossing the camera plane is bounded by its in-front corners and the crossings.
    ends = np.array([(i, i | (1 << a)) for i in range(8) for a in range(3) if not (i >> a) & 1])
    p0, p1 = cam[:, ends[:, 0]], cam[:, ends[:, 1]]
    z0, z1 = p0[..., 2], p1[..., 2]
    crossing = (z0 - near) * (z1 - near) < 0
    frac = np.where(crossing, (near - z0) / np.where(crossing, z1 - z0, 1.0), 0.0)
    cut = p0 + frac[..., None] * (p1 - p0)
    points = np.concatenate([cam, cut], axis=1)
    usable = np.concatenate([cam[..., 2] >= near, crossing], axis=1)
    zs = np.where(usable, np.maximum(points[..., 2], near), 1.0)
    u = K[0, 0] * points[..., 0] / zs + K[0, 1] * points[..., 1] / zs + K[0, 2]
    v = K[1, 1] * points[..., 1] / zs + K[1, 2]
    big = 1e9
    u0 = np.where(usable, u, big).min(1)
    u1 = np.where(usable, u, -big).max(1)
    v0 = np.where(usable, v, big).min(1)
    v1 = np.where(usable, v, -big).max(1)
    any_front = usable.any(1)
    near_dist = np.linalg.norm(np.maximum(np.maximum(lo - origin, origin - hi), 0.0), axis=1)
    keep = any_front & (u1 >= -1) & (u0 <= width) & (v1 >= -1) & (v0 <= height) & (near_dist < far)
    rects = np.stack([np.floor(v0) - 1, np.ceil(v1) + 1, np.floor(u0) - 1, np.ceil(u1) + 1], axis=1)
    rects = np.clip(rects, -1, max(height, width) + 1)[keep].astype(np.int64)
    return rects, np.nonzero(keep)[0]


def _box_kernel(dirs: torch.Tensor, inv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Entry distance of rays (T, P, 3) from the origin into boxes (T, K, 3) given relative to it.

    The slab test is written per axis on (T, P, K) tensors: elementwise ops only,
    no reductions over a tiny last dimension.
    """
    t_near = t_far = None
    for ax in range(3):
        inv_ax = inv[:, :, ax, None]
        a = lo[:, None, :, ax] * inv_ax
        b = hi[:, None, :, ax] * inv_ax
        near, far = torch.minimum(a, b), torch.maximum(a, b)
        t_near = near if t_near is None else torch.maximum(t_near, near)
        t_far = far if t_far is None else torch.minimum(t_far, far)
    hit = (t_near <= t_far) & (t_near > _NEAR)
    return torch.where(hit, t_near, torch.full_like(t_near, _INF))


def _sphere_kernel(dirs: torch.Tensor, inv: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    center = (lo + hi) / 2
    radius = (hi[..., 0] - lo[..., 0]) / 2
    b = torch.bmm(dirs, center.transpose(1, 2))  # (T, P, K)
    a = (dirs * dirs).sum(-1, keepdim=True)
    c = (center * center).sum(-1) - radius * radius
    disc = b * b - a * c[:, None]
    t = (b - disc.clamp_min(0).sqrt()) / a
    hit = (disc > 0) & (t > _NEAR)
    return torch.where(hit, t, torch.full_like(t, _INF))


def _tiled_nearest(
    dirs_tiles: torch.Tensor,
    tile: int,
    n_rows: int,
    n_cols: int,
    rects: np.ndarray,
    ids: np.ndarray,
    lo: torch.Tensor,
    hi: torch.Tensor,
    kernel,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit per ray among the primitives ``ids``; only tile/rectangle overlaps are tested.

    ``lo``/``hi`` are relative to the camera centre and end with one padding
    primitive (a point behind the camera that no ray can hit).
    """
    num_tiles, per_tile = dirs_tiles.shape[:2]
    best_t = torch.full((num_tiles, per_tile), _INF)
    best_id = torch.zeros((num_tiles, per_tile), dtype=torch.long)
    if len(ids) == 0:
        return best_t, best_id
    pad_id = lo.shape[0] - 1
    inv_tiles = 1.0 / dirs_tiles
    row0 = np.arange(n_rows) * tile
    col0 = np.arange(n_cols) * tile
    rows_hit = (rects[None, :, 0] <= row0[:, None] + tile - 1) & (rects[None, :, 1] >= row0[:, None])
    cols_hit = (rects[None, :, 2] <= col0[:, None] + tile - 1) & (rects[None, :, 3] >= col0[:, None])
    overlap = (rows_hit[:, None, :] & cols_hit[None, :, :]).reshape(n_rows * n_cols, len(ids))
    counts = overlap.sum(1)
    buckets = np.where(counts > 0, np.ceil(np.log2(np.maximum(counts, 1)) * 2).astype(int), -1)
    for bucket in np.unique(buckets[buckets >= 0]):
        tiles = np.nonzero(buckets == bucket)[0]
        width = int(counts[tiles].max())
        order = np.argsort(~overlap[tiles], axis=1, kind="stable")[:, :width]
        valid = np.take_along_axis(overlap[tiles], order, axis=1)
        prim = torch.from_numpy(np.where(valid, ids[order], pad_id))
        tiles_t = torch.from_numpy(tiles)
        t = kernel(dirs_tiles[tiles_t], inv_tiles[tiles_t], lo[prim], hi[prim])
        t_min, k = t.min(-1)
        best_t[tiles_t] = t_min
        best_id[tiles_t] = torch.gather(prim, 1, k)
    return best_t, best_id


# --------------------------------------------------------------------------- render


@contextlib.contextmanager
def single_intra_op_thread() -> Iterator[None]:
    """Run the enclosed torch code on one intra-op thread, restoring the previous count.

    Rendering is thousands of small tensor operations: extra intra-op threads
    bring nothing and, on a busy machine, their spinning barriers make it an
    order of magnitude slower. Parallelise over images instead (DataLoader workers).
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def render_street(
    scene: StreetScene,
    cam_to_world: torch.Tensor,
    K: torch.Tensor,
    size: Tuple[int, int],
    max_depth: float = 100.0,
    noise_seed: Optional[int] = 0,
    tile: int = 16,
    far: float = 400.0,
) -> Dict[str, torch.Tensor]:
    """Render one view of a street scene.

    Args:
        scene: the world (see [`sample_street_scene`][segrobust.datasets.sample_street_scene]).
        cam_to_world: ``(4, 4)`` camera-to-world pose (OpenCV camera axes).
        K: ``(3, 3)`` intrinsics; pixel centres at integer coordinates.
        size: output ``(H, W)``.
        max_depth: depth given to the sky and cap for far geometry, metres.
        noise_seed: seed of the sensor noise; ``None`` renders without noise.
        tile: side of the screen tiles used to bin primitives (speed only).
        far: primitives farther than this are skipped (they are lost in the haze).

    Rendering runs on one intra-op thread (see `single_intra_op_thread`).

    Returns:
        ``{"image": (3, H, W) float32 in [0, 1], "mask": (H, W) int64 CamVid ids,
        "depth": (1, H, W) float32 camera-z depth in metres}``.

    Examples:
        >>> import numpy as np
        >>> from segrobust.datasets.functional import camera_intrinsics
        >>> from segrobust.datasets.synthetic import sample_street_scene
        >>> scene = sample_street_scene(np.random.default_rng(0))
        >>> out = render_street(scene, scene.camera_to_world(), camera_intrinsics((24, 32)), (24, 32))
        >>> out["image"].shape, out["mask"].dtype, bool(out["depth"].min() > 0)
        (torch.Size([3, 24, 32]), torch.int64, True)
    """
    with single_intra_op_thread():
        return _render(scene, cam_to_world, K, size, max_depth, noise_seed, tile, far)


def _render(
    scene: StreetScene,
    cam_to_world: torch.Tensor,
    K: torch.Tensor,
    size: Tuple[int, int],
    max_depth: float,
    noise_seed: Optional[int],
    tile: int,
    far: float,
) -> Dict[str, torch.Tensor]:
    height, width = check_size(size)
    pose, K = _check_camera(cam_to_world, K)
    rot, origin = pose[:3, :3], pose[:3, 3]
    us, vs, dirs = _primary_rays(height, width, K, rot)
    hits = _nearest_hits(scene, dirs, origin, rot, K, tile, far)
    mat, cls = _materials_and_labels(scene, hits)
    image = _shade_pixels(scene, dirs, origin, K, hits, mat)
    image = _apply_sensor(image, scene, us, vs, K, noise_seed)
    depth = torch.where(hits.sky, torch.full_like(hits.t, max_depth), hits.t.clamp(max=max_depth))
    return {"image": image.contiguous(), "mask": cls, "depth": depth[None].contiguous()}


def _check_camera(cam_to_world: torch.Tensor, K: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    pose = torch.as_tensor(cam_to_world, dtype=torch.float32)
    K = torch.as_tensor(K, dtype=torch.float32)
    if pose.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"cam_to_world must be (4, 4) and K (3, 3), got {tuple(pose.shape)} and {tuple(K.shape)}")
    if not (torch.isfinite(pose).all() and torch.isfinite(K).all()):
        raise ValueError("cam_to_world and K must be finite")
    return pose, K


def _primary_rays(
    height: int, width: int, K: torch.Tensor, rot: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel columns ``us``, rows ``vs`` and world ray directions ``(H, W, 3)`` scaled to camera ``z = 1``.

    With ``z = 1`` a hit distance ``t`` along the ray is the hit's z-depth.
    """
    vs, us = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    pix = torch.stack([us, vs, torch.ones_like(us)], -1)
    d_cam = pix @ torch.linalg.inv(K).T
    d_cam = d_cam / d_cam[..., 2:3]
    dirs = d_cam @ rot.T  # (H, W, 3) world directions
    dirs = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    return us, vs, dirs


class _Tiling:
    """Rays grouped by square screen tiles (the image padded to whole tiles) and back."""

    def __init__(self, dirs: torch.Tensor, tile: int) -> None:
        height, width = dirs.shape[:2]
        self.tile, self.height, self.width = tile, height, width
        self.n_rows, self.n_cols = math.ceil(height / tile), math.ceil(width / tile)
        padded = torch.zeros(self.n_rows * tile, self.n_cols * tile, 3)
        padded[:height, :width] = dirs
        padded[height:, :, 2] = -1.0
        padded[:, width:, 2] = -1.0
        self.dirs = (
            padded.reshape(self.n_rows, tile, self.n_cols, tile, 3).permute(0, 2, 1, 3, 4).reshape(-1, tile * tile, 3)
        )

    def untile(self, x: torch.Tensor) -> torch.Tensor:
        tile, n_rows, n_cols = self.tile, self.n_rows, self.n_cols
        full = x.reshape(n_rows, n_cols, tile, tile).permute(0, 2, 1, 3).reshape(n_rows * tile, n_cols * tile)
        return full[: self.height, : self.width]


@dataclass
class _Hits:
    """Nearest hit per pixel: z-depth ``t``, primitive id ``pid`` (-2 sky, -1 ground, >= 0 table
    rows), the axis of the box face entered (2 for the ground and spheres), sphere and sky flags."""

    t: torch.Tensor
    pid: torch.Tensor
    axis: torch.Tensor
    is_sphere: torch.Tensor
    sky: torch.Tensor


def _nearest_hits(
    scene: StreetScene,
    dirs: torch.Tensor,
    origin: torch.Tensor,
    rot: torch.Tensor,
    K: torch.Tensor,
    tile: int,
    far: float,
) -> _Hits:
    """Intersect every pixel's ray with the ground plane, the boxes and the spheres; keep the nearest."""
    height, width = dirs.shape[:2]
    prim = scene.torch_tensors()
    tiles = _Tiling(dirs, tile)
    origin_np = origin.double().numpy()
    rects, ids = _project_rects(
        prim["lo_np"], prim["hi_np"], origin_np, rot.double().numpy(), K.double().numpy(), height, width, far
    )
    is_box = ids < prim["num_boxes"]
    behind = origin - 1e4 * rot[:, 2]
    lo_rel = torch.cat([prim["lo"], behind[None]]) - origin
    hi_rel = torch.cat([prim["hi"], behind[None]]) - origin
    hits = []
    for mask_sel, kernel in ((is_box, _box_kernel), (~is_box, _sphere_kernel)):
        t, pid = _tiled_nearest(
            tiles.dirs, tile, tiles.n_rows, tiles.n_cols, rects[mask_sel], ids[mask_sel], lo_rel, hi_rel, kernel
        )
        hits.append((tiles.untile(t), tiles.untile(pid)))
    (t_box, id_box), (t_sph, id_sph) = hits
    t_ground = torch.where(dirs[..., 2] < -1e-6, -origin[2] / dirs[..., 2], torch.full_like(dirs[..., 2], _INF))
    # The face a box ray entered through: the slab with the largest entry distance.
    slab_lo, slab_hi = lo_rel[id_box] / dirs, hi_rel[id_box] / dirs
    ax_box = torch.minimum(slab_lo, slab_hi).argmax(-1)

    t = t_ground
    pid = torch.full((height, width), -1, dtype=torch.long)
    axis = torch.full((height, width), 2, dtype=torch.long)
    closer = t_box < t
    t, pid, axis = torch.where(closer, t_box, t), torch.where(closer, id_box, pid), torch.where(closer, ax_box, axis)
    closer = t_sph < t
    t, pid = torch.where(closer, t_sph, t), torch.where(closer, id_sph, pid)
    sky = ~torch.isfinite(t)
    pid = torch.where(sky, torch.full_like(pid, -2), pid)
    return _Hits(t=t, pid=pid, axis=axis, is_sphere=closer, sky=sky)


def _materials_and_labels(scene: StreetScene, hits: _Hits) -> Tuple[torch.Tensor, torch.Tensor]:
    """Material id and CamVid class per pixel (the ground is road, misses are sky)."""
    prim = scene.torch_tensors()
    pid, sky = hits.pid, hits.sky
    mat = torch.full(pid.shape, MAT_ROAD, dtype=torch.long)
    cls = torch.full(pid.shape, ROAD, dtype=torch.long)
    obj = pid >= 0
    mat[obj] = prim["mat"][pid[obj]]
    cls[obj] = prim["cls"][pid[obj]]
    mat[sky] = MAT_SKY
    cls[sky] = SKY
    return mat, cls


def _surface_points(
    scene: StreetScene,
    d: torch.Tensor,
    td: torch.Tensor,
    pid: torch.Tensor,
    axis: torch.Tensor,
    sphere: torch.Tensor,
    u_dir: torch.Tensor,
    origin: torch.Tensor,
    focal: float,
) -> Surface:
    """Hit points, normals, face axes and pixel footprints of the given solid pixels (1-D over them)."""
    prim = scene.torch_tensors()
    p = origin + td[:, None] * d
    ids_s = pid.clamp_min(0)
    lo = prim["lo"][ids_s]
    hi = prim["hi"][ids_s]
    ax = axis
    normal = torch.zeros_like(p)
    normal.scatter_(1, ax[:, None], -torch.sign(torch.gather(d, 1, ax[:, None])))
    if sphere.any():
        centre = (lo[sphere] + hi[sphere]) / 2
        normal[sphere] = (p[sphere] - centre) / ((hi[sphere, 0] - lo[sphere, 0]) / 2)[:, None]
        ax = torch.where(sphere, torch.full_like(ax, 2), ax)
    ground = pid < 0
    normal[ground] = torch.tensor([0.0, 0.0, 1.0])
    ax = torch.where(ground, torch.full_like(ax, 2), ax)
    distance = td * d.norm(dim=-1)
    fp = distance / focal
    cos_n = (u_dir * normal).sum(-1).abs().clamp_min(0.08)
    fp_axis = fp[:, None] * (1 + u_dir.abs() / cos_n[:, None])
    return Surface(
        p=p,
        normal=normal,
        axis=ax,
        lo=lo,
        hi=hi,
        fp=fp,
        fp_axis=fp_axis,
        color=prim["color"][ids_s],
        params=prim["params"][ids_s],
        distance=distance,
    )


def _shade_pixels(
    scene: StreetScene, dirs: torch.Tensor, origin: torch.Tensor, K: torch.Tensor, hits: _Hits, mat: torch.Tensor
) -> torch.Tensor:
    """Linear colour ``(H * W, 3)`` of every pixel: shaded, lit and hazy surfaces, sky, lamp emission."""
    seed = int(scene.texture_seed)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    d_flat, t_flat, pid_flat, mat_flat = flat(dirs), flat(hits.t), flat(hits.pid), flat(mat)
    image = torch.zeros(d_flat.shape[0], 3)
    emission = torch.zeros(d_flat.shape[0], 3)
    unit = d_flat / d_flat.norm(dim=-1, keepdim=True)
    solid = ~flat(hits.sky)
    # Pixels sorted by material, so each shader works on one contiguous slice.
    order = torch.argsort(mat_flat, stable=True)
    num_sky = int((mat_flat == MAT_SKY).sum())
    idx = order[num_sky:]
    if len(idx):
        surface = _surface_points(
            scene,
            d_flat[idx],
            t_flat[idx],
            pid_flat[idx],
            flat(hits.axis)[idx],
            flat(hits.is_sphere)[idx],
            unit[idx],
            origin,
            float(K[0, 0]),
        )
        mats = mat_flat[idx]
        albedo, lamps = shade_materials(surface, mats, scene, seed)
        emission[idx] = lamps
        color = albedo * sun_and_sky_light(surface, mats, scene)
        haze = 1 - torch.exp(-surface.distance / scene.haze_distance)
        horizon = torch.as_tensor(scene.sky_horizon, dtype=torch.float32)
        image[idx] = color + (horizon - color) * haze[:, None]
    sky_idx = torch.nonzero(~solid)[:, 0]
    if len(sky_idx):
        image[sky_idx] = sky_color(unit[sky_idx], scene, seed + 77)
    return image + emission


def _apply_sensor(
    image: torch.Tensor,
    scene: StreetScene,
    us: torch.Tensor,
    vs: torch.Tensor,
    K: torch.Tensor,
    noise_seed: Optional[int],
) -> torch.Tensor:
    """Exposure, white balance, vignetting and noise; ``(H * W, 3)`` linear colour to a ``(3, H, W)`` image."""
    height, width = us.shape
    image = image * scene.exposure * torch.as_tensor(scene.white_balance, dtype=torch.float32)
    image = image.reshape(height, width, 3).permute(2, 0, 1)
    ru = (us - K[0, 2]) / (width / 2)
    rv = (vs - K[1, 2]) / (width / 2)
    image = image * (1 - scene.vignette * (ru * ru + rv * rv) / 2)
    if noise_seed is not None and scene.noise_std > 0:
        gen = torch.Generator().manual_seed(int(noise_seed))
        image = image + scene.noise_std * torch.randn(image.shape, generator=gen)
    return image.clamp(0.0, 1.0)
