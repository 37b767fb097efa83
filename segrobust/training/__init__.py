"""Training: one loop for standard, adversarial (PGD-AT, EroSeg-AT, NAT) and preprocessor (PEARL) training.

[`AdversarialTrainer`][segrobust.training.AdversarialTrainer] takes any ``attack(images, masks) -> adv`` callable
(or a factory building one from the model) as the inner maximiser, resumes
exactly from atomic checkpoints, and runs unchanged under ``torchrun`` with
DistributedDataParallel. The recipes (``RECIPES``: standard, pgd_at, eroseg_at,
nat; the defence recipes pearl and depth are ``segrobust.defenses.RECIPES``)
share one protocol, ``RECIPES[name](model, data, config) -> TrainResult``,
with a typed config per recipe; see `segrobust.training.recipes`.
"""

from segrobust.distributed import (
    ShardSampler,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
)
from segrobust.training.functional import (
    as_batch,
    masked_cross_entropy,
    segmentation_loss,
    split_batch_output,
)
from segrobust.training.recipes import (
    RECIPES,
    Artifact,
    DepthConfig,
    EroSegATConfig,
    NATConfig,
    PEARLConfig,
    PGDATConfig,
    Recipe,
    StandardConfig,
    TrainConfig,
    TrainResult,
    get_recipe,
)
from segrobust.training.tensorboard import TensorBoardLogger
from segrobust.training.trainer import AdversarialTrainer, Callback, evaluate, poly_lr

__all__ = [
    "RECIPES",
    "AdversarialTrainer",
    "Artifact",
    "Callback",
    "DepthConfig",
    "EroSegATConfig",
    "NATConfig",
    "PEARLConfig",
    "PGDATConfig",
    "Recipe",
    "ShardSampler",
    "StandardConfig",
    "TensorBoardLogger",
    "TrainConfig",
    "TrainResult",
    "as_batch",
    "evaluate",
    "get_rank",
    "get_recipe",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "masked_cross_entropy",
    "poly_lr",
    "segmentation_loss",
    "split_batch_output",
]
