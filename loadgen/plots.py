"""PNG plots of a run (matplotlib, Agg backend: no display needed).

Each function takes the records (and optional backend samples) and returns
PNG bytes, or ``None`` when the run has nothing to show for that plot (e.g.
no 429s, no KV samples). Time axes are seconds since run start, binned into
``bin_s`` (about 100 bins across the run, at least 1 s).
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from loadgen.records import BackendSample, Outcome, RequestRecord

_FIGSIZE = (9.0, 4.2)
_MAX_BACKENDS = 12


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _span_s(records: Sequence[RequestRecord]) -> float:
    ends = [r.end_s for r in records if r.end_s is not None]
    starts = [r.scheduled_s for r in records]
    return max(ends + starts + [1.0])


def bin_width_s(records: Sequence[RequestRecord]) -> float:
    return max(1.0, _span_s(records) / 100.0)


def _counts(times: Sequence[float], bin_s: float, n_bins: int) -> np.ndarray:
    hist, _ = np.histogram(times, bins=n_bins, range=(0.0, n_bins * bin_s))
    return hist.astype(float)


def latency_cdfs(records: Sequence[RequestRecord]) -> bytes | None:
    ok = [r for r in records if r.outcome is Outcome.OK]
    if not ok:
        return None
    series = {
        "TTFT (ms)": [r.ttft_ms for r in ok if r.ttft_ms is not None],
        "TPOT (ms)": [t for r in ok if (t := r.tpot_ms) is not None],
        "ITL, chunk gaps (ms)": [g for r in ok for g in r.itl_ms],
        "E2E (ms)": [r.e2e_ms for r in ok if r.e2e_ms is not None],
    }
    fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.5))
    for ax, (label, values) in zip(axes.flat, series.items(), strict=True):
        ax.set_title(label)
        if not values:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            continue
        xs = np.sort(np.asarray(values, dtype=float))
        ys = np.arange(1, len(xs) + 1) / len(xs)
        ax.plot(xs, ys, drawstyle="steps-post")
        positive = xs[xs > 0]
        if len(positive) and positive.max() / max(positive.min(), 1e-9) > 100:
            ax.set_xscale("log")
        for q in (0.5, 0.9, 0.99):
            ax.axhline(q, color="grey", linewidth=0.5, linestyle=":")
        ax.set_ylabel("fraction of requests" if "ITL" not in label else "fraction of gaps")
        ax.grid(True, alpha=0.3)
    return _png(fig)


def ttft_over_time(records: Sequence[RequestRecord]) -> bytes | None:
    points = [(r.sent_s, r.ttft_ms) for r in records if r.sent_s is not None and r.ttft_ms is not None]
    if not points:
        return None
    bin_s = bin_width_s(records)
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    xs, ys = zip(*points, strict=True)
    ax.scatter(xs, ys, s=4, alpha=0.35, label="request")
    by_bin: dict[int, list[float]] = defaultdict(list)
    for x, y in points:
        by_bin[int(x // bin_s)].append(y)
    centers = sorted(by_bin)
    for q, style in ((50, "-"), (99, "--")):
        ax.plot(
            [(c + 0.5) * bin_s for c in centers],
            [float(np.percentile(by_bin[c], q)) for c in centers],
            style,
            label=f"p{q} per {bin_s:g} s",
        )
    ax.set_xlabel("send time (s)")
    ax.set_ylabel("TTFT (ms)")
    if max(ys) / max(min(ys), 1e-9) > 100:
        ax.set_yscale("log")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def throughput_over_time(records: Sequence[RequestRecord]) -> bytes | None:
    if not records:
        return None
    bin_s = bin_width_s(records)
    n_bins = int(np.ceil(_span_s(records) / bin_s))
    offered = _counts([r.scheduled_s for r in records], bin_s, n_bins) / bin_s
    ok = [(r.end_s, r.output_tokens) for r in records if r.outcome is Outcome.OK and r.end_s is not None]
    done = _counts([t for t, _ in ok], bin_s, n_bins) / bin_s
    tokens, _ = np.histogram(
        [t for t, _ in ok], bins=n_bins, range=(0.0, n_bins * bin_s), weights=[n for _, n in ok]
    )
    xs = (np.arange(n_bins) + 0.5) * bin_s
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    ax.plot(xs, offered, label="offered (req/s)")
    ax.plot(xs, done, label="completed (req/s)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests/s")
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(xs, tokens / bin_s, color="tab:green", alpha=0.6, label="output tokens/s")
    ax2.set_ylabel("output tokens/s")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left")
    return _png(fig)


def shed_over_time(records: Sequence[RequestRecord]) -> bytes | None:
    kinds = {Outcome.SHED: "shed (429)", Outcome.UNAVAILABLE: "unavailable (503)", Outcome.ERROR: "errors"}
    events = {o: [r.sent_s for r in records if r.outcome is o and r.sent_s is not None] for o in kinds}
    if not any(events.values()):
        return None
    bin_s = bin_width_s(records)
    n_bins = int(np.ceil(_span_s(records) / bin_s))
    xs = (np.arange(n_bins) + 0.5) * bin_s
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    for outcome, label in kinds.items():
        if events[outcome]:
            ax.plot(xs, _counts(events[outcome], bin_s, n_bins) / bin_s, label=label)
    ax.set_xlabel("send time (s)")
    ax.set_ylabel("requests/s")
    ax.legend(loc="upper left")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def backend_load(records: Sequence[RequestRecord]) -> bytes | None:
    """Requests in flight per backend over time (from send and end times)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        if r.backend is not None and r.sent_s is not None and r.end_s is not None:
            spans[r.backend].append((r.sent_s, r.end_s))
    if not spans:
        return None
    bin_s = bin_width_s(records) / 2
    n_bins = int(np.ceil(_span_s(records) / bin_s)) + 1
    grid = np.arange(n_bins) * bin_s
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    busiest = sorted(spans, key=lambda b: -len(spans[b]))[:_MAX_BACKENDS]
    for backend in sorted(busiest):
        starts = np.sort([s for s, _ in spans[backend]])
        ends = np.sort([e for _, e in spans[backend]])
        in_flight = np.searchsorted(starts, grid, side="right") - np.searchsorted(ends, grid, side="right")
        ax.plot(grid, in_flight, label=f"{backend} ({len(spans[backend])} req)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests in flight")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def kv_usage(records: Sequence[RequestRecord], samples: Sequence[BackendSample] = ()) -> bytes | None:
    """KV-cache use per backend: from backend samples, else from the value records carry at completion."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in samples:
        if s.kv_usage_frac is not None:
            series[s.backend].append((s.t_s, s.kv_usage_frac))
    if not series:
        for r in records:
            if r.kv_usage_frac is not None and r.backend is not None and r.end_s is not None:
                series[r.backend].append((r.end_s, r.kv_usage_frac))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    for backend in sorted(series)[:_MAX_BACKENDS]:
        points = sorted(series[backend])
        ax.plot([t for t, _ in points], [100 * v for _, v in points], label=backend)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("KV cache used (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(True, alpha=0.3)
    return _png(fig)
