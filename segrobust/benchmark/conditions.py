"""``Condition``: one evaluated condition of a benchmark run (clean, a rain preset, an attack at one ε, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from segrobust.benchmark import functional as BF

__all__ = ["Condition"]


@dataclass(frozen=True)
class Condition:
    """One evaluated condition: ``kind`` is ``clean``, ``rain``, ``corruption``, ``attack`` or ``positive``."""

    key: str
    name: str
    kind: str
    eps: Optional[float] = None
    eps_index: Optional[int] = None
    severity: Optional[int] = None

    @property
    def tag(self) -> str:
        """Unique, file-name-safe id, e.g. ``naa@eps8``, ``rain-heavy`` or ``corruption-fog@s3``."""
        base = self.key.replace(":", "-")
        if self.severity is not None:
            return f"{base}@s{self.severity}"
        return base if self.eps is None else f"{base}@{BF.eps_tag(self.eps)}"

    @property
    def label(self) -> str:
        if self.severity is not None:
            return f"{self.name} (severity {self.severity})"
        return self.name if self.eps is None else f"{self.name} ε={BF.format_eps(self.eps)}"
