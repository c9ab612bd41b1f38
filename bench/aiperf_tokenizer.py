"""Build a tiny local tokenizer directory for aiperf, offline (shared/reference/tools.md §4).

aiperf needs a HuggingFace tokenizer to generate prompts; with a local directory it never touches
the network. A byte-level BPE (2,000 tokens) trained on a few repeated English sentences is enough:
token counts here only size aiperf's synthetic prompts, and the cross-check reads every count that
matters from the server's ``usage`` (``--use-server-token-count``).

Runs with the aiperf venv's Python (it needs ``tokenizers``): ``.aiperf-venv/bin/python
bench/aiperf_tokenizer.py DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Large language models generate text one token at a time from a prompt.",
    "A router decides which server should answer each request, and when to refuse one.",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.",
    "Numbers like 12, 345 and 6789 appear in code, tables and logs every day.",
]
EOS = "<|endoftext|>"


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(SENTENCES * 200, trainer=trainer)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 131072,
        "bos_token": EOS,
        "eos_token": EOS,
        "unk_token": EOS,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "config.json").write_text(json.dumps({"model_type": "gpt2"}))


if __name__ == "__main__":
    build(Path(sys.argv[1]))
