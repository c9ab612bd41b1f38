"""SSE decoding and the TTFT / ITL / TPOT / E2E arithmetic, on exact timestamps."""

from __future__ import annotations

import orjson
import pytest

from loadgen.records import Outcome, RequestRecord
from loadgen.sender import parse_retry_after
from loadgen.stream import SSEDecoder, StreamTimer, chunk_text


def data(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def content(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_decoder_handles_split_lines_crlf_and_comments() -> None:
    decoder = SSEDecoder()
    stream = (
        b": ping\r\n" + data(content("a")).replace(b"\n", b"\r\n") + data(content("b")) + b"data: [DONE]\n\n"
    )
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    out = [p for piece in pieces for p in decoder.feed(piece)]
    assert [orjson.loads(p)["choices"][0]["delta"]["content"] for p in out[:2]] == ["a", "b"]
    assert out[2] == b"[DONE]"
    assert decoder.flush() == []


def test_decoder_flushes_an_unterminated_last_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.flush() == [b"[DONE]"]


def test_chunk_text_ignores_role_and_empty_chunks() -> None:
    assert chunk_text({"choices": [{"delta": {"role": "assistant", "content": ""}}]}) is None
    assert chunk_text({"choices": [{"delta": {"role": "assistant"}}]}) is None
    assert chunk_text({"choices": []}) is None
    assert chunk_text({"choices": [{"delta": {"reasoning_content": "hm"}}]}) == "hm"
    assert chunk_text({"choices": [{"text": "x", "index": 0}]}) == "x"
    assert chunk_text({"usage": {"completion_tokens": 3}}) is None


def test_timer_measures_from_the_first_non_empty_chunk() -> None:
    timer = StreamTimer(sent_s=10.0)
    timer.on_payload(10.100, orjson.dumps({"choices": [{"delta": {"role": "assistant", "content": ""}}]}))
    timer.on_payload(10.250, orjson.dumps(content("Hel")))
    timer.on_payload(10.300, orjson.dumps(content("lo")))
    timer.on_payload(10.400, orjson.dumps(content("!")))
    timer.on_payload(
        10.400, orjson.dumps({"choices": [], "usage": {"completion_tokens": 4, "prompt_tokens": 9}})
    )
    timer.on_payload(10.450, b"[DONE]")
    timer.finish(10.500)
    assert timer.first_s == 10.250
    assert timer.gaps_s == pytest.approx([0.05, 0.1])
    assert timer.end_s == 10.450  # [DONE], not the later connection close
    assert timer.output_tokens == 4 and timer.prompt_tokens == 9
    assert timer.content_chunks == 3


def test_output_tokens_fall_back_to_content_chunks() -> None:
    timer = StreamTimer(0.0)
    for t in (1.0, 2.0, 3.0):
        timer.on_payload(t, orjson.dumps(content("x")))
    assert timer.usage_tokens is None and timer.output_tokens == 3


def test_in_stream_error_is_recorded() -> None:
    timer = StreamTimer(0.0)
    timer.on_payload(1.0, orjson.dumps(content("x")))
    timer.on_payload(2.0, orjson.dumps({"error": {"code": "upstream_failed_mid_stream", "message": "boom"}}))
    assert timer.error == "upstream_failed_mid_stream"


def test_record_tpot_follows_the_definition() -> None:
    record = RequestRecord("r", 0.0, 10, outcome=Outcome.OK, ttft_ms=250.0, e2e_ms=450.0, output_tokens=3)
    assert record.tpot_ms == pytest.approx(100.0)
    record.output_tokens = 1
    assert record.tpot_ms is None
    round_trip = RequestRecord.from_json(orjson.loads(orjson.dumps(record.to_json())))
    assert round_trip == record


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-1") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    when = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(when, now_epoch_s=1445412470.0) == pytest.approx(10.0)
