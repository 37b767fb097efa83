"""Differentiable, depth-aware rain: the RainCityscapes image model and a kornia augmentation.

``render_rain(images, params, depth=None)`` renders
``O = I·(1 − R − A) + R + A0·A`` differentiably; ``sample_rain_params`` draws a
replayable parameter dict; ``RandomRainStreaks`` wraps both as a kornia
``IntensityAugmentationBase2D`` with the presets ``light``, ``medium``,
``heavy`` and ``fog_only``.
"""

from segrobust.rain.augmentation import RandomRainStreaks
from segrobust.rain.functional import (
    PRESET_REFERENCE_HEIGHT,
    RAIN_PARAM_KEYS,
    RainParams,
    clamp_rain_params,
    ground_plane_depth,
    line_kernel,
    rain_params_for_optimization,
    render_rain,
    resolve_rain_ranges,
    sample_rain_params,
    scale_rain_ranges,
    streak_layer,
)
from segrobust.rain.presets import (
    CONTINUOUS_RAIN_PARAMS,
    RAIN_PARAM_BOUNDS,
    RAIN_PRESETS,
    RainRange,
)

__all__ = [
    "CONTINUOUS_RAIN_PARAMS",
    "PRESET_REFERENCE_HEIGHT",
    "RAIN_PARAM_BOUNDS",
    "RAIN_PARAM_KEYS",
    "RAIN_PRESETS",
    "RainParams",
    "RainRange",
    "RandomRainStreaks",
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
