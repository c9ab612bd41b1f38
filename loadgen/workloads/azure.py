"""``azure_code`` / ``azure_conv``: the Azure LLM trace 2023 (Splitwise), replayed with its own timing.

Source: ``azure_llm_2023/AzureLLMInferenceTrace_{code,conv}.csv.gz`` (CC-BY-4.0),
columns ``TIMESTAMP`` (``YYYY-MM-DD HH:MM:SS.fffffff``, sorted), ``ContextTokens``,
``GeneratedTokens``. Times are taken relative to the first row. Prompt text is
not published, so each request gets unique synthetic text of exactly
``ContextTokens`` estimated tokens (``loadgen.workloads.text``); the output
length is ``GeneratedTokens``. The code trace is extremely bursty (up to 67
requests in one second); that burstiness is the point of replaying it as is.

The whole file is parsed before the first request is produced (8.8k / 19.4k
small rows), so a malformed row stops a run before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from loadgen.workloads.base import Draft, SourceContext, WorkloadParams, register
from loadgen.workloads.errors import WorkloadError
from loadgen.workloads.files import iter_csv, non_negative_int, parse_field
from loadgen.workloads.text import chat_content_chars, tokens_to_chars, unique_text

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
FILES = {
    "code": "azure_llm_2023/AzureLLMInferenceTrace_code.csv.gz",
    "conv": "azure_llm_2023/AzureLLMInferenceTrace_conv.csv.gz",
}


class AzureParams(WorkloadParams):
    trace: str | None = Field(None, description="CSV file to read instead of the shared data copy")


def _timestamp_s(value: str) -> float:
    # Seven fractional digits (100 ns); datetime takes at most six.
    head, _, frac = value.strip().partition(".")
    if len(head) != 19 or (frac and not frac.isdigit()):
        raise ValueError("bad timestamp")
    whole = datetime.fromisoformat(head).replace(tzinfo=UTC)
    return whole.timestamp() + (float("0." + frac) if frac else 0.0)


def read_rows(path: Path) -> list[tuple[float, int, int]]:
    """``(seconds from the first row, prompt tokens, output tokens)`` per row."""
    rows: list[tuple[float, int, int]] = []
    first_s: float | None = None
    previous_s = float("-inf")
    for line_no, row in iter_csv(path, COLUMNS):
        t_s = parse_field(row, "TIMESTAMP", _timestamp_s, path, line_no, "expected YYYY-MM-DD HH:MM:SS.fff")
        if t_s < previous_s:
            raise WorkloadError("timestamps must be sorted ascending", path=str(path), row=line_no)
        previous_s = t_s
        if first_s is None:
            first_s = t_s
        prompt = parse_field(row, "ContextTokens", non_negative_int, path, line_no)
        output = parse_field(row, "GeneratedTokens", non_negative_int, path, line_no)
        rows.append((t_s - first_s, max(1, prompt), max(1, output)))
    if not rows:
        raise WorkloadError("no data rows", path=str(path))
    return rows


def _generate(kind: str, params: AzureParams, ctx: SourceContext) -> Iterator[Draft]:
    # Parse eagerly (before returning the iterator) so bad rows fail before the run starts.
    rows = read_rows(ctx.data_file(params.trace, FILES[kind]))
    return _drafts(kind, rows, ctx)


def _drafts(kind: str, rows: list[tuple[float, int, int]], ctx: SourceContext) -> Iterator[Draft]:
    rng = ctx.rng("copies")
    chat = ctx.options.endpoint == "chat"
    for index, (t_s, prompt_tokens, output_tokens) in enumerate(rows):
        for copy in range(ctx.copies(rng)):
            key = f"azure-{kind}-{index:06d}" + (f"-c{copy}" if copy else "")
            n_chars = chat_content_chars(prompt_tokens) if chat else tokens_to_chars(prompt_tokens)
            yield Draft(key, t_s, unique_text(key, n_chars), output_tokens, prompt_tokens)


@register("azure_code", AzureParams, "Azure 2023 code trace: real timestamps and lengths, very bursty")
def azure_code(params: AzureParams, ctx: SourceContext) -> Iterator[Draft]:
    return _generate("code", params, ctx)


@register("azure_conv", AzureParams, "Azure 2023 conversation trace: real timestamps and lengths")
def azure_conv(params: AzureParams, ctx: SourceContext) -> Iterator[Draft]:
    return _generate("conv", params, ctx)
