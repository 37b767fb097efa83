"""Procedural street scenes: the library's built-in default data.

* :mod:`.scene`: street worlds (geometry, materials, lighting, camera) drawn from a seed;
* :mod:`.render`: the vectorised ray caster (labels, metric depth, image);
* :mod:`.shading`: world-space textures, sun and sky light;
* :mod:`.datasets`: :class:`SyntheticStreets`, :class:`SyntheticStreetVideo`,
  :class:`SyntheticStreetTriplets`.
"""

from segrobust.datasets.synthetic.datasets import (
    SyntheticStreets,
    SyntheticStreetTriplets,
    SyntheticStreetVideo,
)
from segrobust.datasets.synthetic.render import render_street
from segrobust.datasets.synthetic.scene import StreetScene, camera_to_world, sample_street_scene

__all__ = [
    "StreetScene",
    "SyntheticStreetTriplets",
    "SyntheticStreetVideo",
    "SyntheticStreets",
    "camera_to_world",
    "render_street",
    "sample_street_scene",
]
