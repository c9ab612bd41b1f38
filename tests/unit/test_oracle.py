"""The benchmark-only oracle: exact costs, true lengths, exact prefix cache; never selectable in serve."""

from __future__ import annotations

import random
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import load_config_text
from core.features import build_features
from core.types import Endpoint, FleetSnapshot, RequestFeatures, RoutingDecision
from core.yaml_source import ConfigError
from decision.engine import DecisionEngine
from loadgen.bench.policies import BENCH_ONLY, decider_factory
from loadgen.results import SLO
from loadgen.sim.engine import SimEngine
from loadgen.sim.fleet_config import load_fleet_text, virtual_sluice_config
from loadgen.sim.oracle import OracleDecider
from loadgen.sim.oracle_cost import estimate, summarise
from loadgen.sim.request import SimRequest
from loadgen.sim.virtual import VirtualFleet
from loadgen.workload import WorkloadRequest
from policies import registered
from sluice.cli import main

MODEL = "llama-3.1-8b"
H100_L4 = "backends:\n  - {name: h100, profile: h100-llama3.1-8b}\n  - {name: l4, profile: l4-llama3.1-8b}\n"
TWO_H100 = "backends:\n  - {name: a, profile: h100-llama3.1-8b}\n  - {name: b, profile: h100-llama3.1-8b}\n"


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": True, **extra}


class Spy:
    """Wraps the oracle's decider and keeps every routing decision."""

    def __init__(self, inner: OracleDecider) -> None:
        self.inner = inner
        self.decisions: dict[str, RoutingDecision] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def route(self, features: RequestFeatures, snapshot: FleetSnapshot) -> RoutingDecision:
        decision = self.inner.route(features, snapshot)
        self.decisions[features.request_id] = decision
        return decision


CONVERSATIONAL = SLO(ttft_ms=2000, tpot_ms=100)


def oracle_fleet(text: str, slo: SLO = CONVERSATIONAL, **params: Any) -> tuple[VirtualFleet, Spy]:
    fleet = load_fleet_text(text)
    loaded = virtual_sluice_config(fleet, {"admission": {"enabled": False}})
    build = decider_factory("oracle", params, loaded, 1, slo)
    spies: list[Spy] = []

    def factory(vf: VirtualFleet) -> Spy:
        decider = build(vf)
        assert isinstance(decider, OracleDecider)
        spies.append(Spy(decider))
        return spies[0]

    vf = VirtualFleet(fleet, loaded, decider_factory=factory)
    return vf, spies[0]


def test_the_oracle_is_not_a_policy_sluice_serve_can_select(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    assert "oracle" in BENCH_ONLY and "oracle" not in registered()
    text = (
        "backends:\n  - {name: x, url: 'http://127.0.0.1:1', models: [m]}\n"
        "routes:\n  - name: default\n    policy: {name: oracle}\n"
    )
    with pytest.raises(ConfigError, match="unknown policy 'oracle'"):
        DecisionEngine.from_config(load_config_text(text, "serve.yaml"), ManualClock(), random.Random(0))
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    assert main(["check-config", str(path)]) == 2
    assert "routes[0].policy.name: unknown policy 'oracle'" in capsys.readouterr().err


def test_a_lone_requests_cost_is_exactly_what_the_engine_does() -> None:
    spec = load_fleet_text(H100_L4).backends[0]
    features = build_features(
        request_id="x", endpoint=Endpoint.CHAT, body=body("word " * 3000), route="d", tenant="t",
        priority="p", arrival_s=0.0,
    )  # fmt: skip
    engine = SimEngine(spec.profile)
    cost = estimate(engine, summarise(engine, {}), 0.0, features.prefix_hashes, features.prompt_tokens, 40)
    sim = SimRequest("x", features.prompt_tokens, features.prefix_hashes, 40)
    engine.add_request(sim, 0.0)
    engine.advance_until(100.0)
    assert cost.ttft_s == pytest.approx(sim.first_token_s or 0.0)
    assert cost.e2e_s == pytest.approx(sim.finished_s or 0.0)
    assert cost.cached_tokens == 0
    idle = summarise(engine, {})
    cached = estimate(engine, idle, 100.0, features.prefix_hashes, features.prompt_tokens, 40)  # now cached
    assert cached.cached_tokens >= features.prompt_tokens - 32  # whole blocks, the last token recomputed
    assert cached.ttft_s < cost.ttft_s


def test_decisions_carry_the_true_output_length() -> None:
    vf, spy = oracle_fleet(TWO_H100)
    reqs = [
        WorkloadRequest(f"r{i}", 0.05 * i, Endpoint.CHAT, body(f"r{i} " * 200), 10 + 7 * i) for i in range(8)
    ] + [WorkloadRequest("capped", 1.0, Endpoint.CHAT, body("c " * 200, max_tokens=5), 300)]
    records = {r.request_id: r for r in vf.run(reqs)}
    for wr in reqs:
        expected = min(wr.true_output_tokens, 5) if wr.request_id == "capped" else wr.true_output_tokens
        assert spy.decisions[wr.request_id].predicted_output_tokens == expected
        assert records[wr.request_id].output_tokens == expected


def test_the_exact_prefix_cache_attracts_a_shared_prompt_to_its_holder() -> None:
    """b is idle and a is busy decoding, but only a holds the 6k-token prefix: a is cheaper."""
    vf, spy = oracle_fleet(TWO_H100)
    shared = "the shared system prompt " * 1000
    reqs = [
        WorkloadRequest("warm", 0.0, Endpoint.CHAT, body(shared + "first question"), 5),
        WorkloadRequest("busy", 1.0, Endpoint.CHAT, body("unrelated " * 50), 400),
        WorkloadRequest("again", 1.2, Endpoint.CHAT, body(shared + "second question"), 5),
    ]
    records = {r.request_id: r for r in vf.run(reqs)}
    assert records["warm"].backend_id == records["busy"].backend_id == records["again"].backend_id == "a"
    assert (records["again"].cached_tokens or 0) > 5000
    costs = spy.decisions["again"].scores["exact_e2e"]
    assert costs["a"] > costs["b"]  # higher score = lower exact E2E


@pytest.mark.parametrize(("when", "chosen"), [("sacrifice", "l4"), ("least_late", "h100")])
def test_a_request_that_can_meet_its_slo_nowhere(when: str, chosen: str) -> None:
    """With an impossible TTFT bound every backend is infeasible: sacrifice the worst, or least late."""
    vf, spy = oracle_fleet(H100_L4, SLO(ttft_ms=0.001), when_infeasible=when)
    records = vf.run([WorkloadRequest("x", 0.0, Endpoint.CHAT, body("hi " * 300), 20)])
    assert records[0].backend_id == chosen
    assert spy.decisions["x"].ranked == (chosen, "h100" if chosen == "l4" else "l4")


def test_within_the_slo_the_faster_backend_wins_and_admission_stays_sluices() -> None:
    vf, spy = oracle_fleet(H100_L4)
    records = vf.run(
        [WorkloadRequest(f"r{i}", 0.1 * i, Endpoint.CHAT, body(f"r{i} " * 300), 50) for i in range(5)]
    )
    assert all(r.backend_id == "h100" and r.status == 200 for r in records)
    assert isinstance(spy.inner, OracleDecider)
