"""torch.distributed plumbing: process group start-up, sharded loaders and small collectives.

Everything here is a no-op (world size 1, rank 0) when the process group is
not initialised, so the same code runs with and without ``torchrun``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
)

__all__ = ["ShardSampler", "get_rank", "get_world_size", "init_distributed", "is_main_process", "reduce_over_ranks"]

_log = logging.getLogger("segrobust.training")


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size() if _active() else 1


def get_rank() -> int:
    """This process's rank in the default group (0 without ``torch.distributed``)."""
    return dist.get_rank() if _active() else 0


def is_main_process() -> bool:
    """True on rank 0, the one that writes checkpoints, logs and progress bars."""
    return get_rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(backend: Optional[str] = None) -> tuple[int, int]:
    """Start the default process group when launched by ``torchrun``; return ``(world_size, rank)``.

    Does nothing when the group is already initialised or when ``WORLD_SIZE``
    is unset or 1. The backend defaults to ``nccl`` when CUDA is available
    (after ``torch.cuda.set_device(LOCAL_RANK)``) and ``gloo`` otherwise.

    Examples:
        >>> init_distributed()  # a plain python process
        (1, 0)
    """
    if not dist.is_available():
        return 1, 0
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend=backend)
        _log.info("initialised torch.distributed: backend=%s world_size=%d", backend, dist.get_world_size())
    return get_world_size(), get_rank()


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` in order, without the padding ``DistributedSampler`` adds.

    Used for evaluation: every sample is seen exactly once over all ranks, so
    a confusion matrix summed over ranks equals the single-process one.

    Examples:
        >>> list(ShardSampler(range(5), num_replicas=2, rank=1))
        [1, 3]
    """

    def __init__(self, data_source: Any, num_replicas: Optional[int] = None, rank: Optional[int] = None):
        self.num_samples_total = len(data_source)
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples_total, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples_total, self.num_replicas))


def _rebuild_loader(loader: DataLoader, sampler: Sampler) -> DataLoader:
    """The same loader with another sampler (batch size, workers, collate... kept)."""
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(loader.dataset, **kwargs)


def _rebuildable(loader: DataLoader) -> bool:
    return type(loader.batch_sampler) is BatchSampler and hasattr(loader.dataset, "__len__")


def prepare_train_loader(loader: Any, batch_size: Optional[int], seed: int) -> Any:
    """A loader that shards the training set over ranks (``DistributedSampler``) when distributed.

    A map-style ``Dataset`` is wrapped in a shuffling ``DataLoader`` of
    ``batch_size``. A ``DataLoader`` whose sampler is not already distributed
    is rebuilt with a ``DistributedSampler`` (shuffling if it shuffled, seeded
    with ``seed``). Any other iterable is used as is.
    """
    replicas, this_rank = get_world_size(), get_rank()
    if isinstance(loader, Dataset) and not isinstance(loader, DataLoader) and hasattr(loader, "__getitem__"):
        if batch_size is None:
            raise ValueError("train_loader is a Dataset: pass batch_size=... so the trainer can build its DataLoader")
        sampler = (
            DistributedSampler(loader, replicas, this_rank, shuffle=True, seed=seed)
            if replicas > 1
            else RandomSampler(loader)
        )
        return DataLoader(loader, batch_size=batch_size, sampler=sampler)
    if replicas > 1 and isinstance(loader, DataLoader) and not _has_distributed_sampler(loader):
        if _rebuildable(loader):
            shuffle = isinstance(loader.sampler, RandomSampler)
            if this_rank == 0:
                _log.info(
                    "sharding train_loader over %d ranks with a DistributedSampler (shuffle=%s)", replicas, shuffle
                )
            return _rebuild_loader(
                loader, DistributedSampler(loader.dataset, replicas, this_rank, shuffle=shuffle, seed=seed)
            )
        warnings.warn(
            "train_loader has a custom batch sampler or an iterable dataset: it is used as is on every rank; "
            "make it shard the data itself under torch.distributed",
            stacklevel=3,
        )
    return loader


def prepare_eval_loader(loader: Any, batch_size: Optional[int]) -> Any:
    """A loader that gives each rank a disjoint, unpadded shard of the evaluation set."""
    if loader is None:
        return None
    replicas = get_world_size()
    if isinstance(loader, Dataset) and not isinstance(loader, DataLoader) and hasattr(loader, "__getitem__"):
        if batch_size is None:
            raise ValueError("eval_loader is a Dataset: pass batch_size=... so the trainer can build its DataLoader")
        return DataLoader(loader, batch_size=batch_size, sampler=ShardSampler(loader) if replicas > 1 else None)
    if replicas > 1 and isinstance(loader, DataLoader) and not isinstance(loader.sampler, ShardSampler):
        if _rebuildable(loader):
            return _rebuild_loader(loader, ShardSampler(loader.dataset))
        warnings.warn(
            "eval_loader cannot be sharded (custom batch sampler): every rank evaluates it whole", stacklevel=3
        )
    return loader


def _has_distributed_sampler(loader: DataLoader) -> bool:
    samplers = (loader.sampler, getattr(loader.batch_sampler, "sampler", None))
    return any(isinstance(s, (DistributedSampler, ShardSampler)) for s in samplers)


def set_loader_epoch(loader: Any, epoch: int, generator_seed: int) -> None:
    """``set_epoch`` on distributed samplers and reseed private generators, so each epoch's order is replayable."""
    samplers = [getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    generators = [getattr(loader, "generator", None)] + [getattr(s, "generator", None) for s in samplers]
    for sampler in {id(s): s for s in samplers if s is not None}.values():
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
    for offset, generator in enumerate({id(g): g for g in generators if isinstance(g, torch.Generator)}.values()):
        generator.manual_seed(generator_seed + offset)


def all_gather_object(obj: Any) -> list[Any]:
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any) -> Any:
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics...) to every rank, one collective per dtype."""
    if not _active():
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buffer in module.buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for buffers in by_dtype.values():
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        for buffer, chunk in zip(buffers, flat.split([b.numel() for b in buffers])):
            buffer.data.copy_(chunk.view_as(buffer))


def barrier() -> None:
    if _active():
        dist.barrier()


def reduce_over_ranks(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` summed (``op="sum"``) or maximised (``op="max"``) over ranks, as a new tensor on its device.

    The collective runs on the backend's device (CUDA for NCCL, CPU otherwise),
    so CPU tensors can be reduced under NCCL; ``tensor`` itself is not changed.
    Without a process group it is returned as is.

    Examples:
        >>> reduce_over_ranks(torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    if not _active():
        return tensor
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    buffer = tensor.to(device, copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return buffer.to(tensor.device)
