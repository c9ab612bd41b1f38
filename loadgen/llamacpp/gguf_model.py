"""Build a small random-weight Llama model in GGUF for a real llama.cpp server, offline.

Why: CI needs a *real* LLM server (llama.cpp's own HTTP server via ``xllamacpp``)
with real continuous batching, slots, prompt caching and ``/metrics``; the
weights only have to be the right shape. Building them with ``gguf`` + ``numpy``
takes well under a second and downloads nothing.

Output is kept printable and EOS is never sampled, so every response runs to
``max_tokens`` (tests then control generation length exactly):

* hidden dimension 0 is +10 in every token embedding, and row 0 of every
  ``attn_output`` and ``ffn_down`` is zero, so no layer writes to it; after the
  final RMSNorm it is a large positive constant — a bias input;
* column 0 of ``output`` is 0 for tokens whose bytes are printable ASCII and
  -10 for every other token (control tokens, EOS included, unless
  ``allow_eos``), which pushes their logits ~90 below the rest.

Presets (f16, tested on a 2-core CPU with 1 thread, see docs/backends.md):
``tiny`` 256/4/4/768 (3.7M params, ~2,500 tok/s decode, ~0.4 s cold TTFT for
~1.4k tokens) and ``small`` 512/8/8/1536 (27.8M params, ~330 tok/s, ~2.2 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.llamacpp.bpe import BpeVocab, token_bytes, train_bpe

BOS_EOS_PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_TOKEN_NORMAL = 1
_TOKEN_CONTROL = 3


@dataclass(frozen=True, slots=True)
class ModelShape:
    n_embd: int
    n_layer: int
    n_head: int
    n_ff: int
    context_length: int = 4096


PRESETS: dict[str, ModelShape] = {
    "tiny": ModelShape(n_embd=256, n_layer=4, n_head=4, n_ff=768),
    "small": ModelShape(n_embd=512, n_layer=8, n_head=8, n_ff=1536),
    "medium": ModelShape(n_embd=768, n_layer=12, n_head=12, n_ff=2048),
}


def build_model(
    out_path: str | Path,
    preset: str = "tiny",
    *,
    seed: int = 0,
    n_merges: int = 250,
    allow_eos: bool = False,
) -> Path:
    """Write the model to ``out_path`` and return it; deterministic for a given seed."""
    import gguf  # a dev extra: only the test harness and benchmarks build models

    shape = PRESETS[preset]
    vocab = train_bpe(n_merges=n_merges)
    tokens = [*vocab.tokens, BOS_EOS_PAD, IM_START, IM_END]
    types = [_TOKEN_NORMAL] * len(vocab.tokens) + [_TOKEN_CONTROL] * 3
    bos_id, eos_id = len(vocab.tokens), len(vocab.tokens) + 2

    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_metadata(writer, shape, len(tokens))
    _write_tokenizer(writer, vocab, tokens, types, bos_id, eos_id)
    rng = np.random.default_rng(seed)
    for name, array in _tensors(shape, vocab, len(tokens), rng, allow_eos=allow_eos):
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _write_metadata(writer: Any, shape: ModelShape, n_vocab: int) -> None:
    head_dim = shape.n_embd // shape.n_head
    writer.add_name(f"sluice-random-llama-{shape.n_embd}x{shape.n_layer}")
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(1)  # LLAMA_FTYPE_MOSTLY_F16


def _write_tokenizer(
    writer: Any, vocab: BpeVocab, tokens: list[str], types: list[int], bos_id: int, eos_id: int
) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(vocab.merges))
    writer.add_bos_token_id(bos_id)
    writer.add_pad_token_id(bos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def _tensors(
    shape: ModelShape, vocab: BpeVocab, n_vocab: int, rng: np.random.Generator, *, allow_eos: bool
) -> list[tuple[str, np.ndarray[Any, Any]]]:
    def normal(rows: int, cols: int, std: float) -> np.ndarray[Any, Any]:
        return (rng.standard_normal((rows, cols)) * std).astype(np.float16)

    d, ff = shape.n_embd, shape.n_ff
    ones = np.ones(d, dtype=np.float32)
    embd = normal(n_vocab, d, 1.0)
    embd[:, 0] = 10.0  # the constant "bias" dimension
    out: list[tuple[str, np.ndarray[Any, Any]]] = [("token_embd.weight", embd)]
    for i in range(shape.n_layer):
        attn_out = normal(d, d, 0.02)
        attn_out[0, :] = 0.0  # keep dimension 0 untouched by attention
        ffn_down = normal(d, ff, 0.02)
        ffn_down[0, :] = 0.0  # ... and by the MLP
        out += [
            (f"blk.{i}.attn_norm.weight", ones),
            (f"blk.{i}.attn_q.weight", normal(d, d, 0.02)),
            (f"blk.{i}.attn_k.weight", normal(d, d, 0.02)),
            (f"blk.{i}.attn_v.weight", normal(d, d, 0.02)),
            (f"blk.{i}.attn_output.weight", attn_out),
            (f"blk.{i}.ffn_norm.weight", ones),
            (f"blk.{i}.ffn_gate.weight", normal(ff, d, 0.02)),
            (f"blk.{i}.ffn_up.weight", normal(ff, d, 0.02)),
            (f"blk.{i}.ffn_down.weight", ffn_down),
        ]
    output = normal(n_vocab, d, 0.5)
    eos_id = len(vocab.tokens) + 2
    for token_id in range(n_vocab):
        if token_id < len(vocab.tokens):
            wanted = all(0x20 <= b <= 0x7E for b in token_bytes(vocab.tokens[token_id]))
        else:  # control tokens: never sampled, except EOS when asked for
            wanted = allow_eos and token_id == eos_id
        output[token_id, 0] = 0.0 if wanted else -10.0
    out += [("output_norm.weight", ones), ("output.weight", output)]
    return out
