"""HTTP header names shared by the proxy, the load generator and the simulated backends."""

from __future__ import annotations

REQUEST_ID = "x-request-id"
TENANT = "x-sluice-tenant"
PRIORITY = "x-sluice-priority"
SESSION = "x-session-id"

BACKEND = "x-sluice-backend"
POLICY = "x-sluice-policy"
PREDICTED_TTFT_MS = "x-sluice-predicted-ttft-ms"
SHED_REASON = "x-sluice-shed-reason"

# The openai client's attempt counter (0 on the first attempt, n on the n-th retry): the only trace
# of a retry a real client sends (it never echoes custom response headers back).
CLIENT_RETRY_COUNT = "x-stainless-retry-count"

# Ground truth for the simulated backends only: the true output length of a
# trace request. Sluice forwards it unchanged and never reads it.
SIM_OUTPUT_TOKENS = "x-sim-output-tokens"
