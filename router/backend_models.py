"""``GET /v1/models``: the configured models, described by what the backends' own ``/v1/models`` say.

Rule: the list holds exactly the models Sluice routes — every model some
``backends[].models`` names, in first-seen order — so every listed id can be
requested. Each entry is the object the first backend (in config order) that
is configured for the model and lists it returned, with ``id`` kept and
``object: "model"``; engine extras (vLLM ``max_model_len``, llama.cpp
``meta``, ``owned_by``, ``created``) pass through. A model no backend has
described yet gets ``{"id", "object": "model", "created": 0, "owned_by": "sluice"}``.

A model a backend lists but no ``backends[].models`` names is left out
(Sluice would answer 404 ``model_not_found`` for it), and so logged once as a
warning, as is a configured model its backend does not list (requests for
it will most likely fail there: the usual cause is a ``--served-model-name``
that differs from the config).

Fetching happens in the background (``router.health``: after a passed
health check, when the backend has just become ready or its last answer is
older than ``REFRESH_S``), never per request. The answer is bounded
(``MAX_BODY_BYTES``, the health timeout); an unusable answer keeps the
previous one and logs once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from core.config import SluiceConfig
from core.types import BackendId

REFRESH_S = 60.0
MAX_BODY_BYTES = 1024 * 1024
PATH = "/v1/models"
log = logging.getLogger("sluice.models")

ModelObject = dict[str, Any]


def default_object(model: str) -> ModelObject:
    return {"id": model, "object": "model", "created": 0, "owned_by": "sluice"}


class BackendModels:
    """Per-backend reported model objects and the cached merged answers."""

    def __init__(self, config: SluiceConfig) -> None:
        self._configured: dict[BackendId, tuple[str, ...]] = {b.name: b.models for b in config.backends}
        self._models = config.models
        self._reported: dict[BackendId, dict[str, ModelObject]] = {}
        self._fetched_at_s: dict[BackendId, float] = {}
        self._warned: set[tuple[BackendId, str]] = set()
        self._objects: dict[str, ModelObject] = {}
        self._listing = b""
        self._rebuild()

    def listing(self) -> bytes:
        """The ``GET /v1/models`` body (OpenAI list shape)."""
        return self._listing

    def model(self, model: str) -> ModelObject | None:
        return self._objects.get(model)

    def reported(self, backend_id: BackendId) -> Mapping[str, ModelObject]:
        return self._reported.get(backend_id, {})

    def due(self, backend_id: BackendId, now_s: float, became_ready: bool) -> bool:
        fetched_at_s = self._fetched_at_s.get(backend_id)
        return became_ready or fetched_at_s is None or now_s - fetched_at_s >= REFRESH_S

    async def fetch(
        self,
        session: aiohttp.ClientSession,
        backend_id: BackendId,
        base_url: str,
        timeout_s: float,
        now_s: float,
    ) -> None:
        """GET the backend's ``/v1/models`` and record it; failures keep the previous answer."""
        self._fetched_at_s[backend_id] = now_s
        url = base_url + PATH
        try:
            async with asyncio.timeout(timeout_s), session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await _read_capped(response)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            detail = str(exc) or type(exc).__name__
            self._warn_once(backend_id, "fetch", "cannot read %s (%s); keeping its last answer", url, detail)
            return
        self.record(backend_id, body)

    def record(self, backend_id: BackendId, body: bytes) -> None:
        """Store one ``/v1/models`` answer; an answer that is not an OpenAI model list is ignored."""
        objects = parse_listing(body)
        if objects is None:
            self._warn_once(
                backend_id, "shape", "%s of backend %s is not an OpenAI model list", PATH, backend_id
            )
            return
        self._warned -= {(backend_id, "fetch"), (backend_id, "shape")}  # warn again after a new outage
        if objects == self._reported.get(backend_id):
            return
        self._reported[backend_id] = objects
        self._check_names(backend_id, objects)
        self._rebuild()

    def _check_names(self, backend_id: BackendId, objects: Mapping[str, ModelObject]) -> None:
        configured = self._configured.get(backend_id, ())
        for model in configured:
            if model not in objects:
                self._warn_once(
                    backend_id,
                    f"missing:{model}",
                    "backend %s is configured for model %r but its %s lists only %s",
                    backend_id,
                    model,
                    PATH,
                    sorted(objects),
                )
        for model in objects:
            if model not in configured:
                self._warn_once(
                    backend_id,
                    f"extra:{model}",
                    "backend %s serves model %r, which its backends[].models does not list: not routed",
                    backend_id,
                    model,
                )

    def _rebuild(self) -> None:
        objects: dict[str, ModelObject] = {}
        for model in self._models:
            described = next(
                (
                    self._reported[b][model]
                    for b, models in self._configured.items()
                    if model in models and model in self._reported.get(b, {})
                ),
                None,
            )
            entry = default_object(model) if described is None else {**described, "object": "model"}
            entry["id"] = model
            entry.setdefault("created", 0)
            entry.setdefault("owned_by", "sluice")
            objects[model] = entry
        self._objects = objects
        self._listing = orjson.dumps({"object": "list", "data": list(objects.values())})

    def _warn_once(self, backend_id: BackendId, key: str, message: str, *args: object) -> None:
        if (backend_id, key) in self._warned:
            return
        self._warned.add((backend_id, key))
        log.warning(message, *args)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"answer larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def parse_listing(body: bytes) -> dict[str, ModelObject] | None:
    """``{"data": [{"id": str, ...}, ...]}`` → objects by id; ``None`` for anything else."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, list):
        return None
    objects: dict[str, ModelObject] = {}
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            return None
        objects.setdefault(item["id"], item)
    return objects
