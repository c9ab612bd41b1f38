"""Markdown tables of an evaluation report (``sluice predict eval``), for ``docs/predictors.md``."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from predictors.evaluation import BUCKET_EDGES_TOKENS

_COLUMNS = ("n", "kendall_tau", "spearman", "log_mae", "p90_coverage", "bucket_accuracy")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _triple(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "–"
    return " / ".join(_cell(metrics.get(c)) for c in ("kendall_tau", "log_mae", "p90_coverage"))


def _rows(label: str, by_source: dict[str, dict[str, Any]], sources: list[str]) -> list[str]:
    lines = []
    for source in sources:
        metrics = by_source.get(source)
        if metrics is not None:
            cells = " | ".join(_cell(metrics.get(c)) for c in _COLUMNS)
            lines.append(f"| {label} | {source} | {cells} |")
    return lines


def _table(section: dict[str, Any], sources: list[str], online: bool) -> list[str]:
    header = "| predictor | test set | " + " | ".join(_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(_COLUMNS) + 2)]
    lines += _rows("**sluice model**", section["model"], sources)
    if online:
        lines += _rows("**+ online key means**", section["model_online_prequential"], sources)
        if "model_online_features_prequential" in section:
            lines += _rows(
                "**+ online key means + feature weights**",
                section["model_online_features_prequential"],
                sources,
            )
        if "model_refit_prequential" in section:
            lines += _rows(
                "**+ online + background refit (predictors.refit)**",
                section["model_refit_prequential"],
                sources,
            )
    for name, by_source in section["baselines"].items():
        lines += _rows(name, by_source, sources[:1])
    return lines


def markdown_report(results: dict[str, Any]) -> str:
    bounds = (0, *BUCKET_EDGES_TOKENS, "inf")
    buckets = ", ".join(f"[{lo}, {hi})" for lo, hi in pairwise(bounds))
    in_dist = results["in_distribution"]
    sources = ["all", *sorted(k for k in in_dist["model"] if k != "all")]
    lines = [
        f"Buckets for bucket_accuracy (tokens): {buckets}.",
        "",
        f"### In-distribution ({in_dist['protocol']}; train {in_dist['train_n']}, test {in_dist['test_n']})",
        "",
        *_table(in_dist, sources, online="model_online_prequential" in in_dist),
        "",
        f"Mean within-model tau (alpaca_eval models): {_cell(in_dist.get('model_within_model_tau'))}",
    ]
    by_seed = results.get("in_distribution_by_seed") or {}
    if len(by_seed) > 1:
        lines += ["", "Pooled tau by held-out split seed: "]
        lines[-1] += ", ".join(f"seed {k}: {_cell(v['all']['kendall_tau'])}" for k, v in by_seed.items())
    for held, section in results["cross_dataset"].items():
        lines += [
            "",
            f"### Cross-dataset: test on {held}, trained on {', '.join(section['trained_on'])}",
            "",
            *_table(section, ["all"], online=True),
            "",
            f"Mean within-model tau: static {_cell(section.get('model_within_model_tau'))}, "
            f"online key means {_cell(section.get('model_online_within_model_tau'))}, "
            f"online + feature weights {_cell(section.get('model_online_features_within_model_tau'))}",
            "",
            "First request of each conversation/instruction in the stream only (tau / log-MAE / P90 cov., "
            f"n {_cell(section.get('model_first_of_group', {}).get('n'))}): "
            + ", ".join(
                f"{label} {_triple(section.get(key))}"
                for label, key in (
                    ("static", "model_first_of_group"),
                    ("key means", "model_online_prequential_first_of_group"),
                    ("+ feature weights", "model_online_features_prequential_first_of_group"),
                    ("+ refit", "model_refit_prequential_first_of_group"),
                )
                if key in section
            ),
            "",
            "Second half of the stream only (tau / log-MAE / P90 cov.): "
            + ", ".join(
                f"{label} {_triple(section.get(key))}"
                for label, key in (
                    ("+ feature weights", "model_online_features_prequential_second_half"),
                    ("+ refit", "model_refit_prequential_second_half"),
                )
                if key in section
            ),
            "",
            "Refits (outcomes seen: accepted?, holdout tau refit vs served): "
            + (
                "; ".join(
                    f"{r['step']}: {'yes' if r['accepted'] else 'no'}, {_cell(r['tau_refit'])} vs "
                    f"{_cell(r['tau_served'])}"
                    for r in section.get("refit_log", [])
                )
                or "none"
            ),
        ]
    pooled = results.get("cross_dataset_pooled") or {}
    if pooled:
        lines += [
            "",
            f"### Cross-dataset pooled: the held-out sources {', '.join(pooled['held_out_sources'])} "
            "concatenated, each predicted by the model trained without it",
            "",
            "| predictor | " + " | ".join(_COLUMNS) + " |",
            "|" + "---|" * (len(_COLUMNS) + 1),
        ]
        for name, metrics in pooled.items():
            if isinstance(metrics, dict):
                lines.append(f"| {name} | " + " | ".join(_cell(metrics.get(c)) for c in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"
