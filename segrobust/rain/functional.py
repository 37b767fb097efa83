"""Differentiable, depth-aware rain: the RainCityscapes image model as pure functions.

The rendered image is (Hu et al., CVPR 2019)

``O = I·(1 − R − A) + R + A0·A``,  ``R = S·t_r``,  ``t_r = exp(−α·d)``,  ``A = 1 − exp(−β·d)``

with ``I`` the clean image in ``[0, 1]``, ``d`` the depth, ``α`` the streak
attenuation, ``β`` the fog density, ``A0`` the atmospheric light and ``S`` the
streak layer: sparse noise motion-blurred along a soft line kernel and scaled by
the intensity. Every step is a smooth tensor operation, so ``O`` is
differentiable with respect to ``I``, ``d`` and every continuous parameter.

A draw is a plain ``dict`` of tensors (see [`sample_rain_params`][segrobust.rain.functional.sample_rain_params]); the
random noise field is one of its entries, so rendering the same dict twice gives
the same image bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from segrobust.rain.presets import (
    CONTINUOUS_RAIN_PARAMS,
    PRESET_REFERENCE_HEIGHT,
    RAIN_PARAM_BOUNDS,
    RAIN_PRESETS,
    RainRange,
)
from segrobust.validation import check_images, check_number

__all__ = [
    "CONTINUOUS_RAIN_PARAMS",
    "PRESET_REFERENCE_HEIGHT",
    "RAIN_PARAM_BOUNDS",
    "RAIN_PARAM_KEYS",
    "RAIN_PRESETS",
    "RainParams",
    "RainRange",
    "broadcast_rain_params",
    "check_depth_prior",
    "check_edge_softness",
    "clamp_rain_params",
    "ground_plane_depth",
    "line_kernel",
    "rain_params_for_optimization",
    "render_rain",
    "resolve_rain_ranges",
    "sample_rain_params",
    "scale_rain_ranges",
    "streak_layer",
]

#: A rain draw: parameter name -> tensor (see [`sample_rain_params`][segrobust.rain.functional.sample_rain_params] for the shapes).
RainParams = Dict[str, torch.Tensor]

#: Every key [`render_rain`][segrobust.rain.functional.render_rain] reads from a parameter dict.
RAIN_PARAM_KEYS: Tuple[str, ...] = (*CONTINUOUS_RAIN_PARAMS, "noise")

# Tails of the soft line kernel beyond which it is treated as zero: the along profile
# is below sigmoid(-8) ≈ 3e-4 and the across Gaussian below exp(-8) ≈ 3e-4 there.
_TAIL_SOFTNESS_UNITS = 8.0
_TAIL_WIDTH_UNITS = 4.0

_RANGE_KEYS = (*CONTINUOUS_RAIN_PARAMS, "num_layers", "angle_spread")
_PER_IMAGE_KEYS = ("intensity", "density", "width", "fog_density", "attenuation")
_PER_LAYER_KEYS = ("angle", "length")


# --------------------------------------------------------------------------- checks


def _per_image(name: str, value: torch.Tensor, batch: int) -> torch.Tensor:
    """A scalar parameter as shape ``(N,)``; accepts ``()``, ``(1,)`` and ``(N,)``."""
    if value.dim() == 0 or (value.dim() == 1 and value.shape[0] in (1, batch)):
        return value.reshape(-1).expand(batch)
    raise ValueError(f"params[{name!r}] must have shape (), (1,) or ({batch},), got {tuple(value.shape)}")


def _per_layer(name: str, value: torch.Tensor, batch: int, layers: int) -> torch.Tensor:
    """A per-streak-layer parameter as shape ``(N, L)``; also accepts per-image shapes."""
    if value.dim() <= 1:
        return _per_image(name, value, batch).unsqueeze(1).expand(batch, layers)
    if value.dim() == 2 and value.shape[0] in (1, batch) and value.shape[1] in (1, layers):
        return value.expand(batch, layers)
    raise ValueError(
        f"params[{name!r}] must have shape (), ({batch},) or ({batch}, {layers}) "
        f"(one value per image and streak layer), got {tuple(value.shape)}"
    )


def _atmospheric_light(value: torch.Tensor, batch: int, channels: int) -> torch.Tensor:
    """``A0`` as ``(N,)`` (a grey level per image) or ``(N, 1 or C)`` (one value per channel)."""
    if value.dim() <= 1:
        return _per_image("atmospheric_light", value, batch)
    if value.dim() == 2 and value.shape[0] in (1, batch) and value.shape[1] in (1, channels):
        return value.expand(batch, value.shape[1])
    raise ValueError(
        f"params['atmospheric_light'] must have shape (), ({batch},), ({batch}, 1) or "
        f"({batch}, {channels}), got {tuple(value.shape)}"
    )


def broadcast_rain_params(
    params: Mapping[str, torch.Tensor], batch: int, channels: int, size: Tuple[int, int]
) -> RainParams:
    """Check a rain draw's structure and broadcast it to one value per image (and layer).

    The shapes [`render_rain`][segrobust.rain.functional.render_rain] accepts become ``(N,)`` for the per-image
    parameters, ``(N, L)`` for ``angle`` and ``length``, ``(N,)`` or
    ``(N, 1 or C)`` for ``atmospheric_light``; ``noise`` ``(N, L, H, W)`` is
    returned as is. Broadcast entries are views, not copies. Values are not
    checked here ([`render_rain`][segrobust.rain.functional.render_rain] does).

    Examples:
        >>> draw = sample_rain_params(1, (4, 4), "heavy", generator=torch.Generator().manual_seed(0))
        >>> out = broadcast_rain_params({**draw, "intensity": torch.tensor(0.5)}, 1, 3, (4, 4))
        >>> out["intensity"].shape, out["angle"].shape
        (torch.Size([1]), torch.Size([1, 3]))
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of rain parameter tensors, got {type(params).__name__}")
    missing = [key for key in RAIN_PARAM_KEYS if key not in params]
    if missing:
        raise ValueError(
            f"params is missing {missing}; expected the keys {list(RAIN_PARAM_KEYS)} "
            "(use sample_rain_params to draw them)"
        )
    for key in RAIN_PARAM_KEYS:
        value = params[key]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"params[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise TypeError(f"params[{key!r}] must be a floating point tensor, got dtype {value.dtype}")
    noise = params["noise"]
    if noise.dim() != 4 or noise.shape[0] != batch or tuple(noise.shape[2:]) != tuple(size) or noise.shape[1] < 1:
        raise ValueError(
            f"params['noise'] must have shape ({batch}, L, {size[0]}, {size[1]}) "
            f"(one uniform field per image and streak layer, L >= 1), got {tuple(noise.shape)}"
        )
    layers = noise.shape[1]
    out: RainParams = {key: _per_image(key, params[key], batch) for key in _PER_IMAGE_KEYS}
    for key in _PER_LAYER_KEYS:
        out[key] = _per_layer(key, params[key], batch, layers)
    out["atmospheric_light"] = _atmospheric_light(params["atmospheric_light"], batch, channels)
    out["noise"] = noise
    return out


