"""Which decider each benchmark point runs: Sluice's registered policies, plus the bench-only oracle.

A matrix policy entry names either a policy of ``policies.registry`` (built by
``DecisionEngine.from_config`` exactly as ``sluice serve`` builds it) or a policy that exists only
for benchmarks (``BENCH_ONLY``: ``oracle``, ``loadgen.sim.oracle``). Bench-only policies are
deliberately absent from ``policies.registry``, so ``sluice serve`` refuses them as unknown; here
their config carries ``round_robin`` as a placeholder and their decider wraps the configured
``DecisionEngine`` (admission unchanged) with the bench-only routing.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from core.config import LoadedConfig, PolicyConfig
from core.protocols import Decider
from core.yaml_source import Loc, SourceMap, config_error_from_validation
from decision.engine import DecisionEngine
from loadgen.results import SLO
from loadgen.sim.oracle import OracleDecider, OracleParams, OraclePolicy
from loadgen.sim.virtual import DeciderFactory, VirtualFleet
from policies import build_policy

PLACEHOLDER_POLICY = "round_robin"


@dataclass(frozen=True, slots=True)
class BenchOnlyPolicy:
    params_model: type[BaseModel]
    build: Callable[[BaseModel, VirtualFleet, Decider, random.Random], Decider]
    summary: str


def _oracle(params: BaseModel, fleet: VirtualFleet, inner: Decider, rng: random.Random) -> Decider:
    assert isinstance(params, OracleParams)
    return OracleDecider(inner, OraclePolicy(fleet, params), fleet.clock, rng)


BENCH_ONLY: Mapping[str, BenchOnlyPolicy] = {
    "oracle": BenchOnlyPolicy(
        OracleParams, _oracle, "true output lengths + exact engine state (upper bound)"
    ),
}


def check_policy(name: str, params: Mapping[str, Any], source: SourceMap, loc: Loc) -> None:
    """Validate a matrix policy entry (``ConfigError`` at ``loc``: unknown name, bad parameter)."""
    bench_only = BENCH_ONLY.get(name)
    if bench_only is None:
        build_policy(PolicyConfig(name=name, params=dict(params)), source, loc)
        return
    try:
        bench_only.params_model.model_validate(dict(params))
    except ValidationError as exc:
        raise config_error_from_validation(exc, source, (*loc, "params")) from None


def config_policy(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """What a point's Sluice config names on its routes for this policy."""
    if name in BENCH_ONLY:
        return {"name": PLACEHOLDER_POLICY, "params": {}}
    return {"name": name, "params": dict(params)}


def decider_factory(
    name: str, params: Mapping[str, Any], loaded: LoadedConfig, seed: int, slo: SLO
) -> DeciderFactory:
    """Build the point's decider once its fleet exists (the fleet's clock; the oracle's ground truth).

    Bench-only parameters left unset take the matrix's SLO (the oracle's ``slo_*_ms``).
    """
    bench_only = BENCH_ONLY.get(name)

    def build(fleet: VirtualFleet) -> Decider:
        engine = DecisionEngine.from_config(loaded, fleet.clock, random.Random(seed))
        if bench_only is None:
            return engine
        values = {"slo_ttft_ms": slo.ttft_ms, "slo_tpot_ms": slo.tpot_ms, **params}
        known = bench_only.params_model.model_fields
        validated = bench_only.params_model.model_validate({k: v for k, v in values.items() if k in known})
        return bench_only.build(validated, fleet, engine, random.Random(seed))

    return build
