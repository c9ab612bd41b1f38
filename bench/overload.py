"""Overload benchmark (issue 7, item 5): load steps 0.5x -> 1x -> 3x for 60 s -> 0.7x capacity, mixed classes.

The scenario (fleet, request shape, class mix, SLO, steps, calibrated capacity) is
``bench/_overload_setup.py``; the figures and their definitions (admitted, lost, goodput, shed
fraction by class and phase, recovery time, Retry-After accuracy) are ``bench/_overload_analysis.py``.

Parts (``--part``):

* ``virtual``: Sluice's real ``DecisionEngine`` on the virtual-time fleet (``loadgen.sim.virtual``):
  round robin with admission, ``sluice_predictive`` with admission, round robin without admission,
  ``--seeds`` seeds each; deterministic per seed. The same retrying clients as in real time
  (``bench/_overload_retry.py``). Samples Sluice's waiting room by class and the engines' own queues
  every second. Each system and seed is run twice: first without the burst (the *control*: its 3x
  steps at the after-burst level, 0.7x), whose after-burst phase is the steady state the burst
  run's recovery is judged against (``_overload_analysis.steady_reference``), then with it.
* ``virtual --control``: the control runs only, each judged against its own steady state: the
  recovery criterion's verdict on a fleet that was never overloaded (it should read ~0 s), beside
  the old 0.5x-baseline criterion's (``overload_virtual_control.json``).
* ``realtime`` (wrap it in ``flock /tmp/sluice-realtime.lock``): ``sluice sim`` backends, then in
  turn ``sluice serve`` with admission, ``sluice serve`` without, and sglang-router 0.3.2 with
  ``--max-concurrent-requests`` and its queue, each fed the same open-loop step workload plus a
  small stream of retrying clients that honour Retry-After (``bench/_overload_realtime.py``). With
  admission, Sluice's CPU per refused request of a hammering client (zero budget, ignores
  Retry-After) is compared with its CPU per admitted streamed request. ``realtime --control`` runs
  each system without the burst (``overload_realtime_control.json``); a later burst run of the same
  seed judges recovery against it (without one, recovery is "n/a" and the old criterion is given).

Writes ``bench/results/overload_<part>.json`` (command, config, git rev, figures) and PNG plots
``bench/results/overload_<part>_{shed,ttft,queue}.png``; prints a table per system and the verdict
per target.

    nice -n 10 python bench/overload.py --part virtual --seeds 0 1 2
    flock /tmp/sluice-realtime.lock nice -n 10 python bench/overload.py --part realtime --control
    flock /tmp/sluice-realtime.lock nice -n 10 python bench/overload.py --part realtime
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _overload_setup as setup
from _overload_analysis import (
    CLASSES,
    after_burst,
    phases,
    rescore_recovery,
    retry_after_accuracy,
    score,
    steady_reference,
)
from _overload_plots import plot_all
from _overload_retry import RetryingStream, join
from _results import RESULTS, write_result

from decision.engine import DecisionEngine
from loadgen.records import RequestRecord
from loadgen.sim.virtual import VirtualFleet


def _sampler(vf: VirtualFleet, samples: list[dict[str, Any]], end_s: float) -> None:
    """Every second of virtual time: Sluice's waiting room by class and its concurrency limits."""

    def sample(t: float, _: None) -> None:
        decider = vf.decider
        if isinstance(decider, DecisionEngine):
            room = decider.admission.queue_depths()
            limits = decider.admission.limits()
            samples.append({"t_s": t, "queued": room, "limits": limits})
        if t < end_s:
            vf.schedule(t + 1.0, sample, None)

    vf.schedule(0.0, sample, None)


def engine_waiting(vf: VirtualFleet, end_s: float) -> list[dict[str, Any]]:
    """Requests waiting inside the engines, summed over backends (each at its latest poll), per second."""
    samples = sorted(vf.samples, key=lambda s: s.t_s)
    latest: dict[str, int] = {}
    out, i = [], 0
    for t in range(int(end_s) + 1):
        while i < len(samples) and samples[i].t_s <= t:
            latest[samples[i].backend] = samples[i].waiting or 0
            i += 1
        out.append({"t_s": float(t), "engine_waiting": sum(latest.values())})
    return out


def compact(figures: dict[str, Any], keep_series: bool) -> dict[str, Any]:
    """Keep the per-second series of the first seed only (small results files), floats rounded."""
    series = ("timeline", "waiting_room", "engine_waiting")
    out = {k: v for k, v in figures.items() if keep_series or k not in series}
    kept: dict[str, Any] = json.loads(json.dumps(out), parse_float=lambda x: round(float(x), 3))
    return kept


