"""The API's HTTP plumbing: JSON responses and bodies, query parameters, signed requests.

Every error a route raises is an `HttpError` (`{"detail": "..."}`); a signed request is
verified here before its route sees its body (seed-spec §7.2, `leoma.api.auth`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from leoma.api.auth import AuthError, is_ss58
from leoma.api.service import ApiService
from leoma.errors import HttpError


_enc = msgspec.json.Encoder()


def json_response(value: Any, status: int = 200) -> Response:
    """`value` as JSON (msgspec)."""
    return Response(_enc.encode(value), status_code=status, media_type="application/json")


def decode(body: bytes, kind: type[Any]) -> Any:
    """Decode a JSON body into `kind`; 422 with msgspec's message (names the field) otherwise."""
    if not body.strip():
        raise HttpError(422, "Request body is empty: a JSON object is required")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(422, f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise HttpError(422, f"Malformed JSON: {exc}") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes whatever Content-Length claimed."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "Request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def hotkey_param(request: Request, name: str = "hotkey") -> str:
    value = request.path_params[name]
    if not is_ss58(value):
        raise HttpError(400, "Invalid SS58 address format")
    return value


def int_query(request: Request, name: str, default: int | None, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise HttpError(422, f"Query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(422, f"Query parameter {name!r} must be a whole number, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise HttpError(422, f"Query parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value


def svc(request: Request) -> ApiService:
    return request.app.state.service  # type: ignore[no-any-return]


async def signed(request: Request, *, admin: bool = False) -> tuple[str, bytes]:
    """Authenticate a request; returns the signer and the raw body."""
    service = svc(request)
    body = await read_body(request, service.settings.max_body_size)
    try:
        return service.verifier.verify(request.headers, body, admin=admin), body
    except AuthError as exc:
        raise HttpError(exc.status, exc.detail) from None
