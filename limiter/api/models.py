"""The model lists agents ask for, in each caller's dialect, and the root that probes answer.

Every list holds the same models (the policy's enabled declared ones) and needs a known
credential; only the shape follows the caller: Anthropic's when the request carries
`anthropic-version` (Anthropic's SDKs and Claude Code always send it), OpenAI's otherwise, and
Gemini's at `/v1beta/models` (Google's path; `/v1/models` is already OpenAI's and Anthropic's).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ledger.catalog import Model
from limiter.admission.credentials import credential_of
from limiter.http.app_keys import CATALOG, ENFORCER, SETTINGS

# The catalog knows no creation date; the epoch stands for "unknown" in both dialects.
UNKNOWN_CREATED = 0
UNKNOWN_CREATED_AT = "1970-01-01T00:00:00Z"


async def _listed_models(request: web.Request) -> list[Model]:
    """The enabled declared models, for a caller with a known credential (401 otherwise)."""
    app = request.app
    await app[ENFORCER].identify(credential_of(request, app[SETTINGS]))
    catalog = await app[CATALOG].get()
    return [model for model in catalog.enabled() if model.declared]


def openai_model_list(models: list[Model]) -> dict[str, Any]:
    return {"object": "list", "data": [
        {"id": m.name, "object": "model", "created": UNKNOWN_CREATED, "owned_by": m.provider}
        for m in models]}


def anthropic_model_list(models: list[Model]) -> dict[str, Any]:
    return {
        "data": [{"type": "model", "id": m.name, "display_name": m.name,
                  "created_at": UNKNOWN_CREATED_AT} for m in models],
        "has_more": False,
        "first_id": models[0].name if models else None,
        "last_id": models[-1].name if models else None,
    }


def gemini_model_list(models: list[Model]) -> dict[str, Any]:
    return {"models": [{"name": f"models/{m.name}", "displayName": m.name,
                        **({"outputTokenLimit": m.max_output_tokens}
                           if m.max_output_tokens else {})}
                       for m in models]}


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: Anthropic's list shape for Anthropic callers, OpenAI's otherwise."""
    models = await _listed_models(request)
    if "anthropic-version" in request.headers:
        return web.json_response(anthropic_model_list(models))
    return web.json_response(openai_model_list(models))


async def list_gemini_models(request: web.Request) -> web.Response:
    """GET /v1beta/models in Gemini's list shape."""
    return web.json_response(gemini_model_list(await _listed_models(request)))


async def root(request: web.Request) -> web.Response:
    """GET and HEAD /: the connectivity probe some agents send before anything else (Claude
    Code's `HEAD /`). Open, like /healthz: it says only that a gateway answers here, and the
    probes carry no key."""
    return web.json_response({"service": "agentmeter-limiter", "status": "ok"})
