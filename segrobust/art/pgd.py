"""Adapters that let ART's PGD and Madry adversarial training run on segmentation estimators.

What stock ART 1.20.1 does on a [`PyTorchSegmenter`][segrobust.art.PyTorchSegmenter], and why
these adapters exist:

- ``ProjectedGradientDescent`` picks its PyTorch implementation only for a
  ``PyTorchClassifier``; on any other estimator it runs the numpy one, which
  raises "Random initialisation is only supported for classification" for
  ``num_random_init ≥ 1``.
- ``ProjectedGradientDescentPyTorch`` requires ``ClassifierMixin``, and mixing
  that in makes ``check_and_transform_label_format`` reject masks. Its restarts
  (``num_random_init ≥ 2``) and success log use ``compute_success_array``,
  which assumes one label per sample: restarts then keep the wrong iterates
  and a targeted success rate is meaningless.
- ``AdversarialTrainerMadryPGD`` builds a stock ``ProjectedGradientDescent``
  with ``num_random_init=1`` (so it fails as above) and defaults to ``eps=8``,
  ``eps_step=2`` in 0–255 units.

The adapters keep ART's update rule (``_compute`` / ``_compute_pytorch``, random
init with ``np.random``, projection, perturbation ``mask=``) and replace only
the label handling and the restart selection: targets are masks ``(N, H, W)``
(argmax of the predictions when ``y=None``), and of several restarts each image
keeps the one with the lowest pixel accuracy on its masks (the highest on its
target masks when targeted).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent import (
    ProjectedGradientDescent,
)
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_numpy import (
    ProjectedGradientDescentNumpy,
)
from art.attacks.evasion.projected_gradient_descent.projected_gradient_descent_pytorch import (
    ProjectedGradientDescentPyTorch,
)
from art.config import ART_NUMPY_DTYPE
from art.defences.trainer.adversarial_trainer import AdversarialTrainer
from art.defences.trainer.adversarial_trainer_madry_pgd import AdversarialTrainerMadryPGD
from art.defences.trainer.trainer import Trainer
from art.estimators.estimator import BaseEstimator, LossGradientsMixin
from art.estimators.pytorch import PyTorchEstimator

from segrobust.art._convert import as_mask_tensor
from segrobust.metrics.functional import per_image_pixel_accuracy

__all__ = [
    "SegmentationAdversarialTrainerMadryPGD",
    "SegmentationPGD",
    "SegmentationPGDNumpy",
    "SegmentationPGDPyTorch",
]


def _segmentation_targets(attack: Any, x: np.ndarray, y: Optional[Any]) -> np.ndarray:
    """int64 masks ``(N, H, W)``: ``y`` converted, or the argmax of the predictions on ``x``."""
    estimator = attack.estimator
    if y is None:
        if attack.targeted:
            raise ValueError("a targeted attack needs the target masks y (N, H, W)")
        return np.asarray(estimator.predict(x, batch_size=attack.batch_size)).argmax(axis=1).astype(np.int64)
    shape_source = torch.empty((x.shape[0], 0, x.shape[2], x.shape[3]))
    masks = as_mask_tensor(
        y,
        shape_source,
        nb_classes=getattr(estimator, "nb_classes", None),
        ignore_index=getattr(estimator, "ignore_index", 255),
        name="y",
    )
    return masks.numpy()


def _restart_scores(attack: Any, adv: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-image score to minimise: pixel accuracy on the masks (negated when targeted)."""
    logits = torch.from_numpy(np.asarray(attack.estimator.predict(adv, batch_size=attack.batch_size)))
    accuracy = per_image_pixel_accuracy(logits, torch.from_numpy(masks), getattr(attack.estimator, "ignore_index", 255))
    scores = accuracy.numpy()
    return -scores if attack.targeted else scores


def _best_of_restarts(attack: Any, run_restart: Callable[[], np.ndarray], masks: np.ndarray) -> np.ndarray:
    """Runs ``max(1, num_random_init)`` restarts; each image keeps its best one (by `_restart_scores`)."""
    best = run_restart()
    best_scores: Optional[np.ndarray] = None
    for _ in range(max(1, attack.num_random_init) - 1):
        candidate = run_restart()
        if best_scores is None:
            best_scores = _restart_scores(attack, best, masks)
        scores = _restart_scores(attack, candidate, masks)
        better = scores < best_scores
        best = np.where(better[:, None, None, None], candidate, best)
        best_scores = np.where(better, scores, best_scores)
    return best


