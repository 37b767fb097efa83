"""A trainer callback writing the training records to TensorBoard (``torch.utils.tensorboard``, when installed)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional, Union

from segrobust.training.trainer import AdversarialTrainer, Callback

__all__ = ["TensorBoardLogger"]

_COUNTERS = ("epoch", "step", "global_step")


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise ImportError(
            "TensorBoardLogger needs the tensorboard package, which is not installed: pip install tensorboard"
        ) from error
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Write every epoch record (loss, loss terms, train/eval mIoU, lr, time) and, optionally, step records.

    Scalars go under ``epoch/<name>`` (x axis: epochs done) and
    ``step/<name>`` (x axis: optimizer steps). Only rank 0 writes. The
    ``tensorboard`` package is needed (``pip install tensorboard``); without it
    the constructor raises an ``ImportError`` saying so.

    Args:
        log_dir: folder of the event files (``tensorboard --logdir log_dir``).
        log_every: also write step records every this many optimizer steps; ``None`` for epochs only.

    Examples:
        >>> trainer = AdversarialTrainer(model, optimizer, loader,
        ...                              callbacks=[TensorBoardLogger("runs/tb")])  # doctest: +SKIP
    """

    def __init__(self, log_dir: Union[str, os.PathLike], *, log_every: Optional[int] = None):
        if log_every is not None and (isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1):
            raise ValueError(f"log_every must be a positive int or None, got {log_every!r}")
        self._writer_class = _summary_writer_class()
        self.log_dir = Path(log_dir)
        self.log_every = log_every
        self.writer: Any = None

    def on_fit_start(self, trainer: AdversarialTrainer) -> None:
        if trainer.is_main and self.writer is None:
            self.writer = self._writer_class(log_dir=str(self.log_dir))

    def on_step_end(self, trainer: AdversarialTrainer, info: dict[str, Any]) -> None:
        if self.writer is not None and self.log_every and info["global_step"] % self.log_every == 0:
            self._write("step", info, info["global_step"])

    def on_epoch_end(self, trainer: AdversarialTrainer, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self._write("epoch", record, record["epoch"] + 1)
            self.writer.flush()

    def on_fit_end(self, trainer: AdversarialTrainer, history: list[dict[str, Any]]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _write(self, prefix: str, record: dict[str, Any], step: int) -> None:
        for name, value in record.items():
            if name in _COUNTERS or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                continue
            self.writer.add_scalar(f"{prefix}/{name}", float(value), step)
