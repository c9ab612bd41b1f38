"""Sluice against sglang-router, vllm-router and nginx: same simulated fleet, same trace, same seed.

For each scenario, every router gets a fresh simulated fleet (``sluice sim``, real time; cold KV
caches, same seeds) and the same open-loop replay (``loadgen.replay``), then is stopped:

* Sluice, ``sluice serve``, with each registered policy that runs on default parameters, admission
  off (routing only); plus the preferred policy with admission on (the product as shipped);
* sglang-router 0.3.2 ``cache_aware`` and ``round_robin``; vllm-router 0.1.17 ``cache_aware`` and
  ``power_of_two`` (flags and why: ``bench/_peer_routers.py``); both from PyPI in a separate venv
  (``bench/peers_setup.sh`` creates ``.peers-venv`` when missing);
* nginx round robin (``nginx -p`` with a temporary prefix).

Scenarios (``SCENARIOS``):

* ``prefix``: ShareGPT multi-turn sessions (real text; a turn's prompt is the whole conversation so
  far, think time 3 s) on three identical A100s (``configs/fleets/peers-prefix.yaml``), sessions
  started at a rate sized to 130 % of the fleet's capacity computed *without* cache reuse (later
  turns wait for earlier ones, so about 55 requests/s are actually sent). Cache affinity is all a
  router can win.
* ``hetero``: the Azure 2023 conversation trace (no shared prefixes) on the demo fleet (H100 + A100
  + L4) at 50 % of capacity, time-compressed. Knowing backend speeds is all a router can win.
* ``issue6``: the real-time half of issue 6's comparison: the Mooncake conversation trace (real
  prefix sharing: equal ``hash_ids`` become equal text) on ``configs/fleets/hetero-6.yaml`` (2 H100
  + 2 A100 + 2 L4) at 90 % of capacity, time-compressed, SLO TTFT p99 2 s / TPOT p99 100 ms; only
  Sluice round_robin, sglang_cache_aware and sluice_predictive against sglang-router cache_aware
  and round_robin. Both speed and cache affinity matter. ShareGPT at 0.9x of this fleet would be
  ~110 requests/s of ~330-token streams, which a 2-core machine cannot generate, route and simulate
  at once; Mooncake's long prompts (~14k tokens) make 0.9x only ~8 requests/s.

sglang-router drops custom headers, ``x-sim-output-tokens`` included, so the fleet is also given
the true output lengths by request id (``sluice sim --output-lengths``): every router is measured
on the trace's lengths. Per router the script records the client-side summary (``results.json``
schema), the backends' own counters (finished requests per backend, prefix-cache hit rate,
preemptions) and prints one table of ratios against round robin (nginx, else Sluice's).
Results: ``bench/results/peers_<scenario>.json``; per-router reports under ``--runs-dir``.

The simulator coalesces stream events every 50 ms (``--coalesce-ms``, vLLM's ``--stream-interval``
idea; the first token is never delayed, usage counts stay exact): at ~10k generated tokens/s a
per-token stream costs the client, the router and the simulator one write per token each, and on a
2-core machine that CPU, not the routers, would set the result (client send lag p99 ~100 ms per
token vs ~15 ms coalesced in the same setup). TTFT, TPOT and E2E are unaffected by coalescing;
chunk gaps are not reported here.

Usage: ``python bench/peers.py [--scenario prefix|hetero|issue6|all] [--duration-s 60] [--peers-venv DIR]
[--only NAME ...]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _peer_routers import Router, nginx, sglang_router, vllm_router
from _peers_table import BASELINES, absolute_table, ratio_table, row_from
from _results import RESULTS, write_result

from loadgen.client import ClientOptions
from loadgen.demo import PREFERRED_POLICIES
from loadgen.processes import ChildGroup
from loadgen.replay import replay
from loadgen.report import write_run
from loadgen.results import SLO
from loadgen.sim.fleet_config import load_fleet
from loadgen.sizing import ScaleKnob, Sizing, size_workload
from loadgen.stack import ROOT, FleetProcess, proxy_config, start_fleet, start_sluice, write_proxy_config

SLO_DEFAULT = SLO(ttft_ms=2000.0, tpot_ms=100.0)
# ``pipeline`` validates with no parameters, but empty (no scorers, a max-score picker over equal
# scores) it is not a policy anyone would run; the presets are its real configurations.
ASSEMBLED_IN_CONFIG = frozenset({"pipeline"})


ISSUE6_ROUTERS = (
    "sluice round_robin",
    "sluice sglang_cache_aware",
    "sluice sluice_predictive",
    "sglang-router cache_aware",
    "sglang-router round_robin",
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    workload: str
    knob: ScaleKnob
    fleet_file: str
    load_frac: float
    params: Mapping[str, str] = field(default_factory=dict)
    routers: tuple[str, ...] = ()  # row names to run; empty = every router


SCENARIOS = {
    "prefix": Scenario(
        "prefix", "sharegpt", "rate", "configs/fleets/peers-prefix.yaml", 1.3, {"think_time_mean_s": "3"}
    ),
    "hetero": Scenario("hetero", "azure_conv", "time", "configs/fleets/demo.yaml", 0.5),
    "issue6": Scenario(
        "issue6", "mooncake_conversation", "time", "configs/fleets/hetero-6.yaml", 0.9, routers=ISSUE6_ROUTERS
    ),
}


def sluice_routers(scenario: Scenario, admission_policy: str | None) -> list[Router]:
    """One row per registered policy that accepts its default parameters (admission off)."""
    import policies

    rows = []
    for name, spec in sorted(policies.registered().items()):
        if name in ASSEMBLED_IN_CONFIG:
            continue
        try:
            spec.params_model.model_validate({})
        except ValueError:
            continue  # needs parameters that have no default
        rows.append(sluice_router(scenario, name, admission=False))
    if admission_policy is not None:
        rows.append(sluice_router(scenario, admission_policy, admission=True))
    return rows


def sluice_router(scenario: Scenario, policy: str, *, admission: bool) -> Router:
    label = f"sluice {policy}" + (" +admission" if admission else "")
    fleet_spec = load_fleet(ROOT / scenario.fleet_file)

    async def start(group: ChildGroup, fleet: FleetProcess, run_dir: Path) -> str:
        config = proxy_config(fleet_spec, fleet.urls, policy=policy, slo=SLO_DEFAULT)
        config["admission"] = {"enabled": admission}
        path = write_proxy_config(run_dir / "sluice.yaml", config)
        _, url = await start_sluice(group, path)
        return url

    return Router(label, "sluice", policy, start)


async def scrape_fleet(urls: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Per backend: finished requests, prefix-cache queried/hit tokens, preemptions (vLLM names)."""
    wanted = {
        "vllm:request_success_total": "finished",
        "vllm:prefix_cache_queries_total": "cache_queried_tokens",
        "vllm:prefix_cache_hits_total": "cache_hit_tokens",
        "vllm:num_preemptions_total": "preemptions",
    }
    out: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for name, url in urls.items():
            async with session.get(f"{url}/metrics") as resp:
                text = await resp.text()
            counts = dict.fromkeys(wanted.values(), 0.0)
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in wanted:
                        counts[wanted[sample.name]] += sample.value
            out[name] = counts
    return out


