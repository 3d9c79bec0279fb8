"""RFC 7807 problem details: every error the API returns is one of these.

A handler raises `ApiProblem`; the middleware turns it into an `application/problem+json`
response. Validation problems name the offending input (`field`: a JSON path such as
`accounts[0].handle`, a query parameter, or a header name).
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec
from aiohttp import web

from mox.statemachine import commands as codes

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

# HTTP status of each state machine error code.
STATUS_OF_CODE: Final[dict[str, int]] = {
    codes.VALIDATION: 422,
    codes.NOT_FOUND: 404,
    codes.VERSION_CONFLICT: 409,
    codes.SLUG_TAKEN: 409,
    codes.DUPLICATE_HANDLE: 409,
    codes.TALENT_ARCHIVED: 409,
    codes.FORBIDDEN: 403,
    codes.STALE_REQUEST: 409,
    codes.IDEMPOTENCY_KEY_REUSED: 422,
    codes.MALFORMED: 400,
    codes.TENANT_LIMIT: 409,
}

TITLES: Final[dict[int, str]] = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class ApiProblem(Exception):
    """An error response. `code` is a stable machine-readable name (e.g. VERSION_CONFLICT)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        assert 400 <= status <= 599, status
        assert code, "a problem needs a code"
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self, request_id: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:mox:problem:{self.code.lower().replace('_', '-')}",
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "requestId": request_id,
        }
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body

    def response(self, request_id: str) -> web.Response:
        return web.Response(
            status=self.status,
            body=msgspec.json.encode(self.body(request_id)),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def problem_from_code(code: str, detail: str, field: str) -> ApiProblem:
    """The problem for a state machine error result."""
    status = STATUS_OF_CODE.get(code, 400)
    return ApiProblem(status, code, detail, field=field or None)


def validation(field: str, detail: str) -> ApiProblem:
    return ApiProblem(422, codes.VALIDATION, f"{field}: {detail}", field=field)


_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")


def field_of(error: msgspec.ValidationError) -> str:
    """The JSON path of a msgspec validation error, without the leading `$.`."""
    message = str(error)
    at = _AT_PATH.search(message)
    path = at.group("path") if at else ""
    path = path[1:] if path.startswith(".") else path
    named = _NAMED.match(message)
    if named:
        name = named.group("name")
        path = f"{path}.{name}" if path else name
    return path or "body"


def from_json_error(error: msgspec.DecodeError) -> ApiProblem:
    """400 for bytes that are not JSON, 422 (naming the field) for JSON of the wrong shape."""
    if isinstance(error, msgspec.ValidationError):
        field = field_of(error)
        detail = _AT_PATH.sub("", str(error))
        return ApiProblem(422, codes.VALIDATION, f"{field}: {detail}", field=field)
    return ApiProblem(400, "MALFORMED_JSON", f"the body is not valid JSON: {error}", field="body")
