"""Training pairs for the output-length predictor, built from the real text sets in ``shared/data``.

Each pair is the ``RequestFeatures`` the proxy would have built for a chat
request (through ``core.features.build_features``, the same function the data
plane calls, so training and serving see identical features) and the true
number of output tokens of the reply that followed.

Sources (``shared/data/README.md`` §2):

* ``sharegpt``: every assistant reply that directly follows a user turn, with
  the conversation chunk so far as the request's messages. Model id
  ``chatgpt`` (the ``from`` field of 99.98% of replies is ``gpt``).
* ``alpaca_eval``: 805 single-turn instructions x 30 models' answers; the
  model id is the result directory name, so per-model verbosity is learnable.
* ``hh_rlhf``: every assistant reply of the ``chosen`` transcripts that
  follows a human turn; model id ``anthropic-hh-52b``.

Output lengths are the ``tok(mistral-v1)`` counts stored in the data (the
SentencePiece model in ``shared/data/tokenizer``), so no tokenizer runs here.
``group`` keeps every pair of one conversation or one instruction together so
that a held-out split never leaks the same prompt into training.

Reading happens only in the offline CLI (``sluice predict train|eval``), never
on the request path.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.features import build_features
from core.types import Endpoint, RequestFeatures

DATA_DIR_ENV = "SLUICE_DATA_DIR"
DEFAULT_DATA_DIR = Path("/work/shared/data")
SOURCES: tuple[str, ...] = ("sharegpt", "alpaca_eval", "hh_rlhf")

SHAREGPT_FILE = "sharegpt/sharegpt_v3_first17671.jsonl.gz"
ALPACA_INSTRUCTIONS_FILE = "alpaca_eval/instructions.jsonl.gz"
ALPACA_OUTPUTS_FILE = "alpaca_eval/model_outputs.jsonl.gz"
HH_FILE = "hh_rlhf/harmless_base_test_parsed.jsonl.gz"
SOURCE_FILES: dict[str, tuple[str, ...]] = {
    "sharegpt": (SHAREGPT_FILE,),
    "alpaca_eval": (ALPACA_INSTRUCTIONS_FILE, ALPACA_OUTPUTS_FILE),
    "hh_rlhf": (HH_FILE,),
}

SHAREGPT_MODEL = "chatgpt"
HH_MODEL = "anthropic-hh-52b"


class TrainingDataError(Exception):
    """The shared data directory is missing a file or holds something unreadable."""


@dataclass(frozen=True, slots=True)
class LengthSample:
    """One request and the true length of its reply."""

    features: RequestFeatures
    output_tokens: int
    source: str
    group: str


def data_dir(explicit: str | Path | None = None) -> Path:
    """``explicit``, else ``$SLUICE_DATA_DIR``, else ``/work/shared/data``."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


def _read_jsonl_gz(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise TrainingDataError(f"{path}: not found (set --data-dir or ${DATA_DIR_ENV})")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TrainingDataError(f"{path}:{line_no}: bad JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise TrainingDataError(f"{path}:{line_no}: expected a JSON object")
                yield row
    except (OSError, EOFError) as exc:
        raise TrainingDataError(f"{path}: unreadable ({exc})") from None


def _features(request_id: str, model: str, messages: list[dict[str, str]]) -> RequestFeatures:
    return build_features(
        request_id=request_id,
        endpoint=Endpoint.CHAT,
        body={"model": model, "messages": messages},
        route="default",
        tenant="default",
        priority="standard",
        arrival_s=0.0,
    )


def _dialogue_samples(
    messages: Sequence[dict[str, Any]], model: str, source: str, group: str, id_prefix: str
) -> Iterator[LengthSample]:
    """One sample per assistant message that directly follows a user message."""
    history: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        text = message.get("text")
        n_tokens = message.get("n_tokens")
        if not isinstance(role, str) or not isinstance(text, str):
            continue
        if role == "assistant" and history and history[-1]["role"] == "user" and isinstance(n_tokens, int):
            yield LengthSample(
                _features(f"{id_prefix}:{index}", model, list(history)), n_tokens, source, group
            )
        history.append({"role": role, "content": text})


def load_sharegpt(root: Path) -> Iterator[LengthSample]:
    for row in _read_jsonl_gz(root / SHAREGPT_FILE):
        chunk_id = str(row.get("id", ""))
        conversation = chunk_id.rsplit("_", 1)[0]
        messages = row.get("messages")
        if isinstance(messages, list):
            yield from _dialogue_samples(messages, SHAREGPT_MODEL, "sharegpt", conversation, chunk_id)


def load_alpaca_eval(root: Path) -> Iterator[LengthSample]:
    instructions: dict[int, str] = {}
    for row in _read_jsonl_gz(root / ALPACA_INSTRUCTIONS_FILE):
        instruction_id, text = row.get("instruction_id"), row.get("instruction")
        if isinstance(instruction_id, int) and isinstance(text, str):
            instructions[instruction_id] = text
    for row in _read_jsonl_gz(root / ALPACA_OUTPUTS_FILE):
        instruction_id, model, n_tokens = (
            row.get("instruction_id"),
            row.get("model"),
            row.get("output_tokens"),
        )
        if not (isinstance(instruction_id, int) and isinstance(model, str) and isinstance(n_tokens, int)):
            continue
        text = instructions.get(instruction_id)
        if text is None:
            continue
        features = _features(f"alpaca:{model}:{instruction_id}", model, [{"role": "user", "content": text}])
        yield LengthSample(features, n_tokens, "alpaca_eval", f"alpaca:{instruction_id}")


def load_hh_rlhf(root: Path) -> Iterator[LengthSample]:
    for row in _read_jsonl_gz(root / HH_FILE):
        transcript = row.get("chosen")
        if isinstance(transcript, list):
            group = f"hh:{row.get('id')}"
            yield from _dialogue_samples(transcript, HH_MODEL, "hh_rlhf", group, group)


_LOADERS = {"sharegpt": load_sharegpt, "alpaca_eval": load_alpaca_eval, "hh_rlhf": load_hh_rlhf}


def load_samples(sources: Sequence[str], root: str | Path | None = None) -> list[LengthSample]:
    """All samples of ``sources`` (names from ``SOURCES``), in file order."""
    base = data_dir(root)
    out: list[LengthSample] = []
    for source in sources:
        loader = _LOADERS.get(source)
        if loader is None:
            raise TrainingDataError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
        out.extend(loader(base))
    return out


def data_hash(sources: Sequence[str], root: str | Path | None = None) -> str:
    """SHA-256 over the names and bytes of the files ``sources`` read: the model's data provenance."""
    base = data_dir(root)
    digest = hashlib.sha256()
    for source in sorted(sources):
        for relative in SOURCE_FILES[source]:
            path = base / relative
            if not path.is_file():
                raise TrainingDataError(f"{path}: not found (set --data-dir or ${DATA_DIR_ENV})")
            digest.update(relative.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()
