"""``arxiv``: arXiv summarisation request lengths (Vidur): long prompts, short outputs.

Source: ``arxiv_summarization/arxiv_summarization_stats_llama2_tokenizer.csv.gz``
(MIT), columns ``num_prefill_tokens``, ``num_decode_tokens``,
``num_total_tokens``, ``pd_ratio`` (Llama-2 tokenizer, ≤ 4k total). The file
has no timestamps: rows are drawn uniformly with replacement (seeded) and sent
by a renewal process at ``rate_rps`` (``burstiness`` k as in vLLM: Gamma gaps,
k = 1 Poisson) for ``span_s`` seconds. ``rate_scale`` multiplies the rate.
Prompt text is unique synthetic text of ``num_prefill_tokens`` tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pydantic import Field

from loadgen.workloads.arrivals import renewal_times
from loadgen.workloads.base import Draft, SourceContext, WorkloadParams, register
from loadgen.workloads.errors import WorkloadError
from loadgen.workloads.files import finite_float, iter_csv, non_negative_int, parse_field
from loadgen.workloads.text import chat_content_chars, tokens_to_chars, unique_text

FILE = "arxiv_summarization/arxiv_summarization_stats_llama2_tokenizer.csv.gz"
COLUMNS = ("num_prefill_tokens", "num_decode_tokens", "num_total_tokens", "pd_ratio")


class ArxivParams(WorkloadParams):
    trace: str | None = Field(None, description="CSV file to read instead of the shared data copy")
    rate_rps: float = Field(1.0, gt=0)
    burstiness: float = Field(1.0, gt=0, description="Gamma shape of gaps (1 = Poisson)")
    span_s: float = Field(600.0, gt=0, description="source seconds generated")


def read_rows(path: Path) -> list[tuple[int, int]]:
    rows = []
    for line_no, row in iter_csv(path, COLUMNS):
        prefill = parse_field(row, "num_prefill_tokens", non_negative_int, path, line_no)
        decode = parse_field(row, "num_decode_tokens", non_negative_int, path, line_no)
        parse_field(row, "num_total_tokens", non_negative_int, path, line_no)
        parse_field(row, "pd_ratio", finite_float, path, line_no)
        rows.append((max(1, prefill), max(1, decode)))
    if not rows:
        raise WorkloadError("no data rows", path=str(path))
    return rows


@register("arxiv", ArxivParams, "arXiv summarisation lengths (long prompt, short output), Poisson/Gamma")
def arxiv(params: ArxivParams, ctx: SourceContext) -> Iterator[Draft]:
    rows = read_rows(ctx.data_file(params.trace, FILE))
    return _drafts(rows, params, ctx)


def _drafts(rows: list[tuple[int, int]], params: ArxivParams, ctx: SourceContext) -> Iterator[Draft]:
    arrival_rng, pick_rng = ctx.rng("arrivals"), ctx.rng("rows")
    rate_rps = params.rate_rps * ctx.options.rate_scale
    chat = ctx.options.endpoint == "chat"
    for serial, t_s in enumerate(renewal_times(arrival_rng, rate_rps, 0.0, params.span_s, params.burstiness)):
        prompt_tokens, output_tokens = rows[pick_rng.randrange(len(rows))]
        key = f"arxiv-{serial:06d}"
        n_chars = chat_content_chars(prompt_tokens) if chat else tokens_to_chars(prompt_tokens)
        yield Draft(key, t_s, unique_text(key, n_chars), output_tokens, prompt_tokens)