class _SegmentationTargets:
    """Mask targets and the shared start of ``generate`` for the PGD adapters."""

    def _set_targets(self, x: np.ndarray, y: Optional[np.ndarray], classifier_mixin: bool = True) -> np.ndarray:
        return _segmentation_targets(self, x, y)

    def _prepare(self, x: Any, y: Optional[Any], kwargs: dict) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Validated ``x`` (ART's float dtype), int64 target masks and ART's perturbation ``mask``."""
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"x must be a numpy array (N, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        mask = self._get_mask(x, **kwargs)
        self._check_compatibility_input_and_eps(x=x)
        self._random_eps()
        targets = self._set_targets(x, y)
        return x.astype(ART_NUMPY_DTYPE), targets, mask


class SegmentationPGDNumpy(_SegmentationTargets, ProjectedGradientDescentNumpy):
    """ART's numpy PGD for segmentation estimators, with random init and restarts.

    Same arguments as ``ProjectedGradientDescentNumpy``. ``y`` are masks
    ``(N, H, W)`` (true masks, or target masks with ``targeted=True``);
    ``y=None`` uses the argmax of the predictions. ``num_random_init ≥ 1``
    starts each restart from ART's random point in the ``eps`` ball (seed with
    ``np.random.seed``); with ``≥ 2`` each image keeps its best restart.

    Examples:
        >>> import numpy as np
        >>> from torch import nn
        >>> from segrobust.art import PyTorchSegmenter
        >>> est = PyTorchSegmenter(nn.Conv2d(3, 4, 1), input_shape=(3, 8, 8))
        >>> x = np.random.rand(2, 3, 8, 8).astype(np.float32)
        >>> pgd = SegmentationPGDNumpy(est, eps=0.03, eps_step=0.01, max_iter=2, num_random_init=2, verbose=False)
        >>> float(np.abs(pgd.generate(x) - x).max()) <= 0.03 + 1e-6
        True
    """

    _estimator_requirements = (BaseEstimator, LossGradientsMixin)

    def generate(self, x: np.ndarray, y: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        x, targets, mask = self._prepare(x, y, kwargs)

        def run_restart() -> np.ndarray:
            adv = x.copy()
            momentum = np.zeros(adv.shape)
            for i_max_iter in range(self.max_iter):
                self._i_max_iter = i_max_iter
                adv = self._compute(
                    adv,
                    x,
                    targets,
                    mask,
                    self.eps,
                    self.eps_step,
                    self._project,
                    self.num_random_init > 0 and i_max_iter == 0,
                    decay=self.decay,
                    momentum=momentum,
                )
            return adv

        best = _best_of_restarts(self, run_restart, targets)
        if self.summary_writer is not None:
            self.summary_writer.reset()
        return best


class SegmentationPGDPyTorch(_SegmentationTargets, ProjectedGradientDescentPyTorch):
    """ART's PyTorch PGD for segmentation estimators (no ``ClassifierMixin`` needed).

    Same arguments and update as ``ProjectedGradientDescentPyTorch``; labels
    are masks ``(N, H, W)`` kept as integers; restarts (``num_random_init ≥ 2``)
    and targeted mode work, each image keeping its best restart. Needs an
    estimator whose preprocessing is all ``PreprocessorPyTorch``.

    Examples:
        >>> import numpy as np
        >>> from torch import nn
        >>> from segrobust.art import PyTorchSegmenter
        >>> est = PyTorchSegmenter(nn.Conv2d(3, 4, 1), input_shape=(3, 8, 8))
        >>> x = np.random.rand(2, 3, 8, 8).astype(np.float32)
        >>> pgd = SegmentationPGDPyTorch(est, eps=0.03, eps_step=0.01, max_iter=2, num_random_init=1, verbose=False)
        >>> float(np.abs(pgd.generate(x) - x).max()) <= 0.03 + 1e-6
        True
    """

    _estimator_requirements = (BaseEstimator, LossGradientsMixin, PyTorchEstimator)

    def generate(self, x: np.ndarray, y: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        x, targets, mask = self._prepare(x, y, kwargs)
        per_sample_mask = mask is not None and mask.ndim == x.ndim
        adv_x = x.copy()
        for batch_id, start in enumerate(range(0, x.shape[0], self.batch_size)):
            self._batch_id = batch_id
            stop = start + self.batch_size
            batch = torch.from_numpy(x[start:stop])
            labels = torch.from_numpy(targets[start:stop])
            mask_batch = None
            if mask is not None:
                mask_batch = torch.from_numpy(
                    np.asarray(mask[start:stop] if per_sample_mask else mask, dtype=ART_NUMPY_DTYPE)
                )
            eps, eps_step = self.eps, self.eps_step
            if isinstance(eps, np.ndarray) and eps.ndim == x.ndim and eps.shape[0] == x.shape[0]:
                eps, eps_step = eps[start:stop], eps_step[start:stop]
            adv_x[start:stop] = _best_of_restarts(
                self,
                functools.partial(
                    self._generate_batch, x=batch, targets=labels, mask=mask_batch, eps=eps, eps_step=eps_step
                ),
                targets[start:stop],
            )
        if self.summary_writer is not None:
            self.summary_writer.reset()
        return adv_x


class SegmentationPGD(ProjectedGradientDescent):
    """``ProjectedGradientDescent`` for segmentation: picks [`SegmentationPGDPyTorch`][segrobust.art.SegmentationPGDPyTorch] or
    [`SegmentationPGDNumpy`][segrobust.art.SegmentationPGDNumpy].

    Same arguments as ART's ``ProjectedGradientDescent`` plus ``implementation``:
    ``"auto"`` (PyTorch when the estimator is a ``PyTorchEstimator`` whose
    preprocessing is all framework operations, numpy otherwise), ``"pytorch"`` or
    ``"numpy"``. ``eps`` and ``eps_step`` are in the units of ``clip_values``.

    Examples:
        >>> import numpy as np
        >>> from torch import nn
        >>> from segrobust.art import PyTorchSegmenter
        >>> est = PyTorchSegmenter(nn.Conv2d(3, 4, 1), input_shape=(3, 8, 8))
        >>> pgd = SegmentationPGD(est, eps=8 / 255, eps_step=2 / 255, max_iter=3, num_random_init=1, verbose=False)
        >>> type(pgd._attack).__name__
        'SegmentationPGDPyTorch'
    """

    def __init__(
        self,
        estimator: Any,
        norm: Union[int, float, str] = np.inf,
        eps: Union[int, float, np.ndarray] = 8 / 255,
        eps_step: Union[int, float, np.ndarray] = 2 / 255,
        decay: Optional[float] = None,
        max_iter: int = 10,
        targeted: bool = False,
        num_random_init: int = 0,
        batch_size: int = 32,
        random_eps: bool = False,
        summary_writer: Any = False,
        verbose: bool = True,
        implementation: str = "auto",
    ):
        if implementation not in ("auto", "pytorch", "numpy"):
            raise ValueError(f"implementation must be 'auto', 'pytorch' or 'numpy', got {implementation!r}")
        common = {
            "norm": norm,
            "eps": eps,
            "eps_step": eps_step,
            "decay": decay,
            "max_iter": max_iter,
            "targeted": targeted,
            "num_random_init": num_random_init,
            "batch_size": batch_size,
            "random_eps": random_eps,
            "verbose": verbose,
        }
        super().__init__(estimator, summary_writer=False, **common)
        framework = isinstance(estimator, PyTorchEstimator) and estimator.all_framework_preprocessing
        if implementation == "pytorch" and not framework:
            raise ValueError(
                "implementation='pytorch' needs a PyTorchEstimator whose preprocessing is all PreprocessorPyTorch"
            )
        use_pytorch = implementation == "pytorch" or (implementation == "auto" and framework)
        attack_cls = SegmentationPGDPyTorch if use_pytorch else SegmentationPGDNumpy
        self._attack = attack_cls(estimator=estimator, summary_writer=summary_writer, **common)


class SegmentationAdversarialTrainerMadryPGD(AdversarialTrainerMadryPGD):
    """Madry et al.'s PGD adversarial training on masks, with [`SegmentationPGD`][segrobust.art.SegmentationPGD].

    ART's ``AdversarialTrainerMadryPGD`` with the inner attack replaced (so
    random init works) and budgets in ``[0, 1]`` image units by default
    (``eps=8/255``, ``eps_step=2/255``; ART's defaults are 8 and 2 for 0–255
    images). ``fit(x, masks, nb_epochs=..., batch_size=...)`` trains the
    estimator's model in place on adversarial images only (``ratio=1``).

    Examples:
        >>> import numpy as np, torch
        >>> from torch import nn
        >>> from segrobust.art import PyTorchSegmenter
        >>> model = nn.Conv2d(3, 4, 1)
        >>> est = PyTorchSegmenter(model, input_shape=(3, 8, 8), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
        >>> trainer = SegmentationAdversarialTrainerMadryPGD(est, nb_epochs=1, batch_size=2, max_iter=2)
        >>> trainer.fit(np.random.rand(4, 3, 8, 8).astype(np.float32), np.zeros((4, 8, 8), np.int64))
    """

    def __init__(
        self,
        classifier: Any,
        nb_epochs: Optional[int] = 205,
        batch_size: Optional[int] = 128,
        eps: Union[int, float] = 8 / 255,
        eps_step: Union[int, float] = 2 / 255,
        max_iter: int = 7,
        num_random_init: int = 1,
        implementation: str = "auto",
    ) -> None:
        Trainer.__init__(self, classifier=classifier)
        self.batch_size = batch_size
        self.nb_epochs = nb_epochs
        self.attack = SegmentationPGD(
            classifier,
            eps=eps,
            eps_step=eps_step,
            max_iter=max_iter,
            num_random_init=num_random_init,
            verbose=False,
            implementation=implementation,
        )
        self.trainer = AdversarialTrainer(classifier, self.attack, ratio=1.0)
