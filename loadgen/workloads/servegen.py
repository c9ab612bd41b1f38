"""``servegen``: multi-tenant arrivals from ServeGen's per-client 10-minute windows (Alibaba Bailian).

Source: ``servegen/client_arrival_windows.csv.gz`` (one row per client and
600 s window with traffic: ``rate_rps``, ``iat_distribution`` Gamma|Weibull,
``iat_shape``, ``iat_scale``) and ``servegen/client_length_windows.csv.gz``
(per client and 6 h window: mean/p50/p90/p99/max of ``input_tokens`` and
``output_tokens``; ``text_tokens`` stands in for the input of ``mm-image``).
Apache-2.0, Xiang et al. 2025.

Arrivals, as ServeGen's generator does: in each window a client sends
``N = round(rate_rps · 600 · rate_scale)`` requests (stochastic rounding).
``N + 1`` gaps are drawn from the fitted law — ``Gamma(shape)`` or
``Weibull(shape)`` — and rescaled so they fill the window exactly, so the shape
(burstiness) comes from the fit and the count from the published rate.
Each client is one tenant (``client-<id>``).

Lengths: drawn per request from the client's latest length window by inverse
CDF through the points (0, p0), (0.5, p50), (0.9, p90), (0.99, p99), (1, max):
linear below the median, geometric (log-linear) above it, because length tails
are heavy and linear interpolation there would inflate the mean. p0 is chosen so
the distribution's mean equals the published mean, clamped to [1, p50]; when
the upper quantiles alone already exceed the mean (p0 clamps to 1) the sampled
mean is somewhat higher than published. Clients without length windows (the 55
largest, whose PMFs were not published) use the per-window median of the other
clients' statistics.

``span_s`` bounds the source time generated (default one hour from
``start_s``); ``clients`` selects ``all``, ``top:N`` (most requests in that
span) or a comma-separated list of client ids.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from loadgen.workloads.arrivals import stochastic_round
from loadgen.workloads.base import Draft, SourceContext, WorkloadParams, register
from loadgen.workloads.errors import WorkloadError
from loadgen.workloads.files import finite_float, iter_csv, non_negative_int, parse_field
from loadgen.workloads.text import chat_content_chars, tokens_to_chars, unique_text

WINDOW_S = 600.0
ARRIVAL_FILE = "servegen/client_arrival_windows.csv.gz"
LENGTH_FILE = "servegen/client_length_windows.csv.gz"
ARRIVAL_COLUMNS = (
    "category", "model", "client_id", "window_start_s", "rate_rps", "cv",
    "iat_distribution", "iat_shape", "iat_scale",
)  # fmt: skip
LENGTH_COLUMNS = (
    "category",
    "model",
    "client_id",
    "window_start_s",
    "field",
    "mean",
    "p50",
    "p90",
    "p99",
    "max",
)
ServeGenModel = Literal["m-large", "m-mid", "m-small", "deepseek-r1", "mm-image"]


class ServeGenParams(WorkloadParams):
    model: ServeGenModel = "m-large"
    clients: str = Field("all", description="all | top:N | comma-separated client ids")
    span_s: float = Field(3600.0, gt=0, description="source seconds generated from start_s")
    arrival_trace: str | None = Field(None, description="client_arrival_windows CSV to read instead")
    length_trace: str | None = Field(None, description="client_length_windows CSV to read instead")


@dataclass(frozen=True, slots=True)
class ArrivalWindow:
    client_id: str
    start_s: float
    rate_rps: float
    law: str
    shape: float


@dataclass(frozen=True, slots=True)
class LengthSummary:
    """Published quantiles of one length PMF, sampled by inverse CDF (see the module docstring)."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    def _points(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        upper = _log_mean(self.p50, self.p90) * 0.4 + _log_mean(self.p90, self.p99) * 0.09
        upper += _log_mean(self.p99, self.max) * 0.01
        # Mean of the lower half (linear from p0 to p50) is (p0 + p50) / 4 per unit of probability.
        p0 = min(max(1.0, 4.0 * (self.mean - upper) - self.p50), self.p50)
        return (0.0, 0.5, 0.9, 0.99, 1.0), (p0, self.p50, self.p90, self.p99, self.max)

    def sample(self, rng: random.Random) -> int:
        xs, ys = self._points()
        u = rng.random()
        i = min(bisect.bisect_right(xs, u) - 1, len(xs) - 2)
        frac = (u - xs[i]) / (xs[i + 1] - xs[i])
        low, high = ys[i], ys[i + 1]
        geometric = i > 0 and 0 < low < high
        value = low * (high / low) ** frac if geometric else low + (high - low) * frac
        return max(1, round(value))