# The domain in which the model is defined; RAIN_PARAM_BOUNDS is the narrower plausible range.
_DOMAIN: Mapping[str, Tuple[float, float]] = {
    "intensity": (0.0, math.inf),
    "density": (0.0, 1.0),
    "angle": (-math.inf, math.inf),
    "length": (0.0, math.inf),
    "width": (1e-3, math.inf),
    "fog_density": (0.0, math.inf),
    "attenuation": (0.0, math.inf),
    "atmospheric_light": (0.0, 1.0),
    "noise": (0.0, 1.0),
}


def _check_param_values(params: Mapping[str, torch.Tensor]) -> None:
    # One host sync for all checks; the per-key loop runs only to word the error.
    def ok(key: str) -> torch.Tensor:
        value = params[key].detach()
        if value.numel() == 0:
            return torch.ones((), dtype=torch.bool, device=value.device)
        low, high = _DOMAIN[key]
        # aminmax propagates NaN, and ±inf fail the finite test: one pass over the noise field.
        smallest, largest = torch.aminmax(value)
        extremes = torch.stack([smallest, largest])
        return torch.isfinite(extremes).all() & (smallest >= low) & (largest <= high)

    if bool(torch.stack([ok(key) for key in RAIN_PARAM_KEYS]).all()):
        return
    for key in RAIN_PARAM_KEYS:
        if not bool(ok(key)):
            low, high = _DOMAIN[key]
            value = params[key].detach()
            raise ValueError(
                f"params[{key!r}] must be finite and in [{low}, {high}], got values in "
                f"[{float(value.min()):.4g}, {float(value.max()):.4g}]"
            )


def _unit_clamp(values: torch.Tensor) -> torch.Tensor:
    """``clamp(values, 0, 1)`` whose gradient is 1 on the closed range ``[0, 1]`` and 0 outside.

    ``torch.clamp``'s derivative exactly at a bound changed between torch
    releases, and clean images hold exact 0 and 1 pixels; selecting the input
    where the clamp left it unchanged keeps their gradient on every version.
    """
    clamped = values.clamp(0.0, 1.0)
    if not (torch.is_grad_enabled() and values.requires_grad):
        return clamped
    return torch.where(clamped == values, values, clamped)