async def run_one(
    router: Router, sizing: Sizing, scenario: Scenario, args: argparse.Namespace, run_dir: Path
) -> dict[str, Any]:
    lengths = run_dir.parent / "output_lengths.json"
    extra = ["--output-lengths", str(lengths)]
    extra += ["--coalesce-ms", str(args.coalesce_ms)]
    started = time.monotonic()
    async with ChildGroup(run_dir / "logs") as group:
        fleet = await start_fleet(group, ROOT / scenario.fleet_file, extra_args=extra)
        url = await router.start(group, fleet, run_dir)
        client = ClientOptions(url, drain_timeout_s=args.drain_s)
        result = await replay(sizing.workload, client, slo=SLO_DEFAULT, command=sys.argv, progress=False)
        backends = await scrape_fleet(fleet.urls)
    result.document["router"] = {"name": router.name, "family": router.family, "policy": router.policy}
    write_run(run_dir, result.document, result.records)
    row = row_from(router, result.document, backends)
    row["wall_s"] = time.monotonic() - started
    row["results_dir"] = str(run_dir)
    return row


def ensure_peers_venv(venv: Path) -> None:
    """Create the peer routers' venv with ``bench/peers_setup.sh`` unless both routers are there."""
    if (venv / "bin" / "vllm-router").exists() and (venv / "bin" / "smg").exists():
        return
    print(f"creating {venv} (sglang-router, vllm-router from PyPI) ...", flush=True)
    subprocess.run(["bash", str(ROOT / "bench" / "peers_setup.sh"), str(venv)], check=True)


