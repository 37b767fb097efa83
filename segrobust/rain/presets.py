"""Physical bounds of the rain parameters and the sampling ranges of the named presets.

Units: ``angle`` in degrees from the vertical (positive: streaks fall towards
the right), ``length`` and ``width`` in pixels, ``fog_density`` (β) and
``attenuation`` (α) per depth unit (metres for the ground-plane prior),
``atmospheric_light`` (A0) and ``density`` as fractions, ``intensity``
dimensionless. The presets are tuned for images of about 360×480 pixels
(CamVid); streak lengths are in pixels, so scale ``length`` with the image size.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Tuple, Union

__all__ = [
    "CONTINUOUS_RAIN_PARAMS",
    "PRESET_REFERENCE_HEIGHT",
    "RAIN_PARAM_BOUNDS",
    "RAIN_PRESETS",
    "RainRange",
]

#: Image height the presets are tuned for (CamVid, 360×480): streak lengths are in pixels at this height.
PRESET_REFERENCE_HEIGHT = 360

#: A sampling range: ``(low, high)``, or one number for a fixed value.
RainRange = Union[float, Tuple[float, float]]

#: Names of the continuous, differentiable rain parameters (``noise`` is the
#: drawn random field and is not in this list).
CONTINUOUS_RAIN_PARAMS: Tuple[str, ...] = (
    "intensity",
    "density",
    "angle",
    "length",
    "width",
    "fog_density",
    "attenuation",
    "atmospheric_light",
)

#: Physically plausible range of every parameter, used by
#: [`segrobust.rain.functional.clamp_rain_params`][segrobust.rain.functional.clamp_rain_params] to project an attacked
#: parameter set back, and to reject constructor ranges that leave it.
RAIN_PARAM_BOUNDS: Mapping[str, Tuple[float, float]] = MappingProxyType(
    {
        "intensity": (0.0, 4.0),
        "density": (0.0, 0.05),
        "angle": (-60.0, 60.0),
        "length": (1.0, 100.0),
        "width": (0.3, 3.0),
        # Koschmieder: visibility ≈ 3.9 / β, so 0.1 per metre is fog with about 40 m visibility.
        "fog_density": (0.0, 0.1),
        "attenuation": (0.0, 0.1),
        "atmospheric_light": (0.0, 1.0),
        "noise": (0.0, 1.0),
    }
)

# Each preset maps every continuous parameter to a range, plus ``num_layers``
# (streak layers, each with its own angle, length and noise field) and
# ``angle_spread`` (degrees by which a layer's angle may differ from the image's).
RAIN_PRESETS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        # Rain100L-like: sparse, thin, short, one direction, almost no veil.
        "light": MappingProxyType(
            {
                "intensity": (0.8, 1.2),
                "density": (0.0015, 0.0025),
                "angle": (-20.0, 20.0),
                "length": (12.0, 22.0),
                "width": (0.4, 0.55),
                "fog_density": (0.0, 0.002),
                "attenuation": (0.002, 0.006),
                "atmospheric_light": (0.8, 0.9),
                "num_layers": 1,
                "angle_spread": 0.0,
            }
        ),
        "medium": MappingProxyType(
            {
                "intensity": (0.9, 1.3),
                "density": (0.0015, 0.0025),
                "angle": (-25.0, 25.0),
                "length": (20.0, 32.0),
                "width": (0.5, 0.7),
                "fog_density": (0.003, 0.008),
                "attenuation": (0.004, 0.01),
                "atmospheric_light": (0.75, 0.9),
                "num_layers": 2,
                "angle_spread": 5.0,
            }
        ),
        # Rain100H-like: dense, longer and wider streaks in a few directions, with a veil.
        "heavy": MappingProxyType(
            {
                "intensity": (1.0, 1.4),
                "density": (0.0012, 0.002),
                "angle": (-30.0, 30.0),
                "length": (28.0, 48.0),
                "width": (0.6, 0.9),
                "fog_density": (0.006, 0.015),
                "attenuation": (0.006, 0.012),
                "atmospheric_light": (0.75, 0.9),
                "num_layers": 3,
                "angle_spread": 12.0,
            }
        ),
        # RainCityscapes-like veil only: no streaks, fog growing with depth.
        "fog_only": MappingProxyType(
            {
                "intensity": 0.0,
                "density": 0.0,
                "angle": 0.0,
                "length": 1.0,
                "width": 0.5,
                "fog_density": (0.01, 0.03),
                "attenuation": 0.0,
                "atmospheric_light": (0.75, 0.95),
                "num_layers": 1,
                "angle_spread": 0.0,
            }
        ),
    }
)
