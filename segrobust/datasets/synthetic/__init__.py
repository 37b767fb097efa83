"""Procedural street scenes: the library's built-in default data.

* [scene][segrobust.datasets.synthetic.scene]: street worlds (geometry, materials, lighting, camera) drawn from a seed;
* [render][segrobust.datasets.synthetic.render]: the vectorised ray caster (labels, metric depth, image);
* [shading][segrobust.datasets.synthetic.shading]: world-space textures, sun and sky light;
* [datasets][segrobust.datasets.synthetic.datasets]: [SyntheticStreets][segrobust.datasets.SyntheticStreets],
  [SyntheticStreetVideo][segrobust.datasets.SyntheticStreetVideo],
  [SyntheticStreetTriplets][segrobust.datasets.SyntheticStreetTriplets].
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
