"""Bad trace input: each failure is a WorkloadError naming file and row (and no traceback at the CLI)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.workloads import WorkloadError, build_workload
from tests.loadgen_support import DATA_DIR, needs_data

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE_ROW = "2023-11-16 18:17:03.9799600,4808,10\n"


def _gz(path: Path, text: str) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _first_request(name: str, **params: str) -> None:
    next(iter(build_workload(name, {}, params).requests()))


def _drain(name: str, **params: str) -> None:
    for _ in build_workload(name, {}, params).requests():
        pass


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv.gz"
    with pytest.raises(WorkloadError, match=r"nope\.csv\.gz: trace file not found"):
        _first_request("azure_code", trace=str(missing))


def test_unknown_columns_are_rejected_at_the_header(tmp_path: Path) -> None:
    path = _gz(
        tmp_path / "t.csv.gz", "TIMESTAMP,ContextTokens,GeneratedTokens,Extra\n" + AZURE_ROW[:-1] + ",1\n"
    )
    with pytest.raises(WorkloadError) as info:
        _first_request("azure_conv", trace=str(path))
    assert str(info.value).startswith(f"{path}:1: unknown columns ['Extra']")


def test_malformed_value_names_row_and_column(tmp_path: Path) -> None:
    path = _gz(tmp_path / "t.csv.gz", AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04.0,abc,8\n")
    with pytest.raises(WorkloadError) as info:
        _first_request("azure_code", trace=str(path))
    assert str(info.value).startswith(f"{path}:3: column 'ContextTokens': bad value 'abc'")


def test_wrong_field_count_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:05.0,7\n")
    with pytest.raises(WorkloadError, match=r"t\.csv:3: expected 3 fields, found 2"):
        _first_request("azure_code", trace=str(path))


@needs_data
def test_truncated_gzip_names_the_file_and_last_row(tmp_path: Path) -> None:
    original = (DATA_DIR / "azure_llm_2023/AzureLLMInferenceTrace_code.csv.gz").read_bytes()
    cut = tmp_path / "code.csv.gz"
    cut.write_bytes(original[: len(original) // 3])
    with pytest.raises(WorkloadError) as info:
        _first_request("azure_code", trace=str(cut))
    message = str(info.value)
    assert message.startswith(f"{cut}:")
    assert "truncated or corrupt" in message
    row = int(message.split(":")[1])
    assert 100 < row < 8_819


def test_not_gzip_at_all(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(WorkloadError, match=r"t\.jsonl\.gz:1: file is truncated or corrupt"):
        _first_request("mooncake_synthetic", trace=str(path))


def test_jsonl_bad_json_and_unknown_keys(tmp_path: Path) -> None:
    good = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n'
    bad_json = _gz(tmp_path / "a.jsonl.gz", good + "{not json}\n")
    with pytest.raises(WorkloadError, match=r"a\.jsonl\.gz:2: invalid JSON"):
        _first_request("mooncake_synthetic", trace=str(bad_json))
    extra = _gz(tmp_path / "b.jsonl.gz", good.replace('"hash_ids"', '"extra": 1, "hash_ids"'))
    with pytest.raises(WorkloadError, match=r"b\.jsonl\.gz:1: unknown keys \['extra'\]"):
        _first_request("mooncake_synthetic", trace=str(extra))


def test_mooncake_block_count_must_match_input_length(tmp_path: Path) -> None:
    path = _gz(
        tmp_path / "m.jsonl.gz",
        '{"timestamp": 0, "input_length": 2000, "output_length": 5, "hash_ids": [7]}\n',
    )
    with pytest.raises(
        WorkloadError, match=r"m\.jsonl\.gz:1: hash_ids has 1 blocks but input_length 2000 needs"
    ):
        _first_request("mooncake_synthetic", trace=str(path))


def test_sharegpt_error_surfaces_lazily_with_row(tmp_path: Path) -> None:
    def msg(role: str) -> str:
        return f'{{"role": "{role}", "from": "x", "text": "hi", "n_tokens": 1, "n_chars": 2}}'

    ok = f'{{"id": "a", "messages": [{msg("user")}, {msg("assistant")}]}}\n'
    bad = f'{{"id": "b", "messages": [{msg("wizard")}]}}\n'
    path = _gz(tmp_path / "s.jsonl.gz", ok + bad)
    with pytest.raises(WorkloadError, match=r"s\.jsonl\.gz:2: messages\[0\]: bad role 'wizard'"):
        _drain("sharegpt", trace=str(path))


def test_unknown_workload_option_and_parameter() -> None:
    with pytest.raises(WorkloadError, match="unknown workload 'nope'"):
        build_workload("nope")
    with pytest.raises(WorkloadError, match="parameter rate: unknown option"):
        build_workload("poisson", {}, {"rate": "3"})
    with pytest.raises(WorkloadError, match="option time_scale"):
        build_workload("poisson", {"time_scale": 0})
    with pytest.raises(WorkloadError, match="multi-turn chat"):
        build_workload("sharegpt", {"endpoint": "completions"})


def test_cli_reports_bad_trace_without_traceback(tmp_path: Path) -> None:
    path = _gz(tmp_path / "t.csv.gz", AZURE_HEADER + "yesterday,1,1\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sluice",
            "replay",
            "--workload",
            "azure_code",
            "--set",
            f"trace={path}",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert f"{path}:2: column 'TIMESTAMP'" in out.stderr
    assert "Traceback" not in out.stderr
