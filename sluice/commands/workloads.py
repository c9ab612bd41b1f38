"""``sluice workloads``: list the workloads and the parameters each accepts (``--set KEY=VALUE``)."""

from __future__ import annotations

import argparse
from typing import Any

from loadgen.workloads import registered
from loadgen.workloads.base import WorkloadOptions


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("workloads", help="list workloads and their parameters")
    parser.add_argument("name", nargs="?", help="show one workload only")
    parser.set_defaults(func=run)


def _fields(model: Any) -> list[str]:
    lines = []
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=False)
        shown = "(from data dir)" if name == "data_dir" else repr(default)
        text = f"    {name} = {shown}"
        if info.description:
            text += f"  -- {info.description}"
        lines.append(text)
    return lines


def run(args: argparse.Namespace) -> int:
    specs = registered()
    if args.name is not None and args.name not in specs:
        print(f"sluice workloads: unknown workload {args.name!r}; known: {', '.join(specs)}")
        return 2
    for name, spec in specs.items():
        if args.name is not None and name != args.name:
            continue
        print(f"{name}: {spec.summary}" + (" [chat only]" if spec.chat_only else ""))
        print("\n".join(_fields(spec.params_model)) or "    (no parameters)")
    if args.name is None:
        print("\ncommon options (flags of `sluice replay`):")
        print("\n".join(_fields(WorkloadOptions)))
    return 0
