"""PEARL training on the shared trainer: the ``pearl`` recipe (PEARL and PEARL+AMA) and its defence file.

- The ``pearl`` recipe (``segrobust.defenses.RECIPES["pearl"]``, config
  [PEARLConfig][segrobust.training.PEARLConfig]) freezes the segmenter ``f`` and trains a derainer ``D`` in
  front of it on NAA examples crafted against ``f ∘ D`` from rainy inputs,
  with loss ``λ_rec·‖D(x̃) − t‖₁ + λ_seg·CE(f(D(x̃)), y)``. The target ``t`` is
  the clean image, or with ``ama=True`` its AMA image (computed against ``f``
  before training and cached on disk).
- NAT, the paper's baseline, trains the segmenter itself on rainy images
  perturbed by NAA: the ``nat`` recipe of ``segrobust.training.RECIPES``.

Rain comes from [`RandomRainStreaks`][segrobust.rain.augmentation.RandomRainStreaks] on the fly, as the
trainer's ``input_transform``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from segrobust.defenses.pearl import PEARL
from segrobust.fileio import atomic_torch_save
from segrobust.training import AdversarialTrainer, as_batch, masked_cross_entropy
from segrobust.training.recipes.base import (
    Artifact,
    TrainResult,
    dataset_of,
    rain_transform,
    scheduler_for,
    trainer_options,
)
from segrobust.training.recipes.config import PEARLConfig
from segrobust.utils import item_dict, model_mode_preserved, segmentation_logits

__all__ = [
    "AMATargetDataset",
    "compute_ama_targets",
    "fit_pearl",
    "load_pearl_defense",
    "pearl_recipe",
    "save_pearl_defense",
]

#: ``format`` tag of the defence files [save_pearl_defense][segrobust.defenses.pearl_training.save_pearl_defense] writes.
PEARL_CHECKPOINT_FORMAT = "segrobust.pearl.v1"
#: The file name of the derainer the ``pearl`` recipe writes beside the model.
PEARL_DEFENSE_FILE = "defense.pt"


class _PEARLTrainingView(nn.Module):
    """``f ∘ D`` returning ``{"out": logits, "derained": D(x)}``; the frozen segmenter stays in eval mode."""

    def __init__(self, pearl: PEARL):
        super().__init__()
        self.pearl = pearl

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        derained = self.pearl.derainer(images)
        return {"out": segmentation_logits(self.pearl.segmenter(derained)), "derained": derained}

    def train(self, mode: bool = True) -> _PEARLTrainingView:
        super().train(mode)
        self.pearl.segmenter.eval()  # frozen: its BatchNorm statistics must not move
        return self


def _fingerprint(dataset: Dataset, segmenter: nn.Module, settings: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for name, tensor in segmenter.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(str(len(dataset)).encode())
    for index in range(len(dataset)):
        item = as_batch(_as_pair(dataset[index]))
        digest.update(item["image"].contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def _as_pair(item: Any) -> Any:
    entries = item_dict(item)
    return {"image": entries["image"][None], "mask": entries["mask"][None]}


def compute_ama_targets(
    segmenter: nn.Module,
    dataset: Dataset,
    *,
    eps: float = 4 / 255,
    alpha: Optional[float] = None,
    steps: int = 10,
    batch_size: int = 8,
    ignore_index: int = 255,
    cache_dir: Union[str, os.PathLike, None] = None,
    device: Union[str, torch.device, None] = None,
) -> torch.Tensor:
    """AMA images ``x + δ_AMA`` of every sample of ``dataset`` against ``segmenter``, ``(N, 3, H, W)``.

    Computed in dataset order without random start, so they are reproducible.
    With ``cache_dir`` they are stored there (atomically, float16) under a key
    made of the dataset's images, the segmenter's weights and the AMA settings,
    and reused by later calls, e.g. a resumed run. The dataset must be
    deterministic (no random augmentation) and its images share one size.

    Examples:
        >>> targets = compute_ama_targets(segmenter, train_set, eps=4/255, cache_dir="runs/cache")  # doctest: +SKIP
    """
    from segrobust.attacks import AMA

    settings = {"eps": eps, "alpha": alpha, "steps": steps, "ignore_index": ignore_index, "version": 1}
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"ama_targets_{_fingerprint(dataset, segmenter, settings)}.pt"
        if path.exists():
            return torch.load(path, weights_only=True).float()
    device = torch.device(device) if device is not None else next(segmenter.parameters()).device
    attack = AMA(segmenter, eps=eps, alpha=alpha, steps=steps, random_start=False, ignore_index=ignore_index)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    chunks = []
    with model_mode_preserved(segmenter):
        segmenter.eval()
        for raw in loader:
            batch = as_batch(raw, device)
            chunks.append(attack(batch["image"], batch["mask"]).cpu())
    targets = torch.cat(chunks)
    if path is not None:
        atomic_torch_save(targets.half(), path)
        targets = targets.half().float()  # identical to what a cache hit returns
    return targets


class AMATargetDataset(Dataset):
    """Adds ``"target"`` (the reconstruction target of sample ``i``) to each item of a dataset.

    Examples:
        >>> import torch
        >>> base = [{"image": torch.zeros(3, 2, 2), "mask": torch.zeros(2, 2, dtype=torch.long)}]
        >>> AMATargetDataset(base, torch.ones(1, 3, 2, 2))[0]["target"].shape
        torch.Size([3, 2, 2])
    """

    def __init__(self, dataset: Any, targets: torch.Tensor):
        if len(dataset) != targets.shape[0]:
            raise ValueError(f"targets has {targets.shape[0]} images but the dataset has {len(dataset)} samples")
        self.dataset = dataset
        self.targets = targets

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**item_dict(self.dataset[index]), "target": self.targets[index]}


class _TransformedDataset(Dataset):
    def __init__(self, dataset: Any, transform: Callable[[dict[str, Any]], dict[str, Any]]):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(item_dict(self.dataset[index]))


def _pearl_loss(
    outputs: Mapping[str, torch.Tensor],
    batch: Mapping[str, Any],
    *,
    lambda_rec: float,
    lambda_seg: float,
    ignore_index: int,
) -> dict[str, torch.Tensor]:
    target = batch["target"] if "target" in batch else batch["image"]
    reconstruction = (outputs["derained"] - target.to(outputs["derained"].dtype)).abs().mean()
    segmentation = masked_cross_entropy(outputs["out"], batch["mask"], ignore_index)
    return {
        "loss": lambda_rec * reconstruction + lambda_seg * segmentation,
        "reconstruction": reconstruction.detach(),
        "segmentation": segmentation.detach(),
    }


def fit_pearl(
    segmenter: nn.Module, derainer: nn.Module, train_data: Any, config: PEARLConfig
) -> tuple[PEARL, list[dict[str, Any]]]:
    """Train ``derainer`` in front of the frozen ``segmenter`` as ``config`` says; returns ``(PEARL, history)``.

    The stages of the ``pearl`` recipe: freeze ``f``, attach AMA targets, build the trainer, fit,
    restore ``f``'s ``requires_grad`` flags.
    """
    pearl = PEARL(segmenter, derainer)
    flags = [p.requires_grad for p in segmenter.parameters()]
    try:
        for p in segmenter.parameters():
            p.requires_grad_(False)
        data = _pearl_training_data(segmenter, train_data, config)
        from segrobust.attacks import NAA

        step_size = 2.5 * config.eps / config.steps if config.alpha is None else config.alpha
        attack = functools.partial(
            NAA, eps=config.eps, alpha=step_size, steps=config.steps, ignore_index=config.ignore_index
        )
        loss_fn = functools.partial(
            _pearl_loss, lambda_rec=config.lambda_rec, lambda_seg=config.lambda_seg, ignore_index=config.ignore_index
        )
        optimizer = torch.optim.Adam(derainer.parameters(), lr=config.lr or 1e-3)
        trainer = AdversarialTrainer(
            _PEARLTrainingView(pearl),
            optimizer,
            data,
            **trainer_options(
                config,
                attack=attack,
                scheduler=scheduler_for(config.scheduler),
                loss_fn=loss_fn,
                input_transform=rain_transform(config.rain, config.rain_reference_height, train_data),
                batch_size=config.batch_size,
            ),
        )
        history = trainer.fit()
    finally:
        for p, flag in zip(segmenter.parameters(), flags):
            p.requires_grad_(flag)
    return pearl, history


def _pearl_training_data(segmenter: nn.Module, train_data: Any, config: PEARLConfig) -> Any:
    """``train_data`` with AMA targets attached (``config.ama``) and ``config.transform`` applied per item."""
    data = train_data
    map_style = (
        not isinstance(train_data, DataLoader) and hasattr(train_data, "__getitem__") and hasattr(train_data, "__len__")
    )
    if config.ama:
        if not map_style:
            raise TypeError("PEARL with ama=True needs a map-style dataset (indexable, with len) to cache AMA targets")
        targets = compute_ama_targets(
            segmenter,
            train_data,
            eps=config.ama_eps if config.ama_eps is not None else config.eps,
            steps=config.ama_steps,
            batch_size=config.batch_size,
            ignore_index=config.ignore_index,
            cache_dir=ama_cache_dir(config),
            device=config.device,
        )
        data = AMATargetDataset(train_data, targets)
    if config.transform is not None:
        if not map_style:
            raise TypeError("PEARL with transform=... needs a map-style dataset (indexable, with len), not a loader")
        if not callable(config.transform):
            raise TypeError(f"transform must be callable, got {type(config.transform).__name__}")
        data = _TransformedDataset(data, config.transform)
    return data


def pearl_recipe(model: nn.Module, data: Any, config: PEARLConfig) -> TrainResult:
    """PEARL (+AMA by default) with a fresh derainer in front of the frozen ``model`` (recipe ``pearl``).

    ``data`` is a map-style dataset (a ``DataLoader`` is read for its dataset).
    A derainer given by name is initialised from ``config.seed``.
    The result's model is ``PEARL(model, derainer)``; with a named derainer
    its artifact ``defense.pt`` is what ``segrobust benchmark --defense
    pearl:PATH`` loads.

    Examples:
        >>> from segrobust.defenses import RECIPES
        >>> config = RECIPES["pearl"].config(derainer="prenet", epochs=10)
        >>> result = RECIPES["pearl"](segmenter, train_set, config)  # doctest: +SKIP
    """
    from segrobust.defenses.derain import build_derainer

    if isinstance(config.derainer, str):
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed only, not on import order
            torch.manual_seed(config.seed)
            derainer = build_derainer(config.derainer)
    else:
        derainer = config.derainer
    dataset, _ = dataset_of(data)
    defended, history = fit_pearl(model, derainer, dataset, config)
    artifacts = {}
    if isinstance(config.derainer, str):
        write = functools.partial(save_pearl_defense, derainer, name=config.derainer)
        artifacts[PEARL_DEFENSE_FILE] = Artifact(lambda path: write(path=path), "--defense pearl:{path}")
    return TrainResult(defended, history, artifacts)


def ama_cache_dir(config: PEARLConfig) -> Optional[Path]:
    """Where AMA targets are cached: ``config.cache_dir``, else ``checkpoint_dir/ama_cache``, else nowhere."""
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    return Path(config.checkpoint_dir) / "ama_cache" if config.checkpoint_dir is not None else None


def save_pearl_defense(
    derainer: nn.Module, path: Union[str, os.PathLike], name: str = "prenet", **derainer_kwargs: Any
) -> Path:
    """Write a derainer checkpoint that ``segrobust benchmark --defense pearl:PATH`` loads.

    Examples:
        >>> save_pearl_defense(pearl.derainer, "runs/pearl/defense.pt")  # doctest: +SKIP
    """
    path = Path(path)
    payload = {
        "format": PEARL_CHECKPOINT_FORMAT,
        "derainer": name,
        "derainer_kwargs": dict(derainer_kwargs),
        "state_dict": derainer.state_dict(),
    }
    return atomic_torch_save(payload, path)


def load_pearl_defense(model: nn.Module, path: Union[str, os.PathLike], **_: Any) -> PEARL:
    """``PEARL(model, derainer)`` with the derainer of a [`save_pearl_defense`][segrobust.defenses.pearl_training.save_pearl_defense] checkpoint.

    The file is data: its derainer name and architecture arguments must lie in
    ``segrobust.defenses.derain.DERAINER_FILE_LIMITS`` (a
    file asking for a billion stages is refused, not run).

    Examples:
        >>> defended = load_pearl_defense(segmenter, "runs/pearl/defense.pt")  # doctest: +SKIP
    """
    from segrobust.defenses.derain import build_derainer, check_derainer_arguments
    from segrobust.models import ModelLoadError, load_state_dict_file

    payload = load_state_dict_file(path)  # weights_only=True, one-line ModelLoadError for unreadable files
    if not isinstance(payload, Mapping) or payload.get("format") != PEARL_CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path} is not a PEARL defence checkpoint (write one with save_pearl_defense)")
    name, kwargs = payload.get("derainer"), payload.get("derainer_kwargs", {})
    try:
        check_derainer_arguments(name, kwargs, f"PEARL defence checkpoint {path}")
    except ValueError as error:
        raise ModelLoadError(str(error)) from None
    try:
        derainer = build_derainer(name, **kwargs)
        derainer.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"PEARL defence checkpoint {path} does not fit its derainer: {' '.join(str(error).split())[:300]}"
        ) from None
    device = next(model.parameters()).device
    return PEARL(model, derainer.to(device)).eval()
