"""``make bench`` (bench/run_all.py): the right steps run, failures and skips are reported, the summary
reads every committed result file and judges each headline figure against its target."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.bench_modules import load_bench_module

BENCH = Path(__file__).resolve().parents[2] / "bench"


run_all = load_bench_module("run_all", "run_all")
heads = load_bench_module("_headlines", "_headlines")


def options(**overrides: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "all": False,
        "only": None,
        "lock": None,
        "peers_venv": None,
        "aiperf_venv": None,
    }
    return argparse.Namespace(**{**base, **overrides})


def test_every_step_names_an_existing_script_and_a_result_with_a_reader() -> None:
    for step in run_all.STEPS:
        if step.argv[0] != "-m":
            assert (BENCH.parent / step.argv[0]).is_file(), step.name
        for stem in step.results:
            assert stem in heads.READERS, f"{step.name} writes {stem}.json but the summary cannot read it"


def test_default_run_is_the_cheap_steps_and_all_adds_the_long_ones() -> None:
    default = {s.name for s in run_all.selected(options())}
    everything = {s.name for s in run_all.selected(options(all=True))}
    assert {"peers", "aiperf_crosscheck", "predictor_eval"} <= everything - default
    assert {"overhead", "decision_cost", "predictor_speed", "sim_agreement", "client_capacity"} <= default
    assert [s.name for s in run_all.selected(options(only=["overhead"]))] == ["overhead"]


def test_unknown_step_name_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match=r"unknown step.*nope.*known:"):
        run_all.selected(options(only=["nope"]))


def test_committed_result_files_all_yield_their_headlines() -> None:
    """A reader left behind by a changed result layout fails here, not in someone's ``make bench``."""
    for path in sorted((BENCH / "results").glob("*.json")):
        if path.stem in heads.READERS:
            assert heads.headlines(path), path.name


def test_a_figure_over_its_target_is_a_miss(tmp_path: Path) -> None:
    doc = '{"results_median_of_rounds": {"full_predict_16_backends": {"p50_us": 40.0, "p99_us": 130.0}},'
    doc += ' "targets": {"p50_us": 50.0, "p99_us": 100.0}}'
    path = tmp_path / "predictor_speed.json"
    path.write_text(doc)
    verdicts = {h.figure: h.ok for h in heads.headlines(path)}
    assert verdicts == {"predict, 16 backends, p50": True, "predict, 16 backends, p99": False}
    assert heads.headlines(tmp_path.joinpath("x.json")) == []  # no reader: listed by name only


def test_missing_tool_skips_and_failing_script_fails(tmp_path: Path) -> None:
    lacking = run_all.Step("t1", ("-c", "pass"), (), needs=("no-such-tool-sluice-test",))
    assert run_all.run_step(lacking, options()).status == "skipped: needs no-such-tool-sluice-test on PATH"
    failing = run_all.Step("t2", ("-c", "raise SystemExit(3)"), (), realtime=True)
    assert run_all.run_step(failing, options(lock=tmp_path / "lock")).status == "failed (exit 3)"
    assert run_all.run_step(run_all.Step("t3", ("-c", "pass"), ()), options()).status == "ok"


def test_main_exits_nonzero_when_a_step_failed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = (run_all.Step("good", ("-c", "pass"), ()), run_all.Step("bad", ("-c", "raise SystemExit(2)"), ()))
    monkeypatch.setattr(run_all, "STEPS", steps)
    assert run_all.main([]) == 1
    out = capsys.readouterr().out
    assert "=== summary of bench/results" in out and "failed (exit 2)" in out
    assert run_all.main(["--only", "good"]) == 0
