"""The ``segrobust`` argument parser: the sub-commands, each with the flags its module adds."""

from __future__ import annotations

import argparse

from segrobust.cli import benchmark, train
from segrobust.cli.flags import Parser

__all__ = ["build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``segrobust`` argument parser (sub-commands ``benchmark``, ``train`` and ``list``).

    Each sub-command parser carries ``option_defaults``, the default of every flag.
    """
    from segrobust import __version__

    parser = Parser(
        prog="segrobust", description="Robustness of semantic segmentation to rain and adversarial attacks."
    )
    parser.add_argument("--version", action="version", version=f"segrobust {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=Parser, metavar="{benchmark,train,list}")
    commands.required = True
    benchmark.add_flags(commands)
    train.add_flags(commands)
    listing = commands.add_parser(
        "list",
        help="list the attacks, pixel losses, presets, recipes, data sets and defences",
        description="List what segrobust can run: every registered attack, pixel loss, APGD radius schedule, rain preset, "
        "training recipe, data set and defence, one line each.",
    )
    listing.option_defaults = {}
    return parser
