"""Config loading: strict validation with file and line, defaults, route matching."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.config import load_config, load_config_text
from core.yaml_source import ConfigError
from decision.engine import DecisionEngine
from sluice.cli import main

MINIMAL = """\
backends:
  - name: a
    url: http://127.0.0.1:8001/
    models: [m1]
  - name: b
    url: http://127.0.0.1:8002
    models: [m1, m2]
"""


def test_minimal_config_gets_defaults() -> None:
    cfg = load_config_text(MINIMAL).config
    assert cfg.listen.host == "127.0.0.1"
    assert cfg.backends[0].url == "http://127.0.0.1:8001"  # trailing slash removed
    assert cfg.models == ("m1", "m2")
    assert [r.name for r in cfg.routes] == ["default"]
    assert cfg.retries.max_per_request == 2
    assert cfg.retries.budget_ratio == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("extra", "line", "fragment"),
    [
        ("    max_concurency: 3\n", 8, "backends[1].max_concurency: unknown key"),
        ("    weight: -2\n", 8, "backends[1].weight: Input should be greater than 0"),
        ("    metrics_format: prometheus\n", 8, "backends[1].metrics_format"),
        ("    max_concurrency: lots\n", 8, "backends[1].max_concurrency"),
    ],
)
def test_bad_backend_values_name_file_and_line(extra: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(MINIMAL + extra, "fleet.yaml")
    message = str(info.value)
    assert message.startswith(f"fleet.yaml:{line}: ")
    assert fragment in message


def test_unknown_top_level_key_and_duplicate_key() -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:8: listenn: unknown key"):
        load_config_text(MINIMAL + "listenn: {port: 1}\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml:9: listen: duplicate key"):
        load_config_text(MINIMAL + "listen: {port: 1}\nlisten: {port: 2}\n", "x.yaml")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"x.yaml:3: invalid YAML"):
        load_config_text("backends:\n  - [unclosed\n", "x.yaml")
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cross_checks() -> None:
    dup = MINIMAL + "  - name: a\n    url: http://127.0.0.1:9\n    models: [m]\n"
    with pytest.raises(ConfigError, match="backend names must be unique"):
        load_config_text(dup)
    bad_class = MINIMAL + "routes:\n  - name: r\n    priority: vip\n"
    with pytest.raises(ConfigError, match="priority 'vip' is not one of"):
        load_config_text(bad_class)


def test_route_matching_first_match_wins_and_default() -> None:
    text = MINIMAL + (
        "routes:\n"
        "  - name: batch\n"
        "    match: {headers: {x-team: batch}}\n"
        "  - name: chat-m1\n"
        "    match: {path: /v1/chat/completions, model: 'm*'}\n"
    )
    cfg = load_config_text(text).config
    assert cfg.route_for("/v1/chat/completions", "m1", {"x-team": "batch"}).name == "batch"
    assert cfg.route_for("/v1/chat/completions", "m2", {}).name == "chat-m1"
    assert cfg.route_for("/v1/completions", "m2", {}).name == "default"


def test_unknown_policy_and_bad_params_fail_with_line() -> None:
    text = MINIMAL + "routes:\n  - name: r\n    policy:\n      name: round_robbin\n"
    loaded = load_config_text(text, "p.yaml")
    with pytest.raises(
        ConfigError, match=r"p.yaml:11: routes\[0\].policy.name: unknown policy 'round_robbin'"
    ):
        DecisionEngine.from_config(loaded, ManualClock(), random.Random(0))
    text = MINIMAL + "routes:\n  - name: r\n    policy:\n      name: round_robin\n      params: {k: 1}\n"
    loaded = load_config_text(text, "p.yaml")
    with pytest.raises(ConfigError, match=r"p.yaml:12: routes\[0\].policy.params.k: unknown key"):
        DecisionEngine.from_config(loaded, ManualClock(), random.Random(0))


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    assert main(["check-config", str(good)]) == 0
    assert "OK (2 backends, 2 models, 1 routes)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL + "    gpu: [h100]\n")
    assert main(["check-config", str(bad)]) == 2
    assert f"{bad}:8: backends[1].gpu" in capsys.readouterr().err


def test_every_example_config_is_valid() -> None:
    """Example configs are documentation; they must never go stale."""
    root = Path(__file__).resolve().parents[2] / "configs"
    paths = sorted(root.glob("*.yaml"))
    assert paths, "configs/ has no example"
    for path in paths:
        loaded = load_config(path)
        DecisionEngine.from_config(loaded, ManualClock(), random.Random(0))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("class_reserve_frac", "1.0", "less than 1"),
        ("class_reserve_frac", "-0.1", "greater than or equal to 0"),
        ("min_prefill_cap", "0", "greater than or equal to 1"),
    ],
)
def test_check_config_rejects_bad_admission_reserve_and_prefill_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + f"routes:\n  - name: r\n    admission:\n      {key}: {value}\n")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:11: routes[0].admission.{key}" in err
    assert message in err


def test_admission_reserve_and_prefill_cap_defaults_unchanged() -> None:
    route = load_config_text(MINIMAL + "routes:\n  - name: r\n").config.routes[0]
    assert route.admission.class_reserve_frac == 0.1
    assert route.admission.min_prefill_cap == 4.0
