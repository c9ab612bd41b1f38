"""A real llama.cpp server (``xllamacpp``) with a locally built random-weight model.

``gguf_model`` builds the GGUF file, ``serve`` runs one server in its own
process, ``harness`` starts/stops such processes by PID. Used by the real-backend
tests (``tests/llamacpp``) and by benchmarks; needs the ``dev`` extras
(``xllamacpp``, ``gguf``).
"""