def all_routers(scenario: Scenario, args: argparse.Namespace) -> list[Router]:
    import policies

    best = next((p for p in PREFERRED_POLICIES if p in policies.registered()), None)
    routers = sluice_routers(scenario, best)
    if not args.no_peers:
        ensure_peers_venv(args.peers_venv)
        routers += [
            sglang_router(args.peers_venv, "cache_aware"),
            sglang_router(args.peers_venv, "round_robin"),
            vllm_router(args.peers_venv, "cache_aware"),
            vllm_router(args.peers_venv, "power_of_two"),
        ]
    routers.append(nginx(args.nginx))
    if scenario.routers:
        routers = [r for r in routers if r.name in scenario.routers]
    if args.only:
        routers = [r for r in routers if r.name in args.only or r.family in args.only]
    return routers


def run_scenario(scenario: Scenario, args: argparse.Namespace) -> None:
    fleet = load_fleet(ROOT / scenario.fleet_file)
    options: dict[str, Any] = {"seed": args.seed}
    sizing = size_workload(
        scenario.workload, fleet, duration_s=args.duration_s, load_frac=scenario.load_frac,
        knob=scenario.knob, options=options, params=scenario.params,
    )  # fmt: skip
    print(f"\n== scenario {scenario.name}: {scenario.fleet_file}\n" + "\n".join(sizing.lines()), flush=True)
    base = args.runs_dir / scenario.name
    base.mkdir(parents=True, exist_ok=True)
    lengths = {r.request_id: r.true_output_tokens for r in sizing.workload.requests()}
    (base / "output_lengths.json").write_text(json.dumps(lengths))
    rows: list[dict[str, Any]] = []
    for router in all_routers(scenario, args):
        slug = router.name.replace(" ", "_").replace("+", "")
        row = uvloop.run(run_one(router, sizing, scenario, args, base / slug))
        rows.append(row)
        print(_progress_line(row), flush=True)
        _save(scenario, sizing, rows, args)
    print()
    print(ratio_table(rows))


def _progress_line(row: Mapping[str, Any]) -> str:
    s = row["summary"]
    return (
        f"  {row['router']:<36} goodput {s['goodput_rps'] or 0:6.2f} req/s"
        f"  TTFT p99 {s['ttft_p99_ms'] or 0:9.0f} ms  done {s['completed']}/{s['requests']}"
        f"  cache hit {row['prefix_hit_frac']:.0%}  ({row['wall_s']:.0f} s)"
    )


def _save(scenario: Scenario, sizing: Sizing, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    config = {
        "scenario": scenario.name,
        "workload": sizing.workload.describe(),
        "fleet_file": scenario.fleet_file,
        "sizing": sizing.describe(),
        "slo": SLO_DEFAULT.to_json(),
        "duration_s": args.duration_s,
        "drain_s": args.drain_s,
        "coalesce_ms": args.coalesce_ms,
        "baselines": list(BASELINES),
        "peer_versions": {"sglang-router": "0.3.2", "vllm-router": "0.1.17"},
    }
    write_result(f"peers_{scenario.name}", config, {"rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds of trace per router")
    parser.add_argument("--drain-s", type=float, default=30.0, help="longest wait after the last arrival")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--coalesce-ms", type=float, default=50.0, help="simulator SSE coalescing, 0 = per token (default 50)"
    )
    parser.add_argument("--peers-venv", type=Path, default=ROOT / ".peers-venv")
    parser.add_argument("--no-peers", action="store_true", help="Sluice and nginx only")
    parser.add_argument("--nginx", default="nginx", help="nginx binary")
    parser.add_argument("--only", nargs="*", help="router names or families to run (e.g. sluice nginx)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "peers")
    parser.add_argument(
        "--tables", action="store_true", help="run nothing; print the Markdown tables of the saved results"
    )
    args = parser.parse_args()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in names:
        if args.tables:
            print_tables(name)
        else:
            run_scenario(SCENARIOS[name], args)


def print_tables(name: str) -> None:
    """The docs' tables (docs/peers.md) from ``bench/results/peers_<name>.json``."""
    path = RESULTS / f"peers_{name}.json"
    if not path.exists():
        print(f"\n## {name}: no {path} yet")
        return
    doc = json.loads(path.read_text())
    rows = doc["figures"]["rows"]
    print(f"\n## {name} (git {doc['git_rev'][:12]}, load average {doc['host']['load_avg_1m']:.1f})\n")
    print(ratio_table(rows, markdown=True))
    print()
    print(absolute_table(rows))


if __name__ == "__main__":
    main()
