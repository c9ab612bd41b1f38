"""PNG figures of a benchmark matrix, one set per (fleet, workload) (matplotlib, Agg backend).

* ``headline``: goodput, SLO attainment, TTFT p99 (log scale) and TPOT p99 per policy at each load
  level; bars are means across seeds, whiskers the 95% confidence intervals;
* ``ttft_cdf``: TTFT distribution per policy at each load level (seed-averaged quantile curves);
* ``backend_share``: each backend's share of requests per policy at each load level.

Every function takes the aggregated rows (``loadgen.bench.aggregate``) and returns PNG bytes, or
``None`` when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadgen.bench.aggregate import CDF_POINTS

Row = Mapping[str, Any]
_PANELS = (
    ("goodput_rps", "goodput (req/s)", False),
    ("slo_attainment_frac", "SLO attainment", False),
    ("ttft_p99_ms", "TTFT p99 (ms)", True),
    ("tpot_p99_ms", "TPOT p99 (ms)", False),
)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _select(rows: Sequence[Row], fleet: str, workload: str) -> tuple[list[float], list[str], dict[Any, Row]]:
    chosen = [r for r in rows if r["fleet"] == fleet and r["workload"] == workload]
    loads = sorted({float(r["load_level"]) for r in chosen})
    policies = list(dict.fromkeys(r["policy"] for r in chosen))
    table = {(float(r["load_level"]), r["policy"]): r for r in chosen}
    return loads, policies, table


def _bars(ax: Axes, loads: list[float], policies: list[str], table: Mapping[Any, Row], metric: str) -> None:
    width = 0.8 / max(1, len(policies))
    x = np.arange(len(loads))
    for i, policy in enumerate(policies):
        means, low, high = [], [], []
        for load in loads:
            stat = table.get((load, policy), {}).get("metrics", {}).get(metric, {})
            mean = stat.get("mean")
            ci = stat.get("ci95")
            means.append(np.nan if mean is None else mean)
            low.append(0.0 if mean is None or ci is None else max(0.0, mean - max(ci[0], 0.0)))
            high.append(0.0 if mean is None or ci is None else max(0.0, ci[1] - mean))
        ax.bar(
            x + (i - (len(policies) - 1) / 2) * width, means, width, yerr=[low, high], capsize=2, label=policy
        )
    ax.set_xticks(x, [f"{load:g}x" for load in loads])
    ax.set_xlabel("offered load (fraction of capacity)")


def headline(rows: Sequence[Row], fleet: str, workload: str) -> bytes | None:
    loads, policies, table = _select(rows, fleet, workload)
    if not policies:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11.0, 7.0))
    for ax, (metric, label, log) in zip(axes.flat, _PANELS, strict=True):
        _bars(ax, loads, policies, table, metric)
        ax.set_ylabel(label)
        if log:
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize="small", ncol=2)
    fig.suptitle(f"{workload} on {fleet} (mean and 95% CI across seeds)")
    return _png(fig)


def ttft_cdf(rows: Sequence[Row], fleet: str, workload: str) -> bytes | None:
    loads, policies, table = _select(rows, fleet, workload)
    if not policies:
        return None
    fig, axes = plt.subplots(1, len(loads), figsize=(5.5 * len(loads), 4.0), squeeze=False)
    quantiles = np.asarray(CDF_POINTS) / 100.0
    drawn = False
    for ax, load in zip(axes.flat, loads, strict=True):
        for policy in policies:
            curve = table.get((load, policy), {}).get("cdf", {}).get("ttft_ms")
            if curve:
                ax.plot(np.maximum(np.asarray(curve), 1e-3), quantiles, label=policy)
                drawn = True
        ax.set_xscale("log")
        ax.set_xlabel("TTFT (ms)")
        ax.set_ylabel("fraction of completed requests")
        ax.set_title(f"load {load:g}x")
        ax.grid(True, alpha=0.3)
    if not drawn:
        plt.close(fig)
        return None
    axes.flat[0].legend(fontsize="small")
    return _png(fig)


def backend_share(rows: Sequence[Row], fleet: str, workload: str) -> bytes | None:
    loads, policies, table = _select(rows, fleet, workload)
    backends = sorted({b for r in table.values() for b in r.get("by_backend", {})} - {"(none)"})
    if not policies or not backends:
        return None
    fig, axes = plt.subplots(1, len(loads), figsize=(5.5 * len(loads), 4.0), squeeze=False)
    for ax, load in zip(axes.flat, loads, strict=True):
        bottom = np.zeros(len(policies))
        for backend in backends:
            shares = [
                (
                    table.get((load, p), {})
                    .get("by_backend", {})
                    .get(backend, {})
                    .get("share_frac", {})
                    .get("mean")
                )
                or 0.0
                for p in policies
            ]
            ax.bar(range(len(policies)), shares, bottom=bottom, label=backend)
            bottom += np.asarray(shares)
        ax.set_xticks(range(len(policies)), policies, rotation=45, ha="right", fontsize="small")
        ax.set_ylabel("share of requests")
        ax.set_title(f"load {load:g}x")
    axes.flat[-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


FIGURES = (
    ("headline", "Goodput, SLO attainment and tail latency", headline),
    ("ttft_cdf", "TTFT distribution", ttft_cdf),
    ("backend_share", "Share of requests per backend", backend_share),
)
