"""Command-line flags for choosing and shaping a workload, shared by ``replay``, ``workloads`` and ``bench``.

Common options are first-class flags (``--time-scale``, ``--duration-s`` …);
a workload's own parameters are ``--set KEY=VALUE`` (repeatable) and are
validated by that workload's schema, so a typo is an error, not a default.
Mixes are ``name=weight`` lists: ``--priority-mix critical=1,standard=3``.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from typing import Any

from core.features import prompt_text
from core.tokens import estimate_tokens
from loadgen.workloads import Workload, WorkloadError, build_workload, registered


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    group.add_argument("--workload", required=True, help=f"one of: {', '.join(registered())}")
    group.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                       help="a workload parameter (see `sluice workloads`)")  # fmt: skip
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--time-scale", type=float, default=1.0, help="multiply all times (0.5 = twice as fast)"
    )
    group.add_argument("--rate-scale", type=float, default=1.0, help="multiply the request rate, same span")
    group.add_argument("--start-s", type=float, default=0.0, help="skip this much of the source timeline")
    group.add_argument("--duration-s", type=float, default=None, help="stop sending at this replay time")
    group.add_argument("--max-requests", type=int, default=None)
    group.add_argument("--model", default=None, help="model name sent in every request")
    group.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    group.add_argument("--max-tokens", default="none", help="none | true (trace length) | N")
    group.add_argument("--ignore-eos", action="store_true", help="send vLLM's ignore_eos")
    group.add_argument("--priority-mix", default=None, metavar="CLASS=W,...")
    group.add_argument("--tenant-mix", default=None, metavar="TENANT=W,...")
    group.add_argument(
        "--data-dir", default=None, help="trace directory (default: $SLUICE_DATA_DIR or shared/data)"
    )


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """``a=1,b=2`` (or a list of ``a=1`` items) into a dict; malformed items are a ``WorkloadError``."""
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise WorkloadError(f"{what}: expected NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def build_from_args(args: argparse.Namespace) -> Workload:
    params: dict[str, str] = {}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WorkloadError(f"--set expects KEY=VALUE, got {item!r}")
        params[key] = value
    options: dict[str, Any] = {
        "seed": args.seed,
        "time_scale": args.time_scale,
        "rate_scale": args.rate_scale,
        "start_s": args.start_s,
        "duration_s": args.duration_s,
        "max_requests": args.max_requests,
        "endpoint": args.endpoint,
        "max_tokens": args.max_tokens,
        "ignore_eos": args.ignore_eos,
        "priority_mix": parse_pairs(args.priority_mix, "--priority-mix"),
        "tenant_mix": parse_pairs(args.tenant_mix, "--tenant-mix"),
    }
    if args.model is not None:
        options["model"] = args.model
    if args.data_dir is not None:
        options["data_dir"] = args.data_dir
    return build_workload(args.workload, options, params)


def describe_shape(workload: Workload) -> str:
    """Counts, span, rate and length quantiles of a workload, generated without sending."""
    n = 0
    last_s = 0.0
    prompt_tokens: list[int] = []
    output_tokens: list[int] = []
    tenants: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    sessions: set[str] = set()
    dependent = 0
    for request in workload.requests():
        n += 1
        last_s = max(last_s, request.arrival_s)
        prompt_tokens.append(estimate_tokens(prompt_text(request.endpoint, request.body)))
        output_tokens.append(request.true_output_tokens)
        tenants[request.tenant] += 1
        classes[request.priority] += 1
        dependent += request.after_request_id is not None
        if request.session_id:
            sessions.add(request.session_id)
    if n == 0:
        return f"workload {workload.name}: no requests with these options"

    def q(values: list[int]) -> str:
        qs = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
        return f"mean {statistics.fmean(values):.0f} / p50 {qs[49]:.0f} / p90 {qs[89]:.0f} / p99 {qs[98]:.0f}"

    lines = [
        f"workload {workload.name}: {n} requests over {last_s:.1f} s ({n / max(last_s, 1e-9):.2f} req/s)",
        f"prompt tokens (estimated) {q(prompt_tokens)}",
        f"output tokens (true)      {q(output_tokens)}",
        f"sessions {len(sessions)}, dependent turns {dependent}",
        f"tenants {len(tenants)} (top: {', '.join(f'{t} {c}' for t, c in tenants.most_common(5))})",
        f"classes {dict(classes)}",
    ]
    return "\n".join(lines)
