"""Run one llama.cpp HTTP server (``xllamacpp``) in this process until SIGTERM/SIGINT.

``python -m loadgen.llamacpp.serve --model tiny.gguf --port 0`` prints one line
``LISTENING http://127.0.0.1:<port>`` on stdout once the server is bound (port 0
picks a free port; the harness parses that line) and keeps serving. The C++
server logs a line per request to stderr: redirect it to a file.

Tested settings (docs/backends.md): one thread per server and at most one
server per core — with 2 threads on 2 cores ggml's spin barriers collapse under
any other load. ``n_ctx`` is split evenly across slots (``kv_unified`` is off),
so ``ctx_tokens / slots`` must hold the longest prompt plus its output.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any


def build_params(args: argparse.Namespace) -> Any:
    import xllamacpp  # a dev extra

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}  # xllamacpp wants a Python set here
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.slots
    params.n_ctx = args.ctx_tokens
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.cache_prompt = True
    params.use_jinja = True
    params.warmup = False
    return params


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="path of a GGUF model")
    parser.add_argument("--alias", default="tiny-llama", help="model name served on /v1/models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--slots", type=int, default=4, help="parallel sequences (continuous batching)")
    parser.add_argument("--ctx-tokens", type=int, default=8192, help="KV context shared by all slots")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import xllamacpp

    # Block the stop signals before the server starts its threads (they inherit
    # the mask), so only sigwait() below ever sees them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = xllamacpp.Server(build_params(args))
    print(f"LISTENING {server.listening_address}", flush=True)
    signal.sigwait(stop_signals)
    del server  # joins the HTTP and inference threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
