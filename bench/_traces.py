"""Small trace readers for the simulator benchmarks (the full workload library lives in loadgen/).

``azure_conv`` turns the Azure LLM inference 2023 conversation trace into ``WorkloadRequest``s:
arrival = seconds since the first row, prompt text of exactly ``ContextTokens`` estimated tokens
(``core.tokens``: 4 characters per token, chat rendering overhead included), unique per request
(the trace has no text, so no prefix sharing is invented), ``true_output_tokens = GeneratedTokens``.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from core.types import Endpoint
from loadgen.workload import WorkloadRequest

DATA = Path("/work/shared/data")
_CHAT_OVERHEAD_CHARS = len("user\n\n\n")


def chat_body(model: str, prompt_tokens: int, salt: str, stream: bool = True) -> dict[str, object]:
    """A chat body whose rendered prompt is exactly ``prompt_tokens`` estimated tokens."""
    chars = max(1, 4 * prompt_tokens - _CHAT_OVERHEAD_CHARS)
    unit = f"{salt} lorem ipsum dolor sit amet "
    text = (unit * (chars // len(unit) + 1))[:chars]
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def azure_conv(
    limit: int | None = None,
    duration_s: float | None = None,
    model: str = "llama-3.1-8b",
    max_prompt: int = 30_000,
) -> Iterator[WorkloadRequest]:
    path = DATA / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv.gz"
    with gzip.open(path, "rt", newline="") as fh:
        t0: datetime | None = None
        for i, row in enumerate(csv.DictReader(fh)):
            if limit is not None and i >= limit:
                return
            stamp = datetime.fromisoformat(row["TIMESTAMP"][:26])
            t0 = t0 or stamp
            arrival = (stamp - t0).total_seconds()
            if duration_s is not None and arrival > duration_s:
                return
            prompt = min(int(row["ContextTokens"]), max_prompt)
            yield WorkloadRequest(
                request_id=f"az-{i}",
                arrival_s=arrival,
                endpoint=Endpoint.CHAT,
                body=chat_body(model, prompt, f"r{i}"),
                true_output_tokens=int(row["GeneratedTokens"]),
                source="azure_conv_2023",
                trace_prompt_tokens=prompt,
            )