def _log_mean(low: float, high: float) -> float:
    """Mean of a log-linear (geometric) interpolation between two quantiles."""
    if low <= 0 or high <= low:
        return (low + high) / 2.0
    return (high - low) / math.log(high / low)


def read_arrivals(path: Path, model: str, start_s: float, end_s: float) -> list[ArrivalWindow]:
    """Windows of ``model`` overlapping ``[start_s, end_s)``, time-sorted; memoised per file version."""
    stat = path.stat() if path.is_file() else None
    if stat is None:
        return list(_read_arrivals(path, model, start_s, end_s))
    return list(_cached_arrivals(str(path), stat.st_mtime_ns, stat.st_size, model, start_s, end_s))


@functools.lru_cache(maxsize=4)
def _cached_arrivals(
    path: str, mtime_ns: int, size: int, model: str, start_s: float, end_s: float
) -> tuple[ArrivalWindow, ...]:
    # Parsing the 251k-row file takes about a second; a rate search rebuilds the workload many times.
    return _read_arrivals(Path(path), model, start_s, end_s)


def _read_arrivals(path: Path, model: str, start_s: float, end_s: float) -> tuple[ArrivalWindow, ...]:
    out: list[ArrivalWindow] = []
    for line_no, row in iter_csv(path, ARRIVAL_COLUMNS):
        if row["model"] != model:
            continue
        window_s = parse_field(row, "window_start_s", finite_float, path, line_no)
        if window_s + WINDOW_S <= start_s or window_s >= end_s:
            continue
        law = row["iat_distribution"]
        if law not in ("Gamma", "Weibull"):
            raise WorkloadError(
                f"iat_distribution {law!r} is not Gamma or Weibull", path=str(path), row=line_no
            )
        shape = parse_field(row, "iat_shape", finite_float, path, line_no)
        rate = parse_field(row, "rate_rps", finite_float, path, line_no)
        if shape <= 0 or rate < 0:
            raise WorkloadError("iat_shape must be > 0 and rate_rps >= 0", path=str(path), row=line_no)
        out.append(ArrivalWindow(row["client_id"], window_s, rate, law, shape))
    out.sort(key=lambda w: (w.start_s, w.client_id))
    return tuple(out)


class LengthTable:
    """Length summaries by (client, field), each a time-sorted list, plus per-window pooled medians."""

    def __init__(self) -> None:
        self.by_client: dict[tuple[str, str], list[tuple[float, LengthSummary]]] = defaultdict(list)
        self.pooled: dict[str, list[tuple[float, LengthSummary]]] = {}

    def lookup(self, client_id: str, field: str, t_s: float) -> LengthSummary:
        series = self.by_client.get((client_id, field)) or self.pooled[field]
        i = bisect.bisect_right([s for s, _ in series], t_s) - 1
        return series[max(i, 0)][1]


def read_lengths(path: Path, model: str) -> LengthTable:
    table = LengthTable()
    pooled: dict[tuple[str, float], list[LengthSummary]] = defaultdict(list)
    for line_no, row in iter_csv(path, LENGTH_COLUMNS):
        if row["model"] != model or row["field"] not in ("input_tokens", "text_tokens", "output_tokens"):
            continue
        field = "output_tokens" if row["field"] == "output_tokens" else "input_tokens"
        window_s = parse_field(row, "window_start_s", finite_float, path, line_no)
        stats = [
            parse_field(row, k, finite_float, path, line_no) for k in ("mean", "p50", "p90", "p99", "max")
        ]
        summary = LengthSummary(*stats)
        table.by_client[(row["client_id"], field)].append((window_s, summary))
        pooled[(field, window_s)].append(summary)
    for series in table.by_client.values():
        series.sort(key=lambda item: item[0])
    for (field, window_s), items in sorted(pooled.items(), key=lambda kv: kv[0][1]):
        median = LengthSummary(
            *(statistics.median(getattr(s, k) for s in items) for k in LengthSummary.__slots__)
        )
        table.pooled.setdefault(field, []).append((window_s, median))
    return table


