"""Training: one loop for standard, adversarial (PGD-AT, EroSeg-AT, NAT) and preprocessor (PEARL) training.

:class:`AdversarialTrainer` takes any ``attack(images, masks) -> adv`` callable
(or a factory building one from the model) as the inner maximiser, resumes
exactly from atomic checkpoints, and runs unchanged under ``torchrun`` with
DistributedDataParallel. The recipes in :mod:`segrobust.training.recipes` are
thin calls of it.
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
from segrobust.training.recipes import train_eroseg_at, train_pgd_at, train_standard
from segrobust.training.trainer import AdversarialTrainer, Callback, evaluate, poly_lr

__all__ = [
    "AdversarialTrainer",
    "Callback",
    "ShardSampler",
    "as_batch",
    "evaluate",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "masked_cross_entropy",
    "poly_lr",
    "segmentation_loss",
    "split_batch_output",
    "train_eroseg_at",
    "train_pgd_at",
    "train_standard",
]
