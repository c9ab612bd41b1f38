"""Which headers cross the proxy: everything except hop-by-hop ones (RFC 9110 §7.6.1).

Removed in both directions: ``Connection`` and every header it names,
``Keep-Alive``, ``Proxy-Connection``, ``Proxy-Authenticate``,
``Proxy-Authorization``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
``Upgrade``; plus ``Host`` and ``Content-Length``, which describe this hop's
connection and body framing and are recomputed by the HTTP library; and, towards
the backend, ``Expect`` (Sluice has already read the whole body). All other
headers (custom ones, ``Authorization``, ``x-sim-*``) pass unchanged and in
order, duplicates included; ``x-request-id`` is set to the request's id.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from core import headers

_ALWAYS_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_DROPPED_UPSTREAM = _ALWAYS_DROPPED | {headers.REQUEST_ID, "expect"}
# ``Connection`` values that name no other header: what nearly every backend (and client) sends.
_PLAIN_CONNECTION = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})


def _dropped(source: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str] | None:
    """Extra names to drop: those listed in ``Connection`` (lower-cased); None when there are none."""
    listed = source.getall("connection", ())
    if not listed or (len(listed) == 1 and listed[0] in _PLAIN_CONNECTION):
        return None  # the common cases, without building the set below
    names = {part.strip().lower() for value in listed for part in value.split(",")}
    names.discard("")
    names -= {"close", "keep-alive"}
    return frozenset(names) if names else None


def upstream_request_headers(
    source: CIMultiDictProxy[str] | CIMultiDict[str], request_id: str
) -> list[tuple[str, str]]:
    """Headers to send the backend for a client request, in order, ``x-request-id`` last.

    A list of pairs, not a multidict: the upstream client only iterates them once per attempt.
    """
    extra = _dropped(source)
    dropped = _DROPPED_UPSTREAM if extra is None else _DROPPED_UPSTREAM | extra
    out = [(name, value) for name, value in source.items() if name.lower() not in dropped]
    out.append((headers.REQUEST_ID, request_id))
    return out


def client_response_headers(source: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Headers to send the client from a backend response (Sluice adds its own after)."""
    extra = _dropped(source)
    dropped = _ALWAYS_DROPPED if extra is None else _ALWAYS_DROPPED | extra
    return CIMultiDict([(name, value) for name, value in source.items() if name.lower() not in dropped])