def _select_clients(spec: str, windows: list[ArrivalWindow]) -> set[str]:
    known = {w.client_id for w in windows}
    if spec == "all":
        return known
    if spec.startswith("top:"):
        try:
            n = non_negative_int(spec[4:])
        except ValueError:
            raise WorkloadError(f"clients {spec!r}: expected top:N with N a positive integer") from None
        totals: dict[str, float] = defaultdict(float)
        for w in windows:
            totals[w.client_id] += w.rate_rps
        return set(sorted(totals, key=lambda c: (-totals[c], c))[:n])
    chosen = {c.strip() for c in spec.split(",") if c.strip()}
    unknown = sorted(chosen - known)
    if unknown:
        raise WorkloadError(f"clients {unknown} have no traffic in the selected span")
    return chosen


def window_times(rng: random.Random, window: ArrivalWindow, n: int) -> list[float]:
    """``n`` arrival times filling ``window`` with gaps of the fitted law (ServeGen's rescaling)."""
    if window.law == "Gamma":
        gaps = [rng.gammavariate(window.shape, 1.0) for _ in range(n + 1)]
    else:
        gaps = [rng.weibullvariate(1.0, window.shape) for _ in range(n + 1)]
    total = sum(gaps) or 1.0
    times, acc = [], 0.0
    for gap in gaps[:n]:
        acc += gap
        times.append(window.start_s + WINDOW_S * acc / total)
    return times


def _generate(params: ServeGenParams, ctx: SourceContext) -> Iterator[Draft]:
    start_s = ctx.options.start_s
    end_s = start_s + params.span_s
    if ctx.source_end_s is not None:
        end_s = min(end_s, ctx.source_end_s)
    windows = read_arrivals(ctx.data_file(params.arrival_trace, ARRIVAL_FILE), params.model, start_s, end_s)
    if not windows:
        raise WorkloadError(f"servegen model {params.model!r} has no traffic in [{start_s:g}, {end_s:g}) s")
    chosen = _select_clients(params.clients, windows)
    length_path = ctx.data_file(params.length_trace, LENGTH_FILE)
    lengths = read_lengths(length_path, params.model)
    if set(lengths.pooled) != {"input_tokens", "output_tokens"}:
        raise WorkloadError(
            f"no input and output length windows for model {params.model!r}", path=str(length_path)
        )
    return _drafts([w for w in windows if w.client_id in chosen], lengths, start_s, end_s, params, ctx)


def _drafts(
    windows: list[ArrivalWindow], lengths: LengthTable, start_s: float, end_s: float,
    params: ServeGenParams, ctx: SourceContext,
) -> Iterator[Draft]:  # fmt: skip
    rng, length_rng = ctx.rng("arrivals"), ctx.rng("lengths")
    chat = ctx.options.endpoint == "chat"
    serial = 0
    i = 0
    while i < len(windows):
        j = i
        batch: list[tuple[float, str]] = []
        while j < len(windows) and windows[j].start_s == windows[i].start_s:
            w = windows[j]
            n = stochastic_round(rng, w.rate_rps * WINDOW_S * ctx.options.rate_scale)
            batch.extend((t, w.client_id) for t in window_times(rng, w, n) if start_s <= t < end_s)
            j += 1
        i = j
        for t_s, client_id in sorted(batch):
            prompt_tokens = lengths.lookup(client_id, "input_tokens", t_s).sample(length_rng)
            output_tokens = lengths.lookup(client_id, "output_tokens", t_s).sample(length_rng)
            key = f"servegen-{params.model}-{serial:07d}"
            serial += 1
            n_chars = chat_content_chars(prompt_tokens) if chat else tokens_to_chars(prompt_tokens)
            yield Draft(
                key, t_s, unique_text(key, n_chars), output_tokens, prompt_tokens, f"client-{client_id}"
            )


@register("servegen", ServeGenParams, "ServeGen per-client windows: multi-tenant Gamma/Weibull arrivals")
def servegen(params: ServeGenParams, ctx: SourceContext) -> Iterator[Draft]:
    return _generate(params, ctx)
