"""``sluice predict train|eval|info`` on a tiny data directory in the shared-data formats."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from predictors.evaluation import BUCKET_EDGES_TOKENS, length_metrics
from predictors.persistence import load_model
from predictors.training_data import TrainingDataError, load_samples
from sluice.cli import main

TASKS = {"write an essay about": 500, "list three facts about": 80, "say yes or no: is": 3}
TOPICS = ("tea", "rivers", "chess", "jazz", "moons", "rust")


def _jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))


def _message(role: str, text: str, n_tokens: int) -> dict:
    return {
        "role": role,
        "from": "gpt" if role == "assistant" else "human",
        "text": text,
        "n_tokens": n_tokens,
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("data")

    def ask() -> tuple[str, int]:
        task = rng.choice(list(TASKS))
        return f"{task} {rng.choice(TOPICS)}", max(1, int(TASKS[task] * rng.uniform(0.7, 1.3)))

    conversations = []
    for i in range(80):
        messages = []
        for _ in range(2):
            text, n = ask()
            messages += [_message("user", text, 5), _message("assistant", "ok " * n, n)]
        conversations.append({"id": f"c{i}_0", "messages": messages})
    _jsonl_gz(root / "sharegpt/sharegpt_v3_first17671.jsonl.gz", conversations)
    instructions = [{"instruction_id": i, "instruction": ask()[0]} for i in range(40)]
    _jsonl_gz(root / "alpaca_eval/instructions.jsonl.gz", instructions)
    outputs = []
    for row in instructions:
        base = next(v for k, v in TASKS.items() if row["instruction"].startswith(k))
        for model, factor in (("short-model", 0.5), ("long-model", 2.0)):
            outputs.append(
                {"instruction_id": row["instruction_id"], "model": model, "output_tokens": int(base * factor)}
            )
    _jsonl_gz(root / "alpaca_eval/model_outputs.jsonl.gz", outputs)
    hh = []
    for i in range(40):
        text, n = ask()
        hh.append(
            {"id": i, "chosen": [_message("user", text, 4), _message("assistant", "no " * n, max(1, n // 4))]}
        )
    _jsonl_gz(root / "hh_rlhf/harmless_base_test_parsed.jsonl.gz", hh)
    return root


def test_loaders_build_one_sample_per_reply_following_a_user_turn(data_dir: Path) -> None:
    samples = load_samples(["sharegpt", "alpaca_eval", "hh_rlhf"], data_dir)
    by_source = {s: sum(x.source == s for x in samples) for s in ("sharegpt", "alpaca_eval", "hh_rlhf")}
    assert by_source == {"sharegpt": 160, "alpaca_eval": 80, "hh_rlhf": 40}
    second_turn = next(s for s in samples if s.source == "sharegpt" and s.features.n_user_turns == 2)
    assert second_turn.features.n_messages == 3
    assert second_turn.group == second_turn.features.request_id.split("_")[0]  # "c5_0:3" -> conversation "c5"


def test_train_info_eval_round_trip(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = tmp_path / "model.json.gz"
    assert main(["predict", "train", "--data-dir", str(data_dir), "--out", str(model_path)]) == 0
    model = load_model(model_path)
    assert model.metadata["n_samples"] == 280
    assert len(model.metadata["training_data_sha256"]) == 64
    assert model.metadata["evaluation"]["in_distribution"]["model"]["all"]["n"] > 0
    capsys.readouterr()
    assert main(["predict", "info", "--model", str(model_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["sklearn_version"] and info["feature_spec_hash"]

    out = tmp_path / "eval.json"
    markdown = tmp_path / "eval.md"
    args = ["predict", "eval", "--data-dir", str(data_dir), "--out", str(out), "--markdown", str(markdown)]
    assert main([*args, "--extra-seeds", "1"]) == 0
    report = json.loads(out.read_text())
    assert set(report["cross_dataset"]) == {"sharegpt", "alpaca_eval", "hh_rlhf"}
    pooled = report["cross_dataset_pooled"]
    assert pooled["model"]["n"] == sum(v["test_n"] for v in report["cross_dataset"].values()) == 280
    assert set(report["summary"]["cross_dataset_pooled_tau"]) == {
        "model",
        "model_online_prequential",
        "model_online_features_prequential",
        "model_refit_prequential",
    }
    for section in (report["in_distribution"], *report["cross_dataset"].values()):
        assert section["model_online_features_prequential"]["all"]["n"] == section["test_n"]
        assert section["model_refit_prequential"]["all"]["n"] == section["test_n"]
        assert isinstance(section["refit_log"], list)
    assert set(report["in_distribution"]["baselines"]) == {
        "global_mean",
        "per_model_mean",
        "prompt_length_regression",
        "prompt_ratio_1.5",
        "max_tokens",
    }
    assert report["summary"]["in_distribution_tau_over_seeds"]["n_seeds"] == 2
    assert report["in_distribution"]["model"]["all"]["kendall_tau"] > 0.5  # the synthetic signal is strong
    assert report["git_rev"] and report["command"].startswith("sluice predict eval")
    assert "[1024, inf)" in markdown.read_text()


def test_missing_data_and_bad_model_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["predict", "train", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "m")]) == 2
    )
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(b"junk")
    assert main(["predict", "info", "--model", str(bad)]) == 2
    assert "corrupt model file" in capsys.readouterr().err
    with pytest.raises(TrainingDataError, match="unknown source"):
        load_samples(["nope"], tmp_path)


def test_length_metrics_on_known_values() -> None:
    truth = [10, 100, 1000, 5000]
    metrics = length_metrics(truth, p50=[20, 90, 800, 6000], p90=[30, 50, 2000, 9000])
    assert metrics["kendall_tau"] == 1.0 and metrics["spearman"] == 1.0
    assert metrics["p90_coverage"] == 0.75
    # Buckets [0,64) [64,256) [256,1024) [1024,inf): 20/10, 90/100, 800/1000 agree; 6000/5000 too.
    assert BUCKET_EDGES_TOKENS == (64, 256, 1024)
    assert metrics["bucket_accuracy"] == 1.0
    constant = length_metrics(truth, p50=[5, 5, 5, 5], p90=[5, 5, 5, 5])
    assert constant["kendall_tau"] is None and constant["p90_coverage"] == 0.0
