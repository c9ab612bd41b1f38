"""The ``sluice`` command: one entry point, one module per subcommand.

Kept apart from ``router/`` so the HTTP data plane never imports the load
generator, the simulator or training code. Each module in ``COMMANDS`` exposes
``add_parser(subparsers)`` which registers its subcommand and sets ``func``.

Only the chosen subcommand's module is imported: ``sluice serve`` must not
pay for scikit-learn, SciPy and matplotlib, which the training, evaluation and
report commands pull in (about a second of start-up and tens of MB of memory
in every proxy process). ``sluice --help`` and unknown commands build the
full parser.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "check-config": "sluice.commands.check_config",
    "serve": "sluice.commands.serve",
    "sim": "sluice.commands.sim",
    "replay": "sluice.commands.replay",
    "bench": "sluice.commands.bench",
    "capacity": "sluice.commands.capacity",
    "workloads": "sluice.commands.workloads",
    "predict": "sluice.commands.predict",
    "demo": "sluice.commands.demo",
    "version": "sluice.commands.version",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or with ``only`` that one (its module alone is imported)."""
    parser = argparse.ArgumentParser(
        prog="sluice", description="Adaptive inference router and admission-control proxy for LLM serving."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    chosen = args_in[0] if args_in and args_in[0] in COMMANDS else None
    args = build_parser(chosen).parse_args(args_in)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
