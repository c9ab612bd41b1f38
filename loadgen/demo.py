"""``sluice demo``: a simulated heterogeneous fleet, Sluice in front, a minute of a real trace through it.

The run, in order (``run_demo``):

1. size the workload (``loadgen.sizing``): the Azure 2023 conversation trace, time-compressed so
   the offered load is ``load_frac`` (default 50 %) of the fleet's closed-form capacity;
2. start ``sluice sim --fleet configs/fleets/demo.yaml`` (H100 + A100 + L4 profiles, one process,
   ephemeral ports) and wait for every backend's ``/health``;
3. write a Sluice config for it (one route: the chosen policy and the run's SLO) and start
   ``sluice serve --port 0``; wait for ``/ready``;
4. replay the workload open-loop through Sluice (``loadgen.replay``), at most ``drain_s`` after
   the last arrival for what is still running (then cancelled, counted as misses);
5. stop Sluice, then the fleet (``loadgen.processes``: by PID, also on Ctrl-C or failure), and
   write ``results.json``, ``requests.jsonl.gz`` and ``report.html``.

The policy defaults to the best one registered: Sluice's predictive policy when present, else
round-robin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.client import ClientOptions
from loadgen.processes import ChildGroup
from loadgen.replay import ReplayResult, replay
from loadgen.report import write_run
from loadgen.results import SLO
from loadgen.sim.fleet_config import Fleet
from loadgen.sizing import Sizing
from loadgen.stack import proxy_config, start_fleet, start_sluice, write_proxy_config

PREFERRED_POLICIES = ("sluice_predictive", "round_robin")
DEMO_SLO = SLO(ttft_ms=2000.0, tpot_ms=100.0)  # MLPerf Llama-3.1-8B server scenario (formulas.md §7)


def default_policy(available: Iterable[str]) -> str:
    """The first of ``PREFERRED_POLICIES`` that is registered."""
    names = set(available)
    for name in PREFERRED_POLICIES:
        if name in names:
            return name
    raise ValueError(f"none of {PREFERRED_POLICIES} is registered")


@dataclass(frozen=True, slots=True)
class DemoOptions:
    fleet_file: Path
    fleet: Fleet
    sizing: Sizing
    policy: str
    out_dir: Path
    slo: SLO = DEMO_SLO
    drain_s: float = 30.0
    progress: bool | None = None
    command: Sequence[str] = ()


@dataclass(slots=True)
class DemoRun:
    result: ReplayResult | None
    paths: dict[str, Path]
    proxy_url: str | None


async def run_demo(options: DemoOptions, say: Callable[[str], None]) -> DemoRun:
    """Steps 2-5 of the module docstring; cancelling it before the replay stops what was started.

    A cancellation during the replay (Ctrl-C) is absorbed by ``replay``, which returns partial
    results; they are written like a full run's.
    """
    logs = options.out_dir / "logs"
    run = DemoRun(None, {"logs": logs}, None)
    async with ChildGroup(logs) as group:
        say(f"starting the simulated fleet ({options.fleet_file}) ...")
        fleet = await start_fleet(group, options.fleet_file)
        say("  " + ", ".join(f"{b['backend']} ({b['gpu']}) {b['url']}" for b in fleet.backends))
        config = proxy_config(options.fleet, fleet.urls, policy=options.policy, slo=options.slo)
        config_path = write_proxy_config(options.out_dir / "sluice.yaml", config)
        run.paths["config"] = config_path
        say(f"starting Sluice (policy {options.policy}) ...")
        _, run.proxy_url = await start_sluice(group, config_path)
        say(f"  {run.proxy_url}")
        workload = options.sizing.workload
        say(
            f"replaying {workload.options.duration_s:g} s of {workload.name} through Sluice "
            f"(Ctrl-C stops early and keeps what was measured) ..."
        )
        client = ClientOptions(run.proxy_url, drain_timeout_s=options.drain_s)
        run.result = await replay(
            workload, client, slo=options.slo, command=options.command, progress=options.progress
        )
        say("stopping Sluice and the fleet ...")
    run.result.document["demo"] = _demo_meta(options, config)
    run.paths.update(write_run(options.out_dir, run.result.document, run.result.records))
    return run


def _demo_meta(options: DemoOptions, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "fleet_file": str(options.fleet_file),
        "policy": options.policy,
        "drain_s": options.drain_s,
        "sizing": options.sizing.describe(),
        "proxy_config": config,
    }