def _virtual_run(
    fleet: Any, policy: str, admission: bool, seed: int, capacity_rps: float, control: bool, end_s: float
) -> tuple[list[RequestRecord], list[RequestRecord], VirtualFleet, list[dict[str, Any]]]:
    """One virtual run: (the step workload's records, the retrying clients', the fleet, room samples)."""
    base = heapq.merge(
        setup.main_requests(capacity_rps, seed, control),
        setup.retry_workload(capacity_rps, seed).requests(),
        key=lambda wr: wr.arrival_s,
    )
    vf = setup.virtual_fleet(fleet, setup.virtual_config(fleet, admission, policy), seed)
    room: list[dict[str, Any]] = []
    _sampler(vf, room, end_s)
    stream = RetryingStream(vf, base, setup.RETRY_TENANT, setup.RETRY_MAX)
    everyone = [r.to_load_record(with_itl=False) for r in vf.run(stream)]
    records, retrying = join(everyone, setup.RETRY_TENANT)
    return records, retrying, vf, room


def run_virtual_part(args: argparse.Namespace, capacity: dict[str, Any]) -> dict[str, Any]:
    """Each system and seed: the control run (no burst) for the recovery reference, then (unless
    ``--control``) the burst run, scored against it."""
    fleet = setup.fleet()
    phase_list = phases(setup.STEP_S, setup.LEVELS)
    window = after_burst(phase_list)
    end_s = phase_list[-1].end_s + 20.0
    cap = capacity["capacity_rps"]
    systems: dict[str, Any] = {}
    for policy, admission in setup.VIRTUAL_SYSTEMS:
        name = setup.system_name(policy, admission)
        if args.only and not any(o in name for o in args.only):
            continue
        runs: list[dict[str, Any]] = []
        for seed in args.seeds:
            records, retrying, vf, room = _virtual_run(fleet, policy, admission, seed, cap, True, end_s)
            reference = steady_reference(records, window.start_s, window.end_s)
            if not args.control:
                records, retrying, vf, room = _virtual_run(fleet, policy, admission, seed, cap, False, end_s)
            figures = score(records, phase_list, setup.TTFT_SLO_MS, reference)
            figures["retrying_clients"] = retry_after_accuracy(retrying)
            figures["seed"] = seed
            figures["waiting_room"] = room
            figures["engine_waiting"] = engine_waiting(vf, end_s)
            runs.append(compact(figures, keep_series=not runs))
            print(f"  {name} seed {seed}: " + verdict_line(figures), flush=True)
        systems[name] = {"runs": runs, "mean": mean_over_seeds(runs)}
    return systems


def mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of the headline figures across seeds, and in how many seeds each target was met."""

    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    out: dict[str, Any] = {"seeds": len(runs)}
    for phase in runs[0]["by_phase_and_class"]:
        for cls in CLASSES:
            for key in ("shed_frac", "goodput_frac", "ttft_p99_ms"):
                out[f"{phase}.{cls}.{key}"] = mean([r["by_phase_and_class"][phase][cls][key] for r in runs])
    out["recovery_s"] = mean([r["recovery_s"] for r in runs])
    out["recovery_s_old_criterion"] = mean([r["old_criterion"]["recovery_s"] for r in runs])
    out["old_criterion_recovered_in_seeds"] = sum(
        bool(r["old_criterion"]["recovered_within_5s"]) for r in runs
    )
    out["lost"] = sum(r["lost"] for r in runs)
    out["targets_met_in_seeds"] = {
        k: sum(bool(r["targets_met"][k]) for r in runs) for k in runs[0]["targets_met"]
    }
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def verdict_line(f: dict[str, Any]) -> str:
    crit = f["by_phase_and_class"]["all"]["critical"]
    judged = [v for v in f["targets_met"].values() if v is not None]  # None: not judged (no control)
    rec = "n/a (no control run)" if f.get("recovery_reference") is None else _s(f["recovery_s"])
    return (
        f"critical goodput {_pct(crit['goodput_frac'])}, TTFT p99 {_ms(crit['ttft_p99_ms'])} ms, "
        f"lost {f['lost']}, recovery {rec} (old criterion {_s(f['old_criterion']['recovery_s'])}), "
        f"targets met {sum(judged)}/{len(judged)}"
    )


def _s(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f} s"


def _verdict(v: bool | None) -> str:
    return "n/a" if v is None else "yes" if v else "NO"


def print_table(name: str, f: dict[str, Any]) -> None:
    print(f"\n{name}")
    print(
        f"  {'phase':<6} {'class':<10} {'offered':>7} {'shed':>7} {'goodput':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} lost"
    )
    for phase, row in f["by_phase_and_class"].items():
        for cls in CLASSES:
            c = row[cls]
            print(
                f"  {phase:<6} {cls:<10} {c['offered']:>7} {_pct(c['shed_frac']):>7} "
                f"{_pct(c['goodput_frac']):>8} {_ms(c['ttft_p50_ms']):>7} "
                f"{_ms(c['ttft_p99_ms']):>7} {c['lost']}"
            )
    print("  targets: " + ", ".join(f"{k}={_verdict(v)}" for k, v in f["targets_met"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("virtual", "realtime"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="virtual part")
    parser.add_argument("--seed", type=int, default=0, help="realtime part")
    parser.add_argument("--peers-venv", type=Path, default=Path("/work/peers-venv"))
    parser.add_argument("--runs-dir", type=Path, default=setup.ROOT / "runs" / "overload")
    parser.add_argument(
        "--only",
        nargs="*",
        help="systems to run, by substring of their name (e.g. 'round_robin +admission', sglang); "
        "a realtime partial run keeps the other systems of the last results file",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="without the burst (its steps at the after-burst level), scored at the same instants against "
        "its own steady state: the recovery criteria on a fleet that never was overloaded (writes "
        "overload_<part>_control.json; a realtime burst run judges recovery against it)",
    )
    parser.add_argument(
        "--setting",
        choices=setup.SETTINGS,
        default="default",
        help="Sluice's admission setting: default, or 'gate' (the defaults before branch recovery4: the "
        "per-backend prefill gate and FIFO in every class)",
    )
    parser.add_argument(
        "--out-suffix",
        default="",
        help="appended to the results and plot names (e.g. _seeds0-8), so an exploratory run does not "
        "overwrite the committed files",
    )
    parser.add_argument("--step-s", type=float, default=setup.STEP_S, help="seconds per load step (smoke: 3)")
    parser.add_argument(
        "--retry-max",
        type=int,
        default=setup.RETRY_MAX,
        help="retries per request of a retrying client (default: the openai client's 2)",
    )
    args = parser.parse_args()
    setup.STEP_S = args.step_s
    setup.SETTING = args.setting
    setup.RETRY_MAX = args.retry_max
    fleet = setup.fleet()
    capacity = setup.calibrate(fleet)
    print(f"capacity {capacity['capacity_rps']:.2f} req/s ({capacity['definition']})", flush=True)
    config = {
        "fleet_file": str(setup.FLEET_FILE.relative_to(setup.ROOT)),
        "capacity": capacity,
        "levels": list(setup.control_levels() if args.control else setup.LEVELS),
        "scored_with_phases_of": list(setup.LEVELS),
        "step_s": setup.STEP_S,
        "shape": setup.SHAPE,
        "class_mix": setup.MIX,
        "ttft_slo_ms": setup.TTFT_SLO_MS,
        "queue_deadline_ms": setup.QUEUE_DEADLINE_MS,
        "sluice_config": setup.sluice_base(admission=True),
        "seeds": args.seeds if args.part == "virtual" else [args.seed],
        "setting": args.setting,
        "retry_max": setup.RETRY_MAX,
    }

    kept: dict[str, Any] = {}
    if (
        args.part == "realtime"
        and args.only
        and not args.control
        and (RESULTS / "overload_realtime.json").exists()
    ):
        # A partial re-run keeps the other systems of the last run (re-scored with today's rules).
        from _overload_realtime import control_references

        previous = json.loads((RESULTS / "overload_realtime.json").read_text())["figures"]["systems"]
        references = control_references(args.seed)
        for name, system in previous.items():
            if not any(o in name for o in args.only):
                rescore_recovery(system["runs"][0], phases(setup.STEP_S, setup.LEVELS), references.get(name))
                kept[name] = system

    def save(systems: dict[str, Any]) -> Path:
        name = f"overload_{args.part}" + ("_control" if args.control else "") + args.out_suffix
        return write_result(name, config, {"systems": {**kept, **systems}})

    if args.part == "virtual":
        systems = run_virtual_part(args, capacity)
    else:
        from _overload_realtime import run_realtime_part

        systems = run_realtime_part(args, capacity, save)  # saves after each system
    systems = {**kept, **systems}
    for name, system in systems.items():
        print_table(name, system["runs"][0])
    path = save(systems)
    if args.control:
        print(f"wrote {path}")
        return
    stem = RESULTS / f"overload_{args.part}{args.out_suffix}"
    for png in plot_all(systems, phases(setup.STEP_S, setup.LEVELS), stem):
        print(f"wrote {png}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
