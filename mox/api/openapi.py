"""The OpenAPI 3.1 document of the REST API, served at GET /api/openapi.json.

Schemas are generated from the msgspec types the API decodes requests into and encodes
responses from (mox.api.schemas, mox.statemachine.model), so they cannot drift from the
code; the paths table below is checked against the app's routes by the tests.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import msgspec

from mox.api.schemas import REQUEST_TYPES, RESPONSE_TYPES

_REF: Final = "#/components/schemas/{name}"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


_PROBLEM: Final = {
    "description": "An RFC 7807 problem (every 4xx and 5xx)",
    "content": {"application/problem+json": {"schema": _ref("Problem")}},
}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_ID: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9A-Za-z_-]{1,64}$"},
}
_CONSISTENCY: Final = _query(
    "consistency",
    "linearizable (default): read index on the leader; stale: this replica's state now",
    {"type": "string", "enum": ["linearizable", "stale"]},
)
_IDEMPOTENCY: Final = _header(
    "Idempotency-Key", "1-255 printable ASCII characters; a retry is applied once"
)
_IF_MATCH: Final = _header("If-Match", 'the expected version as an entity tag, e.g. "3"')


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**responses, "default": _PROBLEM},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if parameters:
        operation["parameters"] = parameters
    if security is not None:
        operation["security"] = security
    return operation


@functools.cache
def openapi_document() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(REQUEST_TYPES + RESPONSE_TYPES, ref_template=_REF)
    public: list[dict[str, list[str]]] = []
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Mox",
            "version": "1",
            "description": "Tenants, API keys and talents. Any node serves any request; see docs/api.md.",
        },
        "security": [{"apiKey": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "mox.<tenant>.<key>.<secret>",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the cluster's admin token",
                },
            },
        },
        "paths": {
            "/health": {
                "get": _operation(
                    "This node's role, term, leader and indexes",
                    {"200": _json("Health", "node status")},
                    security=public,
                )
            },
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics",
                    {
                        "200": {
                            "description": "text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                    security=public,
                )
            },
            "/api/openapi.json": {
                "get": _operation(
                    "This document",
                    {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                    security=public,
                )
            },
            "/api/tenants": {
                "post": _operation(
                    "Bootstrap a tenant and its owner API key (shown once)",
                    {
                        "201": _json("TenantCreated", "created"),
                        "200": _json("TenantCreated", "an idempotent replay: no key"),
                    },
                    body="CreateTenantRequest",
                    parameters=[_IDEMPOTENCY],
                    security=admin,
                )
            },
            "/api/tenant": {
                "get": _operation(
                    "The caller's tenant",
                    {"200": _json("Tenant", "the tenant")},
                    parameters=[_CONSISTENCY],
                )
            },
            "/api/keys": {
                "post": _operation(
                    "Issue an API key (scope tenant:admin); the key is shown once",
                    {
                        "201": _json("ApiKeyCreated", "created"),
                        "200": _json("ApiKeyCreated", "an idempotent replay: no key"),
                    },
                    body="IssueKeyRequest",
                    parameters=[_IDEMPOTENCY],
                )
            },
            "/api/keys/{id}": {
                "delete": _operation(
                    "Revoke an API key (scope tenant:admin)",
                    {"200": _json("ApiKeyCreated", "the revoked key")},
                    parameters=[_ID, _IDEMPOTENCY],
                )
            },
            "/api/talents": {
                "post": _operation(
                    "Register a talent (scope talents:write)",
                    {"201": _json("Talent", "registered")},
                    body="RegisterTalentRequest",
                    parameters=[_IDEMPOTENCY],
                ),
                "get": _operation(
                    "A page of talents in id order (scope talents:read)",
                    {"200": _json("TalentPage", "a page; nextCursor null on the last")},
                    parameters=[
                        _query(
                            "limit",
                            "1-200, default 50",
                            {"type": "integer", "minimum": 1, "maximum": 200},
                        ),
                        _query("cursor", "nextCursor of the previous page", {"type": "string"}),
                        _CONSISTENCY,
                    ],
                ),
            },
            "/api/talents/{id}": {
                "get": _operation(
                    "One talent (scope talents:read)",
                    {"200": _json("Talent", "the talent")},
                    parameters=[_ID, _CONSISTENCY],
                ),
                "patch": _operation(
                    "Change fields of a talent (scope talents:write)",
                    {"200": _json("Talent", "the new version")},
                    body="PatchTalentRequest",
                    parameters=[_ID, _IF_MATCH, _IDEMPOTENCY],
                ),
                "delete": _operation(
                    "Archive a talent (scope talents:write)",
                    {"200": _json("Talent", "the archived talent")},
                    parameters=[_ID, _IF_MATCH, _IDEMPOTENCY],
                ),
            },
            "/api/admin/members": {
                "get": _operation(
                    "The cluster configuration as this node knows it (progress on the leader)",
                    {"200": _json("Membership", "members, whether committed, progress")},
                    security=admin,
                ),
                "post": _operation(
                    "Add or remove one server; answered once committed (idempotent)",
                    {"200": _json("MemberChangeResult", "committed, or alreadyApplied")},
                    body="MemberChangeRequest",
                    security=admin,
                ),
            },
            "/api/talents/{id}/events": {
                "get": _operation(
                    "The talent's event stream (scope talents:read)",
                    {"200": _json("EventList", "events in version order")},
                    parameters=[
                        _ID,
                        _query(
                            "afterVersion",
                            "only events after this version",
                            {"type": "integer", "minimum": 0},
                        ),
                        _CONSISTENCY,
                    ],
                )
            },
        },
    }
