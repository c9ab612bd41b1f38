"""Derive the L4 step-time profile (Llama-3.1-8B, TP1) from measured data, and print every step.

No public vLLM fit exists for an L4, so its coefficients are scaled from the measured BLIS A100 fit:

1. Measured A40 / A100 ratios (Vidur per-operator timings, Llama-2-7B, TP1, sum of per-layer medians
   of the linear operators x 32 layers):
   - memory-bound floor (1 token in the batch): ``r_mem_meas``;
   - compute-bound slope (ms per extra token between 2,048 and 4,096 tokens): ``r_cmp_meas``.
   The A40 is the nearest measured class to an L4 (GDDR6, PCIe, Ampere); its compute ratio matches the
   spec TFLOPs ratio (checked and printed), which is what justifies the spec scaling of step 2.
2. Spec ratios L4 / A40: HBM-or-GDDR bandwidth 696 / 300 GB/s, dense BF16 tensor TFLOPs 149.7 / 121.
3. L4 / A100 factors = measured A40 / A100 x spec L4 / A40, for memory and for compute.
4. Coefficients:
   - ``base_us``: the A100 fit's base minus the A100 linear-operator floor of Llama-3-8B (the part
     that is weight streaming), plus that floor scaled by the memory factor. The remainder (CPU
     scheduling, sampling, launches) is kept as is.
   - ``prefill_us_per_token`` and ``decode_us_per_token``: A100 fit x compute factor. The H100/A100
     BLIS pair shows both terms scale with compute (ratios 2.77 and 3.03 vs 3.17 TFLOPs, 1.64 bandwidth).
   - ``decode_us_per_context_token``: the KV read per attended token per decode step,
     ``kv_bytes_per_token / (bandwidth x achieved fraction)``; BLIS folds it into its fits at the
     context lengths it was calibrated on, which cannot be scaled by compute, and on a 300 GB/s card
     it is large, so it is explicit here. Achieved fraction: A40 measured floor vs its spec.

Usage: ``python bench/derive_l4_profile.py [--data-dir /work/shared/data]``; writes
``bench/results/l4_derivation.json``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

LINEAR_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
LAYERS = 32
SPEC = {  # vendor datasheets: memory bandwidth GB/s, dense BF16 tensor TFLOPs
    "a100_80gb": {"bw_gbs": 2039.0, "tflops": 312.0},
    "a40": {"bw_gbs": 696.0, "tflops": 149.7},
    "l4": {"bw_gbs": 300.0, "tflops": 121.0},
}
BLIS_A100 = {"base_us": 16441.5, "prefill_us_per_token": 47.84, "decode_us_per_token": 18.21}
BLIS_H100 = {"base_us": 5752.7, "prefill_us_per_token": 17.25, "decode_us_per_token": 6.00}
KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # Llama-3.1-8B, bf16
WEIGHT_BYTES_LLAMA2_7B = 6.48e9 * 2  # linear-layer weights streamed per step (without embeddings)


def linear_ms(path: Path) -> dict[int, float]:
    """Whole-model linear-operator time (ms) by number of tokens in the batch, TP1."""
    out: dict[int, float] = {}
    with gzip.open(path, "rt") as fh:
        for row in csv.DictReader(fh):
            if row["num_tensor_parallel_workers"] != "1":
                continue
            per_layer = sum(float(row[f"time_stats.{op}.median"]) for op in LINEAR_OPS)
            out[int(row["num_tokens"])] = per_layer * LAYERS
    return out


def derive(data_dir: Path) -> dict[str, object]:
    vidur = data_dir / "gpu_profiles" / "vidur"
    a100_l2 = linear_ms(vidur / "compute__a100__meta-llama__Llama-2-7b-hf__mlp.csv.gz")
    a40_l2 = linear_ms(vidur / "compute__a40__meta-llama__Llama-2-7b-hf__mlp.csv.gz")
    a100_l3 = linear_ms(vidur / "compute__a100__meta-llama__Meta-Llama-3-8B__mlp.csv.gz")

    r_mem_meas = a40_l2[1] / a100_l2[1]
    slope = lambda t: (t[4096] - t[2048]) / 2048  # noqa: E731 - ms per token, compute-bound
    r_cmp_meas = slope(a40_l2) / slope(a100_l2)
    r_cmp_spec_a40 = SPEC["a100_80gb"]["tflops"] / SPEC["a40"]["tflops"]
    bw_l4_vs_a40 = SPEC["a40"]["bw_gbs"] / SPEC["l4"]["bw_gbs"]
    cmp_l4_vs_a40 = SPEC["a40"]["tflops"] / SPEC["l4"]["tflops"]
    mem_factor = r_mem_meas * bw_l4_vs_a40
    cmp_factor = r_cmp_meas * cmp_l4_vs_a40

    floor_a100_ms = a100_l3[1]
    base_us = BLIS_A100["base_us"] - floor_a100_ms * 1e3 + floor_a100_ms * 1e3 * mem_factor
    achieved_bw_frac = WEIGHT_BYTES_LLAMA2_7B / (a40_l2[1] * 1e-3) / (SPEC["a40"]["bw_gbs"] * 1e9)
    kv_read_us = KV_BYTES_PER_TOKEN / (SPEC["l4"]["bw_gbs"] * 1e9 * achieved_bw_frac) * 1e6
    return {
        "inputs": {
            "vidur_linear_ms_tp1": {
                "a100_llama2_7b": {n: round(a100_l2[n], 3) for n in (1, 2048, 4096)},
                "a40_llama2_7b": {n: round(a40_l2[n], 3) for n in (1, 2048, 4096)},
                "a100_llama3_8b": {n: round(a100_l3[n], 3) for n in (1, 2048, 4096)},
            },
            "spec": SPEC,
            "blis_a100": BLIS_A100,
            "blis_h100": BLIS_H100,
        },
        "checks": {
            "a40_over_a100_compute_measured": round(r_cmp_meas, 3),
            "a40_over_a100_compute_spec_tflops": round(r_cmp_spec_a40, 3),
            "a40_over_a100_memory_floor_measured": round(r_mem_meas, 3),
            "a40_achieved_bandwidth_frac": round(achieved_bw_frac, 3),
            "blis_a100_over_h100": {k: round(BLIS_A100[k] / BLIS_H100[k], 3) for k in BLIS_A100},
        },
        "factors_l4_over_a100": {"memory": round(mem_factor, 3), "compute": round(cmp_factor, 3)},
        "l4_step_time_us": {
            "base_us": round(base_us, 1),
            "prefill_us_per_token": round(BLIS_A100["prefill_us_per_token"] * cmp_factor, 2),
            "decode_us_per_token": round(BLIS_A100["decode_us_per_token"] * cmp_factor, 2),
            "decode_us_per_context_token": round(kv_read_us, 3),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--out", default="bench/results/l4_derivation.json")
    args = parser.parse_args()
    result = derive(Path(args.data_dir))
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    result["git_rev"] = rev
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["checks"], indent=2))
    print(json.dumps(result["factors_l4_over_a100"]))
    print(json.dumps(result["l4_step_time_us"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
