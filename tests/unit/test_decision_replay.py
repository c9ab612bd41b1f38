"""Hot-path optimisations must not change decisions: replay a recorded admission + routing sequence.

The recording (``tests/unit/data/decision_replay.json``) was made before the
decision path was optimised; see ``tests/unit/decision_replay.py`` for the
workload. Every verdict, ranking, removed set and predicted value must match
exactly (floats compared bit for bit via ``float.hex``).
"""

from __future__ import annotations

import json

import pytest

from tests.unit.decision_replay import RECORDING, RUNS, replay


@pytest.mark.parametrize(("policy", "ttft_slo_ms"), RUNS)
def test_replay_matches_recording(policy: str, ttft_slo_ms: int) -> None:
    recorded = json.loads(RECORDING.read_text())[f"{policy}@{ttft_slo_ms}"]
    replayed = replay(policy, ttft_slo_ms)
    assert len(replayed) == len(recorded)
    for step, (now, then) in enumerate(zip(replayed, recorded, strict=True)):
        assert now == then, f"{policy}@{ttft_slo_ms}: step {step} differs"
