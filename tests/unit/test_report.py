"""Report outputs: the summary table, the self-contained HTML, the files of a run, the progress line."""

from __future__ import annotations

import gzip
import io
import json
import resource
from pathlib import Path

from loadgen.client import Counters
from loadgen.progress import ProgressBar, render
from loadgen.records import BackendSample, Outcome, RequestRecord, read_records
from loadgen.replay import raise_open_files_limit
from loadgen.report import format_summary, render_html, write_run
from loadgen.results import SLO, results_document


def records(n: int = 40) -> list[RequestRecord]:
    out = []
    for i in range(n):
        r = RequestRecord(f"r{i}", i * 0.5, 8, tenant=f"t{i % 15}", backend=f"gpu-{i % 2}")
        r.sent_s = i * 0.5
        if i % 10 == 9:
            r.outcome, r.status, r.end_s, r.backend = Outcome.SHED, 429, r.sent_s + 0.01, None
        else:
            r.outcome, r.status = Outcome.OK, 200
            r.ttft_ms, r.itl_ms, r.output_tokens = 50.0 + i, [10.0] * 7, 8
            r.e2e_ms = r.ttft_ms + 70.0
            r.end_s = r.sent_s + r.e2e_ms / 1000
        out.append(r)
    return out


def doc(partial: bool = False) -> dict[str, object]:
    meta = {"kind": "replay", "workload": {"name": "poisson"}, "target": {"url": "http://h:1"}, "seed": 3}
    return results_document(
        records(),
        slo=SLO(ttft_ms=80.0),
        warmup_s=0.0,
        meta=meta,
        partial=partial,
        partial_reason="interrupted",
    )


def test_summary_table_shows_headline_latency_and_groups() -> None:
    text = format_summary(doc())
    assert text.splitlines()[0] == "Sluice replay: poisson -> http://h:1"
    assert "requests 40  completed 36  shed 4 (10.0%)" in text
    assert "TTFT ms" in text and "per backend" in text and "(none)" in text
    assert "per tenant (first 12 of 15)" in text
    assert "[PARTIAL: interrupted]" in format_summary(doc(partial=True))


def test_html_is_self_contained_with_plots() -> None:
    samples = [BackendSample(t, "gpu-0", kv_usage_frac=0.1 * t) for t in range(5)]
    html = render_html(doc(), records(), samples)
    assert html.startswith("<!doctype html>") and "<script" not in html and "http://h:1" in html
    for title in (
        "Latency CDFs",
        "TTFT over time",
        "Throughput over time",
        "Shed and errors",
        "KV cache use",
    ):
        assert title in html
    assert html.count("data:image/png;base64,") == 6


def test_write_run_writes_the_three_files(tmp_path: Path) -> None:
    paths = write_run(tmp_path / "out", doc(), records())
    saved = json.loads(paths["results"].read_text())
    assert saved["files"] == {
        "results": "results.json",
        "requests": "requests.jsonl.gz",
        "report": "report.html",
    }
    assert saved["summary"]["requests"] == 40
    assert list(read_records(paths["requests"])) == records()
    with gzip.open(paths["requests"], "rt") as handle:
        assert json.loads(handle.readline())["outcome"] == "ok"


def test_progress_line() -> None:
    counters = Counters(scheduled=10, sent=8, finished=5, ok=4, shed=1)
    line = render(counters, elapsed_s=15.0, expected_s=60.0)
    assert line.startswith("[######..................]   15.0/60 s")
    assert "sent 8  in flight 3  ok 4  shed 1  failed 0" in line
    assert render(counters, 3.0, None).startswith("   3.0 s  sent 8")
    quiet = ProgressBar(counters, None, stream=io.StringIO())
    assert not quiet.enabled  # not a terminal
    stream = io.StringIO()
    ProgressBar(counters, None, stream=stream, enabled=True).draw()
    assert stream.getvalue().startswith("\r")


def test_open_files_limit_is_raised_not_lowered() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert raise_open_files_limit() >= before
