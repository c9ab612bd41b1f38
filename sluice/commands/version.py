"""``sluice version``: the package version and whether the hot path runs compiled (mypyc) or pure Python."""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("version", help="version, and whether the hot path runs compiled")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.native import STATUS  # imported here: `sluice --help` must not hash the sources

    try:
        version = metadata.version("sluice")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    print(f"sluice {version}")
    print(f"hot path: {STATUS.describe()}")
    for name in STATUS.compiled:
        print(f"  {name}")
    return 0
