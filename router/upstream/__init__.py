"""Sluice's own HTTP/1.1 client for the request path (see ``response`` for why not aiohttp's)."""

from router.upstream.pool import ConnectFailed, Origin, UpstreamPool
from router.upstream.response import UpstreamClosed, UpstreamProtocolError, UpstreamResponse

__all__ = [
    "ConnectFailed",
    "Origin",
    "UpstreamClosed",
    "UpstreamPool",
    "UpstreamProtocolError",
    "UpstreamResponse",
]
