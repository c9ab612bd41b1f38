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


def _dropped(source: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str] | None:
    """Extra names to drop: those listed in ``Connection`` (lower-cased); None when there are none."""
    listed = source.getall("connection", ())
    if not listed:
        return None
    names = {part.strip().lower() for value in listed for part in value.split(",")}
    names.discard("")
    names -= {"close", "keep-alive"}
    return frozenset(names) if names else None


def upstream_request_headers(
    source: CIMultiDictProxy[str] | CIMultiDict[str], request_id: str
) -> CIMultiDict[str]:
    """Headers to send the backend for a client request."""
    extra = _dropped(source)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in source.items():
        lower = name.lower()
        if lower in _DROPPED_UPSTREAM or (extra is not None and lower in extra):
            continue
        out.add(name, value)
    out[headers.REQUEST_ID] = request_id
    return out


def client_response_headers(source: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """Headers to send the client from a backend response (Sluice adds its own after)."""
    extra = _dropped(source)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in source.items():
        lower = name.lower()
        if lower in _ALWAYS_DROPPED or (extra is not None and lower in extra):
            continue
        out.add(name, value)
    return out
