"""``sluice check-config FILE``: validate a config exactly as ``serve`` would, without starting."""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

from core.clock import MonotonicClock
from core.config import load_config
from core.yaml_source import ConfigError
from decision.engine import DecisionEngine


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("check-config", help="validate a config file and exit")
    parser.add_argument("config", help="path to the YAML config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config)
        # Building the decision engine validates every route's policy name and parameters.
        DecisionEngine.from_config(loaded, MonotonicClock(), random.Random(0))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    config = loaded.config
    print(
        f"{args.config}: OK ({len(config.backends)} backends, {len(config.models)} models, "
        f"{len(config.routes)} routes)"
    )
    return 0
