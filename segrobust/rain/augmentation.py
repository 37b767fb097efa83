"""kornia augmentation drawing depth-aware, differentiable rain (see [`segrobust.rain.functional`][segrobust.rain.functional])."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from kornia.augmentation import IntensityAugmentationBase2D

from segrobust.rain.functional import (
    RAIN_PARAM_KEYS,
    check_depth_prior,
    check_edge_softness,
    ground_plane_depth,
    render_rain,
    resolve_rain_ranges,
    sample_rain_params,
)
from segrobust.rain.presets import RAIN_PRESETS, RainRange

__all__ = ["RandomRainStreaks"]


class RandomRainStreaks(IntensityAugmentationBase2D):
    r"""Add rain streaks and a depth-dependent fog veil (the RainCityscapes model).

    ``O = I·(1 − R − A) + R + A0·A`` with ``R = S·exp(−α·d)``,
    ``A = 1 − exp(−β·d)``; see [`segrobust.rain.functional.render_rain`][segrobust.rain.functional.render_rain].
    Every parameter is drawn uniformly per image from its range (a number
    fixes it); unset ranges come from the ``"medium"`` preset, and
    [`from_preset`][segrobust.rain.augmentation.RandomRainStreaks.from_preset] builds the ``light``/``medium``/``heavy``/``fog_only``
    looks. The drawn noise field is stored in ``_params["noise"]``, so
    ``aug(x, params=aug._params)`` replays a draw bit for bit. Masks, boxes and
    keypoints pass through `kornia.augmentation.AugmentationSequential`
    untouched. The output is differentiable with respect to the input and to
    the floating tensors in ``params``.

    Depth: without one, the ground-plane prior of
    [`ground_plane_depth`][segrobust.rain.functional.ground_plane_depth] (configured by
    ``depth_prior``) is used. A measured depth ``(N, 1, H, W)``
    is passed per call as ``aug(x, depth=d)`` or put in ``params["depth"]``.

    Args:
        intensity: optical thickness of a unit streak (``S = 1 − exp(−intensity·blur)``).
        density: fraction of pixels that seed a streak.
        angle: degrees from the vertical; positive streaks fall to the right.
        length: streak length in pixels.
        width: streak width (Gaussian σ across it) in pixels.
        fog_density: β, per depth unit.
        attenuation: α, per depth unit; streaks fade with ``exp(−α·d)``.
        atmospheric_light: A0, grey level of the fog in ``[0, 1]``.
        num_layers: streak layers, each with its own angle, length and noise.
        angle_spread: degrees by which a layer's angle may differ from the image's.
        depth_prior: keyword arguments of [`ground_plane_depth`][segrobust.rain.functional.ground_plane_depth]
            (``horizon``, ``bottom_depth``, ``max_depth``, ``side_depth``) for images without a depth.
        edge_softness: pixels over which a streak end fades.
        same_on_batch: one draw (noise included) for the whole batch.
        p: probability of raining on each image.
        keepdim: keep a ``(C, H, W)`` input's shape.

    Ranges must lie inside `RAIN_PARAM_BOUNDS`;
    images must be in ``[0, 1]`` (apply before normalisation).

    Examples:
        >>> import torch
        >>> aug = RandomRainStreaks.from_preset("light", p=1.0)
        >>> images = torch.rand(2, 3, 32, 32)
        >>> rainy = aug(images)
        >>> rainy.shape, torch.equal(aug(images, params=aug._params), rainy)
        (torch.Size([2, 3, 32, 32]), True)
    """

    def __init__(
        self,
        intensity: Optional[RainRange] = None,
        density: Optional[RainRange] = None,
        angle: Optional[RainRange] = None,
        length: Optional[RainRange] = None,
        width: Optional[RainRange] = None,
        fog_density: Optional[RainRange] = None,
        attenuation: Optional[RainRange] = None,
        atmospheric_light: Optional[RainRange] = None,
        *,
        num_layers: Optional[int] = None,
        angle_spread: Optional[float] = None,
        depth_prior: Optional[Dict[str, Any]] = None,
        edge_softness: float = 0.5,
        same_on_batch: bool = False,
        p: float = 0.5,
        keepdim: bool = False,
    ) -> None:
        super().__init__(p=p, same_on_batch=same_on_batch, p_batch=1.0, keepdim=keepdim)
        given = {
            "intensity": intensity,
            "density": density,
            "angle": angle,
            "length": length,
            "width": width,
            "fog_density": fog_density,
            "attenuation": attenuation,
            "atmospheric_light": atmospheric_light,
            "num_layers": num_layers,
            "angle_spread": angle_spread,
        }
        self.ranges: Dict[str, Any] = resolve_rain_ranges({k: v for k, v in given.items() if v is not None})
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        edge_softness = check_edge_softness(edge_softness)
        # Checked once here (with a dummy size) so a bad prior fails at construction, not mid-training.
        depth_prior = check_depth_prior(depth_prior)
        ground_plane_depth(2, 2, **depth_prior)
        self.flags = {"depth_prior": depth_prior, "edge_softness": float(edge_softness)}

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> RandomRainStreaks:
        """Build the augmentation from a named preset; keyword arguments override it.

        Presets (`RAIN_PRESETS`): ``light``
        (Rain100L-like sparse thin streaks), ``medium``, ``heavy``
        (Rain100H-like dense streaks in a few directions, with a veil) and
        ``fog_only`` (RainCityscapes-like veil growing with depth, no streaks).

        Examples:
            >>> RandomRainStreaks.from_preset("heavy", p=1.0).ranges["num_layers"]
            3
        """
        if name not in RAIN_PRESETS:
            raise ValueError(f"unknown rain preset {name!r}; expected one of {sorted(RAIN_PRESETS)}")
        return cls(**{**RAIN_PRESETS[name], **kwargs})

    def __repr__(self) -> str:
        ranges = ", ".join(f"{key}={value}" for key, value in self.ranges.items())
        flags = ", ".join(f"{key}={value}" for key, value in self.flags.items())
        return (
            f"{self.__class__.__name__}({ranges}, {flags}, p={self.p}, "
            f"same_on_batch={self.same_on_batch}, keepdim={self.keepdim})"
        )

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> Dict[str, torch.Tensor]:
        batch, _, height, width = batch_shape
        dtype = self.dtype if self.dtype is not None and self.dtype.is_floating_point else torch.float32
        return sample_rain_params(
            batch,
            (height, width),
            self.ranges,
            same_on_batch=self.same_on_batch,
            device=self.device,
            dtype=dtype,
        )

    def apply_transform(
        self,
        input: torch.Tensor,
        params: Dict[str, torch.Tensor],
        flags: Dict[str, Any],
        transform: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        missing = [key for key in RAIN_PARAM_KEYS if key not in params]
        if missing:
            raise ValueError(
                f"params is missing {missing}; replay a dict recorded in aug._params "
                "or drawn with segrobust.rain.sample_rain_params"
            )
        return render_rain(
            input,
            {key: params[key] for key in RAIN_PARAM_KEYS},
            params.get("depth"),
            depth_prior=flags["depth_prior"],
            edge_softness=flags["edge_softness"],
        )
