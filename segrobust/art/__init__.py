"""IBM ART interoperability: a segmentation estimator, ART versions of segrobust's attacks,
and adapters that let ART's PGD and Madry adversarial training run on masks.

- [`PyTorchSegmenter`][segrobust.art.PyTorchSegmenter]: an ART ``PyTorchEstimator`` (``LossGradientsMixin``) for
  any PyTorch segmentation model; ``predict`` gives logits ``(N, K, H, W)``,
  ``loss_gradient`` / ``fit`` take masks ``(N, H, W)`` with ``ignore_index``.
- [`NAA`][segrobust.art.NAA], [`AMA`][segrobust.art.AMA], [`SegPGD`][segrobust.art.SegPGD],
  [`CosPGD`][segrobust.art.CosPGD], [`EroSeg`][segrobust.art.EroSeg], `APGD`: ART
  ``EvasionAttack`` classes running the segrobust torch attacks of the same name
  (one implementation); [`make_art_attack`][segrobust.art.make_art_attack] adds one for a new torch attack.
- [`SegmentationPGD`][segrobust.art.SegmentationPGD] (numpy / PyTorch) and
  [`SegmentationAdversarialTrainerMadryPGD`][segrobust.art.SegmentationAdversarialTrainerMadryPGD]: ART's PGD and Madry training with
  masks, random init and restarts.
- `PEARLPreprocessor`: PEARL's derainer as a differentiable ART preprocessing defence.
"""

from segrobust.art.attacks import (
    AMA,
    APGD,
    ART_ATTACKS,
    NAA,
    ArtSegAttack,
    CosPGD,
    EroSeg,
    RainAttack,
    SegPGD,
    make_art_attack,
)
from segrobust.art.estimator import EstimatorModule, PyTorchSegmenter
from segrobust.art.pgd import (
    SegmentationAdversarialTrainerMadryPGD,
    SegmentationPGD,
    SegmentationPGDNumpy,
    SegmentationPGDPyTorch,
)
from segrobust.art.preprocessor import PEARLPreprocessor

__all__ = [
    "AMA",
    "APGD",
    "ART_ATTACKS",
    "NAA",
    "ArtSegAttack",
    "CosPGD",
    "EroSeg",
    "EstimatorModule",
    "PEARLPreprocessor",
    "PyTorchSegmenter",
    "RainAttack",
    "SegPGD",
    "SegmentationAdversarialTrainerMadryPGD",
    "SegmentationPGD",
    "SegmentationPGDNumpy",
    "SegmentationPGDPyTorch",
    "make_art_attack",
]
