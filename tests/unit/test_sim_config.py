"""GPU profiles and fleet files: sources reproduce, strict validation names file and line."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.yaml_source import ConfigError
from loadgen.sim import output_length
from loadgen.sim.fleet_config import load_fleet, load_fleet_text
from loadgen.sim.profile import OutputLengthSpec, load_profile, profile_names

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_profiles_load_and_cite_sources() -> None:
    names = profile_names()
    assert {"h100-llama3.1-8b", "a100-llama3.1-8b", "h100-tp2-llama3.1-8b", "h100-tp4-llama3.3-70b"} <= set(
        names
    )
    assert any(load_profile(n).gpu == "l4" for n in names)
    for name in names:
        profile = load_profile(name)
        assert profile.sources and profile.step_time.source
        assert profile.kv_capacity_tokens >= profile.scheduler.max_model_len


@pytest.mark.parametrize(
    ("name", "coefficients"),
    [
        ("h100-llama3.1-8b", (5752.7, 17.25, 6.00)),
        ("a100-llama3.1-8b", (16441.5, 47.84, 18.21)),
        ("h100-tp2-llama3.1-8b", (6910.4, 17.67, 2.84)),
        ("h100-tp4-llama3.3-70b", (12601.3, 76.42, 66.84)),
    ],
)
def test_blis_coefficients_are_the_published_ones(name: str, coefficients: tuple[float, ...]) -> None:
    model = load_profile(name).step_time
    assert (model.base_us, model.prefill_us_per_token, model.decode_us_per_token) == coefficients


def test_kv_capacity_from_model_shape_reproduces_blis() -> None:
    h100 = load_profile("h100-llama3.1-8b")
    assert h100.model.kv_bytes_per_token == 131_072  # 2 x 32 layers x 8 heads x 128 x 2 bytes
    assert h100.derived_kv_blocks == h100.num_kv_blocks == 29_205
    # BLIS lists TP x the per-GPU block count for tensor-parallel setups (see the profiles)
    assert abs(load_profile("h100-tp2-llama3.1-8b").num_kv_blocks * 2 - 132_139) <= 2
    assert abs(load_profile("h100-tp4-llama3.3-70b").num_kv_blocks * 4 - 128_273) <= 8
    assert load_profile("h100-tp4-llama3.3-70b").model.kv_bytes_per_token == 327_680


def test_profile_rules(tmp_path: Path) -> None:
    text = (ROOT / "loadgen/sim/profiles/h100-llama3.1-8b.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  max_model_len: 32768", "  max_model_len: 900000"))
    with pytest.raises(ConfigError, match="exceeds the KV capacity"):
        load_profile(str(bad))
    bad.write_text(text.replace("  num_blocks: 29205", "  num_blocks: 29205\n  block_size_tokens: 32"))
    with pytest.raises(ConfigError, match="block_size_tokens must be 16"):
        load_profile(str(bad))
    bad.write_text(text.replace("  base_us: 5752.7", "  base_us: 5752.7\n  turbo: true"))
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: step_time.turbo: unknown key"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match="no such profile 'nope'"):
        load_profile("nope")


def test_every_example_fleet_is_valid() -> None:
    files = sorted((ROOT / "configs/fleets").glob("*.yaml"))
    assert len(files) >= 3
    for path in files:
        assert load_fleet(path).backends
    issue6 = load_fleet(ROOT / "configs/fleets/hetero-6.yaml")
    assert sorted(b.profile.gpu for b in issue6.backends) == ["a100", "a100", "h100", "h100", "l4", "l4"]


def test_count_expands_names_ports_and_seeds() -> None:
    fleet = load_fleet_text(
        "seed: 5\nbackends:\n  - {name: g, profile: l4-llama3.1-8b, count: 3, port: 9100}\n"
    )
    assert [(b.name, b.port) for b in fleet.backends] == [("g-0", 9100), ("g-1", 9101), ("g-2", 9102)]
    assert len({b.seed for b in fleet.backends}) == 3
    assert fleet.backends[0].models == ("llama-3.1-8b",)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "backends:\n  - {name: a, profile: h100-llama3.1-8b, prot: 1}\n",
            2,
            "backends[0].prot: unknown key",
        ),
        ("backends:\n  - name: a\n    profile: nope\n", 3, "backends[0].profile: no such profile 'nope'"),
        (
            "backends:\n  - name: a\n    profile: h100-llama3.1-8b\n    overrides:\n"
            "      scheduler: {max_num_seqs: 0}\n",
            5,
            "backends[0].overrides.scheduler.max_num_seqs",
        ),
        (
            "backends:\n  - name: a\n    profile: h100-llama3.1-8b\n    faults:\n      error_rate: 2\n",
            5,
            "backends[0].faults.error_rate",
        ),
        ("backends:\n  - {name: a, profile: h100-llama3.1-8b, port: 70000}\n", 2, "backends[0].port"),
        ("backends: []\n", 1, "at least one backend"),
        (
            "backends:\n  - {name: a, profile: h100-llama3.1-8b, count: 2}\n"
            "  - {name: a-1, profile: l4-llama3.1-8b}\n",
            1,
            "repeated: ['a-1']",
        ),
        (
            "stream_coalesce_ms: -1\nbackends:\n  - {name: a, profile: h100-llama3.1-8b}\n",
            1,
            "stream_coalesce_ms",
        ),
    ],
)
def test_bad_fleet_files_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_fleet_text(text, "fleet.yaml")
    message = str(info.value)
    assert message.startswith(f"fleet.yaml:{line}: "), message
    assert fragment in message


def test_output_length_header_caps_and_draws() -> None:
    spec = OutputLengthSpec(median_tokens=100, sigma=1.0, max_tokens=500)
    rng = random.Random(1)
    assert output_length.resolve(42, None, 1000, 32768, rng, spec) == (42, "stop")
    assert output_length.resolve(42, 10, 1000, 32768, rng, spec) == (10, "length")
    assert output_length.resolve(42, None, 32760, 32768, rng, spec) == (8, "length")
    assert output_length.resolve(0, None, 10, 32768, rng, spec) == (1, "stop")
    draws = [output_length.resolve(None, None, 10, 32768, random.Random(7), spec) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    many = [output_length.draw(rng, spec) for _ in range(4000)]
    assert all(1 <= n <= 500 for n in many)
    assert sorted(many)[2000] == pytest.approx(100, rel=0.1)  # the median is the profile's
    assert output_length.parse_header(" 12 ") == 12
    for bad in ("-1", "1.5", "ten", ""):
        with pytest.raises(Exception, match="x-sim-output-tokens"):
            output_length.parse_header(bad)
