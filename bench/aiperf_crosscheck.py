"""Cross-check Sluice's load client against NVIDIA aiperf: same endpoint, same requests, same schedule.

1. A fresh simulated fleet (``configs/fleets/crosscheck.yaml``: H100 + A100; a request without
   ``x-sim-output-tokens`` runs to its ``max_completion_tokens``) and Sluice in front of it
   (round robin, admission off), as separate processes on loopback.
2. ``aiperf profile`` against Sluice: chat, streaming, Poisson arrivals, fixed ISL/OSL, a seed,
   ``--use-server-token-count`` (counts from the server's ``usage``, not aiperf's tokenizer).
   aiperf runs from its own venv (``bench/aiperf_setup.sh`` creates ``.aiperf-venv`` when missing)
   with a tiny tokenizer built offline (``bench/aiperf_tokenizer.py``).
3. aiperf's own requests become our workload: the exact payloads it sent (``inputs.json``) at the
   offsets it sent them (``request_start_ns`` in ``profile_export.jsonl``), output length = its
   ``max_completion_tokens``.
4. A second fresh fleet + Sluice; ``loadgen.replay`` sends that workload.
5. Both sides' per-request figures are summarised with the same percentile rule (numpy linear) and
   compared: TTFT, per-request inter-token latency (aiperf "ITL" = our TPOT, both
   (E2E - TTFT) / (tokens - 1)), E2E, and the pooled chunk gaps (aiperf ``inter_chunk_latency`` =
   our ``itl_ms``). aiperf's own summary figures are kept next to the recomputed ones.

Usage: ``python bench/aiperf_crosscheck.py [--rate 12] [--requests 720] [--aiperf-venv DIR]``
Writes ``bench/results/aiperf_crosscheck.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import write_result

from core.types import Endpoint
from loadgen.client import ClientOptions, LoadClient
from loadgen.processes import ChildGroup
from loadgen.records import Outcome, RequestRecord, write_records
from loadgen.results import SLO
from loadgen.sim.fleet_config import load_fleet
from loadgen.stack import ROOT, proxy_config, start_fleet, start_sluice, write_proxy_config
from loadgen.workload import WorkloadRequest

FLEET = ROOT / "configs" / "fleets" / "crosscheck.yaml"
MODEL = "llama-3.1-8b"
AGREEMENT_FRAC = 0.10


async def _stack(group: ChildGroup, out: Path) -> str:
    fleet = await start_fleet(group, FLEET)
    config = proxy_config(load_fleet(FLEET), fleet.urls, policy="round_robin", slo=SLO())
    config["admission"] = {"enabled": False}
    _, url = await start_sluice(group, write_proxy_config(out / "sluice.yaml", config))
    return url


def aiperf_argv(args: argparse.Namespace, url: str, out: Path) -> list[str]:
    return [
        str(args.aiperf_venv / "bin" / "aiperf"), "profile",
        "--model", MODEL, "--url", url, "--endpoint-type", "chat", "--streaming",
        "--tokenizer", str(args.tokenizer_dir), "--use-server-token-count",
        "--request-rate", str(args.rate), "--arrival-pattern", "poisson", "--random-seed", str(args.seed),
        "--request-count", str(args.requests),
        "--isl", str(args.isl), "--isl-stddev", "0", "--osl", str(args.osl), "--osl-stddev", "0",
        "--ui", "none", "--artifact-dir", str(out),
    ]  # fmt: skip


async def run_aiperf(args: argparse.Namespace, out: Path) -> None:
    async with ChildGroup(out / "logs") as group:
        url = await _stack(group, out)
        child = await group.spawn("aiperf", aiperf_argv(args, url, out / "aiperf"))
        status = await child.wait_exit(timeout_s=args.requests / args.rate + 600)
        if status != 0:
            raise SystemExit(f"aiperf failed (status {status}); see {child.log_path}")


def aiperf_records(out: Path) -> list[dict[str, Any]]:
    lines = (out / "aiperf" / "profile_export.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def workload_from_aiperf(out: Path) -> list[WorkloadRequest]:
    """aiperf's requests, payload for payload, at the offsets aiperf actually sent them."""
    inputs = json.loads((out / "aiperf" / "inputs.json").read_text())
    payloads = {item["session_id"]: item["payloads"][0] for item in inputs["data"]}
    records = sorted(aiperf_records(out), key=lambda r: r["metadata"]["request_start_ns"])
    t0 = records[0]["metadata"]["request_start_ns"]
    requests = []
    for i, record in enumerate(records):
        meta = record["metadata"]
        body = payloads[meta["conversation_id"]]
        requests.append(
            WorkloadRequest(
                request_id=f"aiperf-{i:05d}",
                arrival_s=(meta["request_start_ns"] - t0) / 1e9,
                endpoint=Endpoint.CHAT,
                body=body,
                true_output_tokens=int(body["max_completion_tokens"]),
                source="aiperf",
            )
        )
    return requests