# --------------------------------------------------------------------------- depth


def ground_plane_depth(
    height: int,
    width: int,
    *,
    horizon: float = 0.5,
    bottom_depth: float = 3.0,
    max_depth: float = 100.0,
    side_depth: Optional[float] = None,
    horizon_softness: float = 0.08,
    device: Optional[Union[torch.device, str]] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Depth prior of a flat ground seen by a level camera, shape ``(1, 1, H, W)``.

    Below the horizon the depth of a ground point is inversely proportional to
    its distance (in rows) from the horizon row; the bottom row is at
    ``bottom_depth`` and everything on or above the horizon (sky, far
    buildings) is at ``max_depth``. Units are those of ``bottom_depth``
    (metres by default), which ``fog_density`` and ``attenuation`` are per.

    ``horizon_softness`` (a fraction of the height) replaces the row distance
    ``z`` to the horizon by ``s·softplus(z/s)``, so the depth rises smoothly to
    ``max_depth`` over a band of about ``2s`` around the horizon instead of
    jumping there (a jump draws a horizontal line through a fog veil); ``0``
    gives the exact ground plane with everything above the horizon at ``max_depth``.

    ``side_depth`` (optional) adds a street canyon: two vertical walls parallel
    to the view direction, whose depth grows towards the central column and
    equals ``side_depth`` at the left and right image borders; each pixel takes
    the nearer of ground/sky and wall. Without walls, near buildings above the
    horizon count as far away, and a fog veil then shows a horizontal step
    where they cross the horizon row.

    Args:
        height: image height ``H``.
        width: image width ``W``.
        horizon: horizon row as a fraction of the height from the top, in ``[0, 1)``.
        bottom_depth: depth of the bottom image row, ``> 0``.
        max_depth: depth of the horizon and above, ``>= bottom_depth``.
        side_depth: depth of the side walls at the image borders, ``> 0``, or ``None`` for open ground.
        horizon_softness: width of the smooth transition at the horizon, fraction of the height, ``>= 0``.
        device: device of the result.
        dtype: dtype of the result (default: torch's default dtype).

    Examples:
        >>> depth = ground_plane_depth(4, 2, horizon=0.5, bottom_depth=2.0, max_depth=50.0, horizon_softness=0.0)
        >>> depth[0, 0, :, 0].tolist()
        [50.0, 50.0, 6.0, 2.0]
        >>> ground_plane_depth(1, 4, side_depth=5.0, max_depth=50.0, horizon_softness=0.0)[0, 0, 0].tolist()
        [5.0, 15.0, 15.0, 5.0]
    """
    if isinstance(height, bool) or not isinstance(height, int) or height < 1:
        raise ValueError(f"height must be a positive int, got {height!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if not 0.0 <= horizon < 1.0:
        raise ValueError(f"horizon must be a fraction of the image height in [0, 1), got {horizon!r}")
    if not bottom_depth > 0:
        raise ValueError(f"bottom_depth must be > 0, got {bottom_depth!r}")
    if not max_depth >= bottom_depth:
        raise ValueError(f"max_depth must be >= bottom_depth ({bottom_depth}), got {max_depth!r}")
    if not horizon_softness >= 0:
        raise ValueError(f"horizon_softness must be >= 0 (a fraction of the height), got {horizon_softness!r}")
    if side_depth is not None and not side_depth > 0:
        raise ValueError(f"side_depth must be > 0 or None, got {side_depth!r}")
    dtype = dtype or torch.get_default_dtype()
    # Pixel centres; the bottom row's centre is (H - 0.5) / H, so scale so that it maps to bottom_depth.
    rows = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    below_horizon = rows - horizon
    bottom = (height - 0.5) / height - horizon
    if horizon_softness > 0:
        # softplus turns the 1/distance singularity at the horizon into a smooth rise to max_depth.
        def distance(z: torch.Tensor) -> torch.Tensor:
            return horizon_softness * F.softplus(z / horizon_softness)

        bottom_distance = float(distance(torch.tensor(bottom, dtype=torch.float64)))
        depth = (bottom_depth * bottom_distance / distance(below_horizon)).clamp_max(max_depth)
    else:
        depth = bottom_depth * bottom / below_horizon.clamp_min(1e-12)
        depth = torch.where(below_horizon > 0, depth, torch.full_like(depth, max_depth)).clamp_max(max_depth)
    depth = depth.view(1, 1, height, 1).expand(1, 1, height, width)
    if side_depth is not None:
        # A wall at lateral distance D is seen at column offset u (from the centre) at depth ∝ D / |u|.
        cols = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width - 0.5
        border = 0.5 - 0.5 / width
        walls = (side_depth * border / cols.abs().clamp_min(1e-12)).clamp_max(max_depth)
        depth = torch.minimum(depth, walls.view(1, 1, 1, width))
    return depth


# --------------------------------------------------------------------------- streaks


def line_kernel(
    angle: torch.Tensor,
    length: torch.Tensor,
    width: torch.Tensor,
    size: Tuple[int, int],
    *,
    edge_softness: float = 0.5,
) -> torch.Tensor:
    """Soft line (motion-blur) kernels, one per entry of ``angle``, centred, shape ``(M, kh, kw)``.

    ``k(x, y) = σ((ℓ/2 + s)/τ) · σ((ℓ/2 − s)/τ) · exp(−r² / (2w²))`` with
    ``s = x·sin θ + y·cos θ`` the offset along the streak, ``r = x·cos θ − y·sin θ``
    across it (``x`` right, ``y`` down, ``θ`` in degrees from the vertical,
    positive leaning so the streak falls to the right), ``ℓ`` the length, ``w``
    the width (Gaussian σ, pixels) and ``τ`` the edge softness. The profile is
    smooth in ``θ``, ``ℓ`` and ``w``, so the kernel is differentiable in all
    three; its peak is about 1 (not normalised to sum 1), so a streak is as
    bright as the drop that seeded it. The centre is at index ``(kh // 2, kw // 2)``.

    Args:
        angle: ``(M,)`` degrees from the vertical.
        length: ``(M,)`` pixels.
        width: ``(M,)`` pixels.
        size: ``(kh, kw)`` kernel size.
        edge_softness: ``τ``, pixels over which a streak end fades.

    Examples:
        >>> k = line_kernel(torch.tensor([0.0]), torch.tensor([5.0]), torch.tensor([0.5]), (7, 7))
        >>> k.shape, round(float(k[0, 3, 3]), 3), bool(k[0, 3, 3] > k[0, 3, 4])
        (torch.Size([1, 7, 7]), 0.987, True)
    """
    edge_softness = check_edge_softness(edge_softness)
    theta = torch.deg2rad(angle).reshape(-1, 1, 1)
    half_length = (length.reshape(-1, 1, 1) / 2).to(theta.dtype)
    sigma = width.reshape(-1, 1, 1).to(theta.dtype)
    kh, kw = size
    y = (torch.arange(kh, device=theta.device, dtype=theta.dtype) - kh // 2).view(1, kh, 1)
    x = (torch.arange(kw, device=theta.device, dtype=theta.dtype) - kw // 2).view(1, 1, kw)
    sin, cos = torch.sin(theta), torch.cos(theta)
    along = x * sin + y * cos
    across = x * cos - y * sin
    # Product of two sigmoids: a box of length ℓ with soft ends, smooth everywhere (|s| is not).
    profile = torch.sigmoid((half_length + along) / edge_softness) * torch.sigmoid(
        (half_length - along) / edge_softness
    )
    return profile * torch.exp(-(across**2) / (2 * sigma**2))


def _kernel_extent(length: torch.Tensor, width: torch.Tensor, edge_softness: float) -> int:
    # The extent follows the parameter bounds rather than the values, so it does not jump while
    # an optimiser moves the length (a jump would make the rendering discontinuous); only values
    # beyond the bounds grow it.
    longest = max(RAIN_PARAM_BOUNDS["length"][1], float(length.detach().max()))
    widest = max(RAIN_PARAM_BOUNDS["width"][1], float(width.detach().max()))
    return math.ceil(longest / 2 + _TAIL_SOFTNESS_UNITS * edge_softness + _TAIL_WIDTH_UNITS * widest)


def streak_layer(
    noise: torch.Tensor,
    density: torch.Tensor,
    angle: torch.Tensor,
    length: torch.Tensor,
    width: torch.Tensor,
    intensity: torch.Tensor,
    *,
    edge_softness: float = 0.5,
) -> torch.Tensor:
    """The streak layer ``S`` in ``[0, 1)`` (up to FFT round-off, ~1e-7), shape ``(N, 1, H, W)``.

    Drops are the fraction ``density`` of pixels whose uniform ``noise`` is
    highest, with brightness ``(u − (1 − density)) / density`` (uniform in
    ``(0, 1]``, piecewise linear so differentiable in ``density``). Each layer's
    drops are motion-blurred with its own [`line_kernel`][segrobust.rain.functional.line_kernel] by circular
    convolution (FFT; streaks leaving one edge re-enter at the opposite one, so
    the density is uniform up to the borders), layers are summed, and
    ``S = 1 − exp(−intensity · blur)``: linear in the intensity for faint rain,
    saturating smoothly below 1 where streaks overlap (like a screen blend).

    Args:
        noise: ``(N, L, H, W)`` uniform field in ``[0, 1]``, one per streak layer.
        density: ``(N,)`` fraction of pixels that seed a streak.
        angle: ``(N, L)`` degrees from the vertical.
        length: ``(N, L)`` pixels.
        width: ``(N,)`` pixels (Gaussian σ across the streak).
        intensity: ``(N,)`` optical thickness of a unit streak, ``>= 0``.
        edge_softness: pixels over which a streak end fades.

    Examples:
        >>> noise = torch.zeros(1, 1, 9, 9); noise[0, 0, 4, 4] = 1.0
        >>> s = streak_layer(noise, torch.tensor([0.5]), torch.tensor([[0.0]]), torch.tensor([[5.0]]),
        ...                  torch.tensor([0.5]), torch.tensor([3.0]))
        >>> s.shape, bool(s[0, 0, 3, 4] > 0.9), bool(s[0, 0, 4, 2] < 0.01)
        (torch.Size([1, 1, 9, 9]), True, True)
    """
    edge_softness = check_edge_softness(edge_softness)
    batch, layers, height, width_px = noise.shape
    dtype = noise.dtype
    seed_fraction = density.view(batch, 1, 1, 1)
    drops = F.relu(noise - (1 - seed_fraction)) / seed_fraction.clamp_min(1e-12)
    extent = _kernel_extent(length, width, edge_softness)
    # A kernel larger than the image wraps around it: build it on the whole (circular) image grid.
    kh, kw = min(2 * extent + 1, height), min(2 * extent + 1, width_px)
    width_per_layer = width.view(batch, 1).expand(batch, layers)
    kernels = line_kernel(
        angle.reshape(-1),
        length.reshape(-1),
        width_per_layer.reshape(-1),
        (kh, kw),
        edge_softness=edge_softness,
    ).view(batch, layers, kh, kw)
    # rfft2(s=...) zero-pads the kernels at their end, which delays the result by the kernel centre;
    # one roll of the layer-summed result (N channels, not N·L) undoes it.
    spectrum = (torch.fft.rfft2(drops) * torch.fft.rfft2(kernels, s=(height, width_px))).sum(dim=1, keepdim=True)
    blur = torch.fft.irfft2(spectrum, s=(height, width_px)).to(dtype)
    blur = torch.roll(blur, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return -torch.expm1(-intensity.view(batch, 1, 1, 1) * blur)


# --------------------------------------------------------------------------- render


def render_rain(
    images: torch.Tensor,
    params: Mapping[str, torch.Tensor],
    depth: Optional[torch.Tensor] = None,
    *,
    depth_prior: Optional[Mapping[str, Any]] = None,
    edge_softness: float = 0.5,
) -> torch.Tensor:
    """Render depth-aware rain and fog onto ``images`` (``O = I·(1 − R − A) + R + A0·A``).

    ``R = S·exp(−α·d)`` (streaks fade with distance) and ``A = 1 − exp(−β·d)``
    (the fog veil thickens with distance), ``S`` from [`streak_layer`][segrobust.rain.functional.streak_layer].
    Differentiable with respect to ``images``, ``depth`` and every floating
    parameter in ``params``. Parameters are cast to the images' dtype and device
    (half precision is computed in float32).

    Range: ``S ∈ [0, 1)``, so with ``A0 ∈ [0, 1]`` the output can exceed 1 only
    where ``R + A > 1`` (never when ``α ≥ β``). It is clamped to ``[0, 1]`` with
    a gradient of 1 on the closed range and 0 outside it, equal in value to
    ``torch.clamp``. With zero ``intensity`` and zero ``fog_density`` the
    output equals the input exactly.

    Args:
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        params: a rain draw, e.g. from [`sample_rain_params`][segrobust.rain.functional.sample_rain_params]: ``intensity``,
            ``density``, ``width``, ``fog_density``, ``attenuation`` of shape
            ``(N,)`` (or ``()``/``(1,)``, broadcast), ``angle`` and ``length`` of
            shape ``(N,)`` or ``(N, L)``, ``atmospheric_light`` of shape ``(N,)``,
            ``(N, 1)`` or ``(N, C)``, and ``noise`` ``(N, L, H, W)`` in ``[0, 1]``.
        depth: ``(N, 1, H, W)`` or ``(1, 1, H, W)``, ``>= 0``, in the units
            ``fog_density`` and ``attenuation`` are per; ``None`` uses
            [`ground_plane_depth`][segrobust.rain.functional.ground_plane_depth].
        depth_prior: keyword arguments of [`ground_plane_depth`][segrobust.rain.functional.ground_plane_depth] (``horizon``,
            ``bottom_depth``, ``max_depth``, ``side_depth``) used when ``depth`` is ``None``.
        edge_softness: pixels over which a streak end fades (see [`line_kernel`][segrobust.rain.functional.line_kernel]).

    Returns:
        ``(N, C, H, W)`` rainy images in ``[0, 1]``, a new tensor.

    Examples:
        >>> images = torch.rand(2, 3, 32, 32)
        >>> params = sample_rain_params(2, (32, 32), "heavy", generator=torch.Generator().manual_seed(0))
        >>> rainy = render_rain(images, params)
        >>> rainy.shape, bool(rainy.min() >= 0), bool(rainy.max() <= 1)
        (torch.Size([2, 3, 32, 32]), True, True)
        >>> torch.equal(render_rain(images, params), rainy)
        True
    """
    check_images(images, tol=0.0, allow_empty=True, hint="apply rain before normalisation")
    edge_softness = check_edge_softness(edge_softness)
    batch, channels, height, width = images.shape
    p = broadcast_rain_params(params, batch, channels, (height, width))
    if images.numel() == 0:
        return images.clone()
    work_dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    p = {key: value.to(device=images.device, dtype=work_dtype) for key, value in p.items()}
    _check_param_values(p)
    if depth is None:
        depth = ground_plane_depth(
            height, width, **check_depth_prior(depth_prior), device=images.device, dtype=work_dtype
        )
    else:
        _check_depth(depth, batch, (height, width))
        depth = depth.to(device=images.device, dtype=work_dtype)

    streaks = streak_layer(
        p["noise"], p["density"], p["angle"], p["length"], p["width"], p["intensity"], edge_softness=edge_softness
    )
    attenuation = p["attenuation"].view(batch, 1, 1, 1)
    fog_density = p["fog_density"].view(batch, 1, 1, 1)
    light = p["atmospheric_light"].reshape(batch, -1, 1, 1)
    rain = streaks * torch.exp(-attenuation * depth)
    fog = -torch.expm1(-fog_density * depth)
    clean = images.to(work_dtype)
    rendered = clean * (1 - rain - fog) + rain + light * fog
    return _unit_clamp(rendered).to(images.dtype)


_PRIOR_KEYS = ("horizon", "bottom_depth", "max_depth", "side_depth", "horizon_softness")


def check_depth_prior(depth_prior: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A copy of ``depth_prior`` (keyword arguments of [`ground_plane_depth`][segrobust.rain.functional.ground_plane_depth]), keys checked; ``{}`` for None.

    Examples:
        >>> check_depth_prior({"horizon": 0.4})
        {'horizon': 0.4}
    """
    if depth_prior is None:
        return {}
    if not isinstance(depth_prior, Mapping):
        raise TypeError(
            f"depth_prior must be a mapping of ground_plane_depth arguments, got {type(depth_prior).__name__}"
        )
    unknown = sorted(set(depth_prior) - set(_PRIOR_KEYS))
    if unknown:
        raise ValueError(f"depth_prior has unknown keys {unknown}; expected some of {list(_PRIOR_KEYS)}")
    return dict(depth_prior)


def check_edge_softness(edge_softness: object) -> float:
    """``edge_softness`` (pixels over which a streak end fades) must be a finite number > 0.

    ``0`` would divide by zero (NaN gradients) and a negative value inverts the streaks.

    Examples:
        >>> check_edge_softness(0.5)
        0.5
    """
    return check_number(edge_softness, "edge_softness", low=0.0, low_inclusive=False, unit="pixels")


def _check_depth(depth: torch.Tensor, batch: int, size: Tuple[int, int]) -> None:
    if not isinstance(depth, torch.Tensor):
        raise TypeError(f"depth must be a torch.Tensor (N, 1, H, W) or None, got {type(depth).__name__}")
    if not depth.dtype.is_floating_point:
        raise TypeError(f"depth must be a floating point tensor, got dtype {depth.dtype}")
    if depth.dim() != 4 or depth.shape[0] not in (1, batch) or depth.shape[1] != 1 or tuple(depth.shape[2:]) != size:
        raise ValueError(
            f"depth must have shape ({batch}, 1, {size[0]}, {size[1]}) or (1, 1, {size[0]}, {size[1]}), "
            f"got {tuple(depth.shape)}"
        )
    values = depth.detach()
    if not bool((torch.isfinite(values) & (values >= 0)).all()):
        raise ValueError("depth must be finite and >= 0 everywhere")


# --------------------------------------------------------------------------- parameters


def resolve_rain_ranges(ranges: Union[str, Mapping[str, object], None] = None) -> Dict[str, object]:
    """Complete a preset name or a partial range mapping into a full, checked range dict.

    Missing entries come from the ``"medium"`` preset. A range is ``(low, high)``
    or a single number; it must lie inside `RAIN_PARAM_BOUNDS`.
    ``num_layers`` (int >= 1) and ``angle_spread`` (degrees >= 0) are also accepted.

    Examples:
        >>> resolve_rain_ranges({"intensity": 0.0})["intensity"]
        (0.0, 0.0)
        >>> resolve_rain_ranges("light")["num_layers"]
        1
    """
    if ranges is None:
        ranges = "medium"
    if isinstance(ranges, str):
        if ranges not in RAIN_PRESETS:
            raise ValueError(f"unknown rain preset {ranges!r}; expected one of {sorted(RAIN_PRESETS)}")
        ranges = RAIN_PRESETS[ranges]
    if not isinstance(ranges, Mapping):
        raise TypeError(f"ranges must be a preset name or a mapping, got {type(ranges).__name__}")
    unknown = sorted(set(ranges) - set(_RANGE_KEYS))
    if unknown:
        raise ValueError(f"ranges has unknown keys {unknown}; expected some of {list(_RANGE_KEYS)}")
    resolved: Dict[str, object] = {**RAIN_PRESETS["medium"], **ranges}
    for key in CONTINUOUS_RAIN_PARAMS:
        resolved[key] = _as_range(key, resolved[key])
    num_layers = resolved["num_layers"]
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
    spread = resolved["angle_spread"]
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not 0 <= spread <= 90:
        raise ValueError(f"angle_spread must be a number of degrees in [0, 90], got {spread!r}")
    resolved["angle_spread"] = float(spread)
    return resolved


def _as_range(key: str, value: object) -> Tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = float(value)
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        low, high = float(value[0]), float(value[1])
    else:
        raise ValueError(f"range for {key!r} must be a number or a (low, high) pair, got {value!r}")
    bound_low, bound_high = RAIN_PARAM_BOUNDS[key]
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"range for {key!r} must be finite with low <= high, got ({low}, {high})")
    if low < bound_low or high > bound_high:
        raise ValueError(
            f"range for {key!r} must lie inside its physical bounds [{bound_low}, {bound_high}], got ({low}, {high})"
        )
    return low, high


def sample_rain_params(
    batch_size: int,
    image_size: Tuple[int, int],
    ranges: Union[str, Mapping[str, object], None] = None,
    *,
    same_on_batch: bool = False,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> RainParams:
    """Draw rain parameters uniformly from ``ranges`` (a preset name or a mapping).

    Shapes for ``N = batch_size``, ``L = num_layers``: ``intensity``, ``density``,
    ``width``, ``fog_density``, ``attenuation``, ``atmospheric_light`` ``(N,)``;
    ``angle`` and ``length`` ``(N, L)`` (each layer's angle is the image's angle
    plus a uniform offset in ``±angle_spread``); ``noise`` ``(N, L, H, W)``
    uniform in ``[0, 1)``. The draw order is fixed, so a seeded ``generator``
    reproduces a draw.

    Args:
        batch_size: ``N``.
        image_size: ``(H, W)``.
        ranges: preset name (see `RAIN_PRESETS`), a mapping completed by
            [`resolve_rain_ranges`][segrobust.rain.functional.resolve_rain_ranges], or ``None`` for ``"medium"``.
        same_on_batch: one draw (noise included) shared by the whole batch.
        generator: random generator; the global one when ``None``.
        device: device of the tensors.
        dtype: floating dtype of the tensors.

    Examples:
        >>> params = sample_rain_params(2, (16, 24), "heavy", generator=torch.Generator().manual_seed(0))
        >>> params["angle"].shape, params["noise"].shape
        (torch.Size([2, 3]), torch.Size([2, 3, 16, 24]))
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_size)
    ):
        raise ValueError(f"image_size must be a pair of positive ints (H, W), got {image_size!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    resolved = resolve_rain_ranges(ranges)
    layers = int(resolved["num_layers"])  # type: ignore[call-overload]
    draws = 1 if same_on_batch and batch_size > 0 else batch_size
    height, width = image_size

    def uniform(key: str, *shape: int) -> torch.Tensor:
        low, high = resolved[key]  # type: ignore[misc]
        return low + (high - low) * torch.rand(draws, *shape, generator=generator, device=device, dtype=dtype)

    params: RainParams = {key: uniform(key) for key in ("intensity", "density", "width")}
    spread = float(resolved["angle_spread"])  # type: ignore[arg-type]
    offsets = spread * (2 * torch.rand(draws, layers, generator=generator, device=device, dtype=dtype) - 1)
    params["angle"] = uniform("angle").unsqueeze(1) + offsets
    params["length"] = uniform("length", layers)
    for key in ("fog_density", "attenuation", "atmospheric_light"):
        params[key] = uniform(key)
    params["noise"] = torch.rand(draws, layers, height, width, generator=generator, device=device, dtype=dtype)
    if draws != batch_size:
        params = {key: value.expand(batch_size, *value.shape[1:]).clone() for key, value in params.items()}
    return params


def clamp_rain_params(
    params: Mapping[str, torch.Tensor],
    bounds: Optional[Mapping[str, Tuple[float, float]]] = None,
    *,
    inplace: bool = False,
) -> RainParams:
    """Project every parameter present in ``params`` onto its ``bounds`` (default `RAIN_PARAM_BOUNDS`).

    Keys without bounds (e.g. kornia's ``batch_prob``) are passed through.
    Out of place by default; ``inplace=True`` clamps the tensors themselves
    (under ``torch.no_grad()``), the usual projection step of a gradient attack.

    Examples:
        >>> clamp_rain_params({"intensity": torch.tensor([9.0]), "angle": torch.tensor([[-80.0]])})
        {'intensity': tensor([4.]), 'angle': tensor([[-60.]])}
    """
    bounds = RAIN_PARAM_BOUNDS if bounds is None else bounds
    projected: RainParams = {}
    for key, value in params.items():
        if key not in bounds or not isinstance(value, torch.Tensor):
            projected[key] = value
            continue
        low, high = bounds[key]
        if inplace:
            with torch.no_grad():
                value.clamp_(low, high)
            projected[key] = value
        else:
            projected[key] = value.clamp(low, high)
    return projected


def rain_params_for_optimization(
    params: Mapping[str, torch.Tensor], keys: Optional[Tuple[str, ...]] = None
) -> RainParams:
    """Detached copies of ``params``; those named in ``keys`` (default: all continuous ones) require grad.

    The copies are leaves an optimiser can update; the originals are untouched.

    Examples:
        >>> params = sample_rain_params(1, (8, 8), "light", generator=torch.Generator().manual_seed(0))
        >>> leaves = rain_params_for_optimization(params, keys=("intensity", "angle"))
        >>> leaves["intensity"].requires_grad, leaves["noise"].requires_grad
        (True, False)
    """
    keys = CONTINUOUS_RAIN_PARAMS if keys is None else keys
    unknown = sorted(set(keys) - set(RAIN_PARAM_KEYS))
    if unknown:
        raise ValueError(f"keys {unknown} are not rain parameters; expected some of {list(RAIN_PARAM_KEYS)}")
    leaves: RainParams = {}
    for key, value in params.items():
        copy = value.detach().clone()
        if key in keys:
            if not copy.dtype.is_floating_point:
                raise TypeError(f"params[{key!r}] must be floating point to require grad, got {copy.dtype}")
            copy.requires_grad_(True)
        leaves[key] = copy
    return leaves


def scale_rain_ranges(
    ranges: Union[str, Mapping[str, object], None],
    height: int,
    reference_height: Optional[int] = PRESET_REFERENCE_HEIGHT,
) -> Dict[str, object]:
    """Resolve ``ranges`` and scale the pixel-sized ``length`` range from ``reference_height`` to ``height``.

    The presets are tuned for 360-pixel-high images; on a 96-pixel-high image
    the same streaks must be about a quarter as long to look the same. The
    result stays inside `RAIN_PARAM_BOUNDS`. ``reference_height=None`` resolves
    the ranges without scaling them.

    Examples:
        >>> scale_rain_ranges({"length": (20.0, 40.0)}, height=180)["length"]
        (10.0, 20.0)
        >>> scale_rain_ranges({"length": (20.0, 40.0)}, height=180, reference_height=None)["length"]
        (20.0, 40.0)
    """
    bad_reference = reference_height is not None and (not isinstance(reference_height, int) or reference_height < 1)
    if not isinstance(height, int) or height < 1 or bad_reference:
        raise ValueError(
            f"height must be a positive int and reference_height a positive int or None, got "
            f"{height!r}, {reference_height!r}"
        )
    resolved = resolve_rain_ranges(ranges)
    if reference_height is None:
        return resolved
    low_bound, high_bound = RAIN_PARAM_BOUNDS["length"]
    low, high = resolved["length"]
    scale = height / reference_height
    resolved["length"] = (min(max(low * scale, low_bound), high_bound), min(max(high * scale, low_bound), high_bound))
    return resolved
