"""The ``sluice`` command: one entry point, one module per subcommand.

Kept apart from ``router/`` so the HTTP data plane never imports the load
generator, the simulator or training code. Each module in ``COMMANDS`` exposes
``add_parser(subparsers)`` which registers its subcommand and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: tuple[str, ...] = (
    "sluice.commands.check_config",
    "sluice.commands.serve",
    "sluice.commands.sim",
    "sluice.commands.replay",
    "sluice.commands.bench",
    "sluice.commands.capacity",
    "sluice.commands.workloads",
    "sluice.commands.predict",
    "sluice.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice", description="Adaptive inference router and admission-control proxy for LLM serving."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
