"""From the parsed command line to every option of the run, in one pass: defaults < presets < config file < flags.

The command line is parsed once (argparse fills in no defaults, so the
namespace holds exactly the flags given). The options of the run are then,
for every flag: the flag if given, else the ``--config`` file's value, else
the preset's (``--fast``, or the built-in default run), else its default from
`segrobust.benchmark.defaults`. Nothing given explicitly is ever replaced.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from segrobust.benchmark.defaults import BUILTIN_RUN, FAST_BENCHMARK_RUN, FAST_TRAIN_RUN
from segrobust.cli.config_files import check_trust, file_options
from segrobust.cli.flags import command_parser

__all__ = ["Invocation", "resolve"]


@dataclass(frozen=True)
class Invocation:
    """One run of a sub-command: every option resolved, and which ones the command line gave."""

    command: str
    options: argparse.Namespace
    given: frozenset[str] = field(default_factory=frozenset)
    config: Optional[str] = None

    def is_given(self, dest: str) -> bool:
        """Whether the command line itself set ``dest`` (not a file, a preset or a default)."""
        return dest in self.given


def _presets(command: str, layered: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults ``--fast`` and the built-in default run put over the plain ones (``--fast`` last)."""
    presets: dict[str, Any] = {}
    if command == "benchmark" and layered.get("model") is None and layered.get("dataset") == "synthetic":
        presets.update(BUILTIN_RUN.given())
    if layered.get("fast"):
        fast = (FAST_BENCHMARK_RUN if command == "benchmark" else FAST_TRAIN_RUN).given()
        if command == "train":
            fast.pop("steps", None)  # only for a recipe with an inner attack: the train command applies it
        presets.update(fast)
    if "eps" in presets and command == "benchmark":
        presets["eps"] = list(presets["eps"])
    return presets


def resolve(parser: argparse.ArgumentParser, namespace: argparse.Namespace) -> Invocation:
    """Every option of the parsed ``namespace`` (see the module docstring); a bad config file is a UsageError."""
    command = namespace.command
    given = {key: value for key, value in vars(namespace).items() if key != "command"}
    sub = command_parser(parser, command)
    from_file: dict[str, Any] = {}
    if given.get("config"):
        from_file = file_options(sub, given["config"])
        check_trust(from_file, given, given["config"])
    defaults = dict(sub.option_defaults)
    presets = _presets(command, {**defaults, **from_file, **given})
    options = {**defaults, **presets, **from_file, **given}
    return Invocation(command, argparse.Namespace(**options), frozenset(given), given.get("config"))