async def run_ours(requests: list[WorkloadRequest], out: Path) -> list[RequestRecord]:
    async with ChildGroup(out / "logs-ours") as group:
        url = await _stack(group, out / "ours")
        client = LoadClient(ClientOptions(url))
        await client.preflight()
        records = await client.run(requests)
    write_records(out / "ours" / "requests.jsonl.gz", records)
    return records


def pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "mean": float(arr.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "count": len(values),
    }


def aiperf_side(out: Path) -> dict[str, dict[str, float]]:
    rows = [r["metrics"] for r in aiperf_records(out) if "time_to_first_token" in r["metrics"]]

    def values(key: str) -> list[float]:
        return [float(r[key]["value"]) for r in rows if key in r]

    gaps = [float(g) for r in rows for g in r.get("inter_chunk_latency", {}).get("value", [])]
    return {
        "ttft_ms": pct(values("time_to_first_token")),
        "per_request_itl_ms": pct(values("inter_token_latency")),
        "e2e_ms": pct(values("request_latency")),
        "chunk_gap_ms": pct(gaps),
        "output_tokens": pct(values("output_sequence_length")),
    }


def our_side(records: list[RequestRecord]) -> dict[str, dict[str, float]]:
    ok = [r for r in records if r.outcome is Outcome.OK]
    return {
        "ttft_ms": pct([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        "per_request_itl_ms": pct([t for r in ok if (t := r.tpot_ms) is not None]),
        "e2e_ms": pct([r.e2e_ms for r in ok if r.e2e_ms is not None]),
        "chunk_gap_ms": pct([g for r in ok for g in r.itl_ms]),
        "output_tokens": pct([float(r.output_tokens) for r in ok]),
    }


def compare(ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for metric in ("ttft_ms", "per_request_itl_ms", "e2e_ms", "chunk_gap_ms"):
        for stat in ("mean", "p50", "p90", "p99"):
            a, b = ours[metric][stat], theirs[metric][stat]
            ratio = a / b if b else None
            rows.append({"metric": metric, "stat": stat, "sluice": a, "aiperf": b, "ratio": ratio})
    return rows


def ensure_aiperf(args: argparse.Namespace) -> None:
    if not (args.aiperf_venv / "bin" / "aiperf").exists():
        print(f"creating {args.aiperf_venv} (aiperf from PyPI, a few minutes) ...", flush=True)
        subprocess.run(["bash", str(ROOT / "bench" / "aiperf_setup.sh"), str(args.aiperf_venv)], check=True)
    if not (args.tokenizer_dir / "tokenizer.json").exists():
        script = ROOT / "bench" / "aiperf_tokenizer.py"
        subprocess.run(
            [str(args.aiperf_venv / "bin" / "python"), str(script), str(args.tokenizer_dir)], check=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=12.0, help="Poisson request rate (req/s)")
    parser.add_argument("--requests", type=int, default=720)
    parser.add_argument("--isl", type=int, default=1536, help="aiperf input tokens (its tokenizer)")
    parser.add_argument("--osl", type=int, default=128, help="output tokens (max_completion_tokens)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--aiperf-venv", type=Path, default=ROOT / ".aiperf-venv")
    parser.add_argument("--tokenizer-dir", type=Path, default=ROOT / "runs" / "aiperf-tokenizer")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "aiperf-crosscheck")
    args = parser.parse_args()
    ensure_aiperf(args)
    args.out.mkdir(parents=True, exist_ok=True)
    uvloop.run(run_aiperf(args, args.out))
    requests = workload_from_aiperf(args.out)
    records = uvloop.run(run_ours(requests, args.out))
    ours, theirs = our_side(records), aiperf_side(args.out)
    rows = compare(ours, theirs)
    print(f"{'metric':<20} {'stat':>4} {'sluice':>10} {'aiperf':>10} {'ratio':>7}")
    for row in rows:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(f"{row['metric']:<20} {row['stat']:>4} {row['sluice']:10.2f} {row['aiperf']:10.2f} {ratio:>7}")
    summary = json.loads((args.out / "aiperf" / "profile_export_aiperf.json").read_text())
    own = {k: summary.get(k) for k in ("time_to_first_token", "inter_token_latency", "request_latency")}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["fleet"] = str(FLEET.relative_to(ROOT))
    figures = {
        "requests": {"aiperf": theirs["ttft_ms"]["count"], "sluice": ours["ttft_ms"]["count"]},
        "comparison": rows,
        "sluice": ours,
        "aiperf_recomputed": theirs,
        "aiperf_own_summary": own,
        "aiperf_version": summary.get("aiperf_version"),
    }
    path = write_result("aiperf_crosscheck", config, figures)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
