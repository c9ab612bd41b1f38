"""How much one engine-metrics scrape costs to parse and convert (CPU µs per body).

Measures ``state.engine_metrics.convert_text`` on every fixture in
``tests/fixtures/engine_metrics`` and on a synthetic large vLLM body (8
data-parallel engines with the full V1 set of histograms, ~0.5 MB), the kind
of body that makes a naive full parse expensive. Reports the median of
``--repeats`` runs per body and the cost per KiB, and writes
``bench/results/engine_metrics_parse.json``.

    python bench/engine_metrics_parse.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from state.engine_metrics import convert_text  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "engine_metrics"
HISTOGRAMS = (
    "time_to_first_token_seconds",
    "time_per_output_token_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "request_inference_time_seconds",
    "request_prefill_time_seconds",
    "request_decode_time_seconds",
    "request_prompt_tokens",
    "request_generation_tokens",
    "iteration_tokens_total",
)


def large_vllm_body(n_engines: int = 8, n_buckets: int = 25) -> str:
    lines: list[str] = []
    for engine in range(n_engines):
        labels = f'engine="{engine}",model_name="meta-llama/Llama-3.1-70B-Instruct"'
        lines += [
            f"vllm:num_requests_running{{{labels}}} {engine + 3}.0",
            f"vllm:num_requests_waiting{{{labels}}} {engine}.0",
            f"vllm:kv_cache_usage_perc{{{labels}}} 0.{engine + 1}",
            f"vllm:prefix_cache_queries_total{{{labels}}} {1000 * (engine + 1)}.0",
            f"vllm:prefix_cache_hits_total{{{labels}}} {400 * (engine + 1)}.0",
            f'vllm:cache_config_info{{block_size="16",engine="{engine}",num_gpu_blocks="27153"}} 1.0',
        ]
        for name in HISTOGRAMS:
            lines.append(f"# HELP vllm:{name} Histogram.\n# TYPE vllm:{name} histogram")
            for bucket in range(n_buckets):
                lines.append(f'vllm:{name}_bucket{{{labels},le="{2.0**bucket}"}} {bucket * 10}.0')
            lines += [f"vllm:{name}_sum{{{labels}}} 1234.5", f"vllm:{name}_count{{{labels}}} 250.0"]
    return "\n".join(lines) + "\n"


def measure(text: str, repeats: int) -> float:
    """Median process-CPU microseconds of one convert_text call."""
    samples = []
    for _ in range(repeats):
        start = time.process_time_ns()
        result = convert_text(text, "auto", 0.0)
        samples.append((time.process_time_ns() - start) / 1000)
        assert result.metrics is not None, result.detail
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    bodies = {path.stem: path.read_text() for path in sorted(FIXTURES.glob("*.txt"))}
    bodies["vllm_dp8_full_histograms"] = large_vllm_body()
    results = {}
    for name, text in bodies.items():
        us = measure(text, args.repeats)
        size = len(text.encode())
        results[name] = {"bytes": size, "lines": text.count("\n"), "median_cpu_us": round(us, 1)}
        results[name]["cpu_us_per_kib"] = round(us / (size / 1024), 2)
        print(f"{name:28s} {size:>8d} B {results[name]['lines']:>6d} lines {us:>9.1f} µs")
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    rev = git.stdout.strip()
    out = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": {"repeats": args.repeats, "clock": "process_time_ns", "python": sys.version.split()[0]},
        "git_rev": rev,
        "results": results,
    }
    path = ROOT / "bench" / "results" / "engine_metrics_parse.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
