"""``sluice predict train|eval|info``: fit, evaluate and inspect the output-length model (offline only).

* ``train`` fits on every sample of the chosen sources, after a held-out run of
  the same recipe whose figures go into the saved file's metadata; writes the
  bundled model by default.
* ``eval`` runs the full protocol (``predictors.evaluation``): in-distribution
  held-out split and leave-one-source-out cross-dataset, model vs baselines;
  writes a results JSON (command, config, git rev, figures) and prints the
  markdown tables used in ``docs/predictors.md``.
* ``info`` loads a model file with all start-up checks and prints its metadata.

Training reads ``shared/data`` (``--data-dir`` or ``$SLUICE_DATA_DIR``) and
takes about a minute per fit on one core; it never runs inside the proxy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.config import PredictorsConfig
from predictors.eval_report import markdown_report
from predictors.evaluation import config_dict, cross_dataset, in_distribution, summary
from predictors.length_training import TrainConfig, fit_length_model
from predictors.persistence import ModelFileError, build_metadata, default_model_path, load_model, save_model
from predictors.refit import refit_params
from predictors.training_data import SOURCES, TrainingDataError, data_dir, data_hash, load_samples

DEFAULT_EVAL_OUT = Path("bench/results/predictor_eval.json")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("predict", help="train, evaluate or inspect the output-length model")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", help="shared data directory (default: $SLUICE_DATA_DIR or /work/shared/data)"
        )
        p.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated subset of {SOURCES}")
        p.add_argument("--seed", type=int, default=0, help="seed of the held-out group split")
        p.add_argument("--limit", type=int, default=None, help="use only every k-th sample (quick runs)")

    train = actions.add_parser("train", help="fit on all data and save the model with metadata")
    common(train)
    train.add_argument("--out", default=None, help="model file to write (default: the bundled model)")
    train.set_defaults(func=run_train)

    evaluate = actions.add_parser("eval", help="held-out and cross-dataset evaluation vs baselines")
    common(evaluate)
    evaluate.add_argument("--out", default=str(DEFAULT_EVAL_OUT), help="results JSON to write")
    evaluate.add_argument(
        "--extra-seeds",
        default="1,2",
        help="more held-out splits to report the spread of in-distribution tau",
    )
    evaluate.add_argument("--markdown", default=None, help="also write the markdown tables to this file")
    evaluate.add_argument(
        "--no-refit",
        action="store_true",
        help="skip the column of the background refit (predictors.refit, its config defaults)",
    )
    evaluate.set_defaults(func=run_eval)

    info = actions.add_parser("info", help="validate a model file and print its metadata")
    info.add_argument("--model", default=None, help="model file (default: the bundled model)")
    info.set_defaults(func=run_info)


def _sources(args: argparse.Namespace) -> list[str]:
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise TrainingDataError(f"--sources: unknown {unknown}; choose from {', '.join(SOURCES)}")
    return sources


def _load(args: argparse.Namespace) -> tuple[list[str], list[Any], str]:
    sources = _sources(args)
    samples = load_samples(sources, args.data_dir)
    if args.limit:
        samples = samples[:: max(1, args.limit)]
    return sources, samples, data_hash(sources, args.data_dir)


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (rebuilt from the parsed options, defaults included)."""
    options = [
        f"--{name.replace('_', '-')}" + ("" if isinstance(value, bool) else f" {value}")
        for name, value in sorted(vars(args).items())
        if name not in ("func", "command", "action") and value is not None and value is not False
    ]
    return " ".join(["sluice predict", args.action, *options])


def run_train(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = TrainConfig()
    try:
        sources, samples, digest = _load(args)
    except TrainingDataError as exc:
        print(f"sluice predict train: {exc}", file=sys.stderr)
        return 2
    print(f"loaded {len(samples)} samples from {data_dir(args.data_dir)} ({', '.join(sources)})", flush=True)
    held_out, _ = in_distribution(samples, config, seed=args.seed)
    model = fit_length_model(samples, config).model
    model.metadata = build_metadata(
        training_data_sha256=digest,
        sources=sources,
        n_samples=len(samples),
        train_config=config_dict(config),
        evaluation={"in_distribution": {k: held_out[k] for k in ("protocol", "train_n", "test_n", "model")}},
        created_by=_command_line(args),
    )
    out = Path(args.out) if args.out else default_model_path()
    save_model(model, out)
    pooled = held_out["model"]["all"]
    print(
        f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.monotonic() - started:.0f} s; held-out "
        f"tau {pooled['kendall_tau']}, log-MAE {pooled['log_mae']}, P90 coverage {pooled['p90_coverage']}"
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = TrainConfig()
    try:
        sources, samples, digest = _load(args)
    except TrainingDataError as exc:
        print(f"sluice predict eval: {exc}", file=sys.stderr)
        return 2
    refit = None if args.no_refit else refit_params(PredictorsConfig().refit)
    in_dist, _ = in_distribution(samples, config, seed=args.seed, online=True, refit=refit)
    seeds = [args.seed, *(int(v) for v in args.extra_seeds.split(",") if v.strip())]
    by_seed = {str(args.seed): in_dist["model"]}
    for seed in seeds[1:]:
        by_seed[str(seed)] = in_distribution(samples, config, seed=seed)[0]["model"]
    cross, pooled = cross_dataset(samples, config, refit) if len(sources) > 1 else ({}, {})
    results: dict[str, Any] = {
        "command": _command_line(args),
        "git_rev": git_rev(),
        "config": {"train": config_dict(config), "sources": sources, "seed": args.seed, "limit": args.limit},
        "training_data_sha256": digest,
        "elapsed_s": None,
        "in_distribution": in_dist,
        "in_distribution_by_seed": by_seed,
        "cross_dataset": cross,
        "cross_dataset_pooled": pooled,
    }
    if cross:
        results["summary"] = summary(in_dist, cross, by_seed, pooled)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_report(results)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table)
    print(f"wrote {out} in {results['elapsed_s']} s")
    return 0


def run_info(args: argparse.Namespace) -> int:
    path = Path(args.model) if args.model else default_model_path()
    try:
        model = load_model(path)
    except ModelFileError as exc:
        print(f"sluice predict info: {exc}", file=sys.stderr)
        return 2
    meta = {k: v for k, v in model.metadata.items() if k != "evaluation"}
    pooled = model.metadata.get("evaluation", {}).get("in_distribution", {}).get("model", {}).get("all")
    print(json.dumps({"path": str(path), **meta, "held_out_all": pooled}, indent=2))
    return 0
