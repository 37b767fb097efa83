"""The error every model loader raises (its own module, so the loaders of ``segrobust.models`` share it)."""

from __future__ import annotations

__all__ = ["ModelLoadError"]


class ModelLoadError(ValueError):
    """A model spec or checkpoint that cannot be used; the message says why and what to do."""

    # tracebacks and doctests name the public path users import it from
    __module__ = "segrobust.models"
