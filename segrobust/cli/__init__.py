"""The ``segrobust`` command: ``segrobust benchmark``, ``segrobust train`` and ``segrobust list``.

A thin layer over [`segrobust.benchmark.run_benchmark`][segrobust.benchmark.run_benchmark] and the training
recipes. Bad arguments (unknown attack, ε outside (0, 1], missing data root,
unreadable checkpoint...) end with one ``segrobust ...: error: ...`` line on
stderr and exit code 2, never a traceback. Under ``torchrun`` (``torchrun
--nproc_per_node N -m segrobust benchmark ...``) the work is sharded over the
processes and rank 0 prints and writes.

One job per module: `arguments` (flag value types), `flags` (adding a flag
with its default; the groups the commands share), `parser` (the sub-commands),
`config_files` (``--config``: safe reading, what a file may not do, what a run
records), `options` (defaults < presets < file < flags), `loading` (device,
data, model), one module per command with its own flags and its run
(`benchmark`, `train`, `listing`), and `errors` (how a command fails).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Callable, Optional

from segrobust.cli import benchmark, listing, train
from segrobust.cli.errors import UsageError, is_expected, one_line
from segrobust.cli.loading import say
from segrobust.cli.options import Invocation, resolve
from segrobust.cli.parser import build_parser

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

#: What each sub-command runs: ``run(invocation) -> exit code``.
COMMANDS: dict[str, Callable[[Invocation], int]] = {
    "benchmark": benchmark.run,
    "train": train.run,
    "list": listing.run,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``segrobust`` console script; returns the exit code."""
    # Before torch loads OpenMP: idle threads sleep instead of spinning. On a CPU shared with other
    # processes, spinning OpenMP threads made a 2-thread run 8x slower than a 1-thread one (measured);
    # on an idle machine the difference is small. Set OMP_WAIT_POLICY yourself to override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    namespace = parser.parse_args(argv)  # the one parse: bad flags exit here with code 2
    prog = f"segrobust {namespace.command}"
    try:
        invocation = resolve(parser, namespace)
        return COMMANDS[invocation.command](invocation)
    except UsageError as error:
        say(f"{prog}: error: {error}")
        return 2
    except KeyboardInterrupt:
        where = getattr(namespace, "out", None)
        say(f"{prog}: interrupted; finished work is kept in {where}/: rerun the same command with --resume")
        return 130
    except Exception as error:
        if os.environ.get("SEGROBUST_DEBUG", "") not in ("", "0"):
            raise
        if is_expected(error):
            say(f"{prog}: error: {one_line(error)}")
            return 2
        say(
            f"{prog}: internal error: {one_line(error)} (a bug in segrobust: rerun with SEGROBUST_DEBUG=1 "
            "for the traceback and report it)"
        )
        return 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
