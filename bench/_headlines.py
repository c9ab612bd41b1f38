"""Headline figures of each ``bench/results/*.json`` against its target, for ``bench/run_all.py``.

Every benchmark script writes its own layout (older ones predate ``_results.write_result``), so one
small reader per result file picks the figures an issue set a target for and says whether the file
meets it. A ``Headline`` is (figure, value, target, ok): ``ok`` is ``None`` when there is no target
(an informative figure, e.g. the llama.cpp cold/warm ratio). Targets are those of the issues
(``issues show N``), written next to each reader. Files without a reader are listed by name only.
A reader that finds a key missing raises ``KeyError``; the summary reports the file as unreadable
instead of guessing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _peers_table import baseline_of, ratios

Doc = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Headline:
    figure: str
    value: str
    target: str = ""
    ok: bool | None = None


def _at_most(figure: str, value: float, limit: float, unit: str, digits: int = 1) -> Headline:
    return Headline(
        figure, f"{value:.{digits}f} {unit}".strip(), f"<= {limit:g} {unit}".strip(), value <= limit
    )


def _figures(doc: Doc) -> Doc:
    """``write_result`` files keep their numbers under ``figures``; older ones at the top level."""
    figures = doc.get("figures")
    return figures if isinstance(figures, Mapping) else doc


def overhead(doc: Doc) -> Iterator[Headline]:
    s = doc["summary"]  # issue 2 item 7: CPU per proxied request and per 100-chunk stream
    yield _at_most("Sluice CPU per small request", s["chat"]["sluice_cpu_us"], 250, "us", 0)
    yield _at_most("Sluice CPU per 100-chunk stream", s["stream"]["sluice_cpu_us"], 1000, "us", 0)
    if "dataplane_cpu_us" in s["chat"]:  # files from before the data-plane-only variant lack it
        dataplane_us = s["chat"]["dataplane_cpu_us"]
        yield Headline("  the data plane alone (no predictors, no admission)", f"{dataplane_us:.0f} us")
    yield Headline("TTFT added by Sluice, p50", f"{s['ttft']['added_p50_ms']:.2f} ms")


def decision_cost(doc: Doc) -> Iterator[Headline]:
    # issue 6 item 7: features + predictions + route, 64 backends, p99 <= 100 us
    # (features + admit + route on the default config since the fastpath rewrite; CPU time of the thread)
    target = doc["target"]
    for row in doc["results"]:
        if row["policy"] == target["policy"]:
            p99 = row["total_cpu_us"]["p99"]
            limit = target["features_admit_route_p99_us"]
            yield _at_most(f"{row['policy']} decision p99 (median round)", p99["median"], limit, "us", 0)
            yield _at_most(f"{row['policy']} decision p99 (best round)", p99["best"], limit, "us", 0)


def predictor_speed(doc: Doc) -> Iterator[Headline]:
    full = doc["results_median_of_rounds"]["full_predict_16_backends"]  # issue 5: p50 <= 50, p99 <= 100 us
    yield _at_most("predict, 16 backends, p50", full["p50_us"], doc["targets"]["p50_us"], "us")
    yield _at_most("predict, 16 backends, p99", full["p99_us"], doc["targets"]["p99_us"], "us")


def predictor_eval(doc: Doc) -> Iterator[Headline]:
    s = doc["summary"]  # issue 5: Kendall tau >= 0.5 in distribution, >= 0.4 across datasets
    t = s["targets"]
    tau = s["in_distribution_tau"]
    yield Headline("output length tau, in distribution", f"{tau:.3f}", f">= {t['in_distribution_tau']}",
                   tau >= t["in_distribution_tau"])  # fmt: skip
    for name, value in s["cross_dataset_tau_online"].items():
        ok = value >= t["cross_dataset_tau"]
        yield Headline(f"tau on unseen {name} (online)", f"{value:.3f}", f">= {t['cross_dataset_tau']}", ok)
    pooled = s.get("cross_dataset_pooled_tau", {}).get("model_online_features_prequential")
    if pooled is not None:
        ok = pooled >= t["cross_dataset_tau"]
        yield Headline(
            "tau on unseen sources pooled (online)", f"{pooled:.3f}", f">= {t['cross_dataset_tau']}", ok
        )
    low, high = t["p90_coverage"]
    cov = s["in_distribution_p90_coverage"]
    yield Headline("p90 coverage", f"{cov:.3f}", f"{low}-{high}", low <= cov <= high)


def latency_sim_eval(doc: Doc) -> Iterator[Headline]:
    for metric in ("ttft", "tpot", "e2e"):  # issue 5: MAPE <= 20 %
        mape = doc["pooled"][metric]["mape"]
        yield Headline(f"{metric.upper()} model MAPE", f"{mape:.1%}", f"<= {doc['target_mape']:.0%}",
                       mape <= doc["target_mape"])  # fmt: skip


def sim_agreement(doc: Doc) -> Iterator[Headline]:
    worst = _figures(doc)["worst_relative_difference"]  # issue 3: real vs virtual within 10 %
    yield Headline("real vs virtual, worst TTFT/E2E p50/p90 gap", f"{worst:.1%}", "<= 10%", worst <= 0.10)


def sim_virtual_speed(doc: Doc) -> Iterator[Headline]:
    f = _figures(doc)  # issue 3: an hour of Azure on 16 backends in <= 60 s, deterministic
    yield _at_most("1 h Azure trace, 16 backends, wall", f["wall_s_run1"], f["target_wall_s"], "s")
    yield Headline("same seed, same records", str(f["deterministic"]), "True", bool(f["deterministic"]))


def sim_capacity(doc: Doc) -> Iterator[Headline]:
    best: dict[float, float] = {}
    for p in _figures(doc)["points"]:
        if p["not_bottleneck"]:
            best[p["coalesce_ms"]] = max(best.get(p["coalesce_ms"], 0.0), p["tokens_per_s"])
    for coalesce, tokens in sorted(best.items()):
        yield Headline(f"simulator tokens/s, not the bottleneck, coalesce {coalesce:g} ms", f"{tokens:,.0f}")


def client_capacity(doc: Doc) -> Iterator[Headline]:
    for shape, block in doc["results"].items():  # issue 4 item 2: document the client's maximum rate
        yield Headline(f"load client max rate ({shape})", f"{block['max_passing_rps']:.0f} req/s")


def engine_metrics_parse(doc: Doc) -> Iterator[Headline]:
    for name in ("vllm_v1", "sglang", "vllm_dp8_full_histograms"):
        if name in doc["results"]:
            yield Headline(f"parse one {name} scrape", f"{doc['results'][name]['median_cpu_us']:.0f} us CPU")


def llamacpp_prefix(doc: Doc) -> Iterator[Headline]:
    r = doc["results"]
    yield Headline(
        "llama.cpp TTFT cold / warm prefix",
        f"{r['cold_over_warm_ratio']:.1f}x",
        "> 1",
        r["cold_over_warm_ratio"] > 1,
    )


def llamacpp_through_sluice(doc: Doc) -> Iterator[Headline]:
    f = _figures(doc)
    s = f["sglang_cache_aware"]  # the prefix-aware policy (session affinity in runs before it existed)
    yield Headline("through Sluice: repeat on the same server", s["repeat_on_same_server"])
    yield Headline("through Sluice: TTFT cold / repeat", f"{s['cold_over_repeat_ratio']:.1f}x", ">= 10",
                   s["cold_over_repeat_ratio"] >= 10)  # fmt: skip


def l4_derivation(doc: Doc) -> Iterator[Headline]:
    step = doc["l4_step_time_us"]
    yield Headline(
        "L4 step: base / prefill per token", f"{step['base_us']:.0f} / {step['prefill_us_per_token']:.1f} us"
    )


def aiperf_crosscheck(doc: Doc) -> Iterator[Headline]:
    rows = [r for r in _figures(doc)["comparison"] if r["metric"] != "chunk_gap_ms" and r["ratio"]]
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1))  # issue 4 item 7: within 10 %
    gap = abs(worst["ratio"] - 1)
    label = f"ours vs aiperf, worst ({worst['metric']} {worst['stat']})"
    yield Headline(label, f"{gap:.1%}", "<= 10%", gap <= 0.10)


def peers(doc: Doc) -> Iterator[Headline]:
    rows = _figures(doc)["rows"]
    base = baseline_of(rows)
    if base is None:
        yield Headline("no round-robin baseline in this run", "-")
        return
    sluice = [r for r in rows if r["family"] == "sluice" and r["policy"] == "sluice_predictive"]
    others = [r for r in rows if r["family"] != "sluice" and r is not base]
    best_peer = max(others, key=lambda r: r["summary"]["goodput_rps"] or 0.0, default=None)
    for row in [*sluice, *([best_peer] if best_peer else [])]:
        r = ratios(row, base)
        ttft = "-" if r["ttft_p99_ms"] is None else f"{r['ttft_p99_ms']:.2f}x"
        # SLO ok (share of sent requests meeting both SLOs) next to goodput in req/s, which also
        # rewards a run that simply ended sooner.
        slo = row["summary"]["slo_attainment_frac"] or 0.0
        value = f"goodput {r['goodput_rps'] or 0:.2f}x, SLO ok {slo:.0%}, TTFT p99 {ttft}"
        yield Headline(f"{row['router']} vs {base['router']}", value)


READERS: dict[str, Callable[[Doc], Iterator[Headline]]] = {
    "overhead": overhead,
    "decision_cost": decision_cost,
    "predictor_speed": predictor_speed,
    "predictor_eval": predictor_eval,
    "latency_sim_eval": latency_sim_eval,
    "latency_sim_eval_x4": latency_sim_eval,
    "sim_agreement": sim_agreement,
    "sim_virtual_speed_round_robin": sim_virtual_speed,
    "sim_capacity": sim_capacity,
    "client_capacity": client_capacity,
    "engine_metrics_parse": engine_metrics_parse,
    "llamacpp_prefix": llamacpp_prefix,
    "llamacpp_through_sluice": llamacpp_through_sluice,
    "l4_derivation": l4_derivation,
    "aiperf_crosscheck": aiperf_crosscheck,
    "peers_prefix": peers,
    "peers_hetero": peers,
    "peers_issue6": peers,
}


def headlines(path: Path) -> list[Headline]:
    """The file's headline figures; ``[]`` for a file without a reader. Raises on a malformed file."""
    reader = READERS.get(path.stem)
    if reader is None:
        return []
    return list(reader(json.loads(path.read_text())))


def git_rev_of(path: Path) -> str:
    """The revision a result was produced at, as the file records it (short form)."""
    rev = json.loads(path.read_text()).get("git_rev") or "?"
    return str(rev)[:12] + ("-dirty" if str(rev).endswith("-dirty") else "")
