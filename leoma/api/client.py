"""A small signed client of the owner's API, for the admin command line.

    client = ApiClient("https://api.leoma.ai", signer)
    client.post("/blacklist", {"hotkey": hk, "reason": "copycat"})   # signed (seed-spec §7.2)
    client.get("/blacklist")                                         # public

Errors carry the API's own `detail` message: `AdapterError("owner API: HTTP 403 Admin access required")`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from leoma.api.auth import sign_headers
from leoma.errors import AdapterError

__all__ = ["ApiClient", "DEFAULT_API_URL"]

DEFAULT_API_URL = "https://api.leoma.ai"


class ApiClient:
    """GET and signed POST/DELETE against the owner's API."""

    def __init__(self, base_url: str, signer: Any = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = signer
        self.http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, data: Any = None, *, signed: bool = False) -> Any:
        """Send one request; returns the decoded JSON or raises `AdapterError` with the API's message."""
        body = json.dumps(data).encode() if data else b""
        headers = {"Content-Type": "application/json"} if body else {}
        if signed:
            if self.signer is None:
                raise AdapterError("this command signs its request: give --dev-key or a wallet")
            headers.update(sign_headers(self.signer, body))
        url = self.base_url + path
        try:
            resp = self.http.request(method, url, content=body or None, headers=headers)
        except httpx.HTTPError as exc:
            raise AdapterError(f"owner API at {self.base_url} unreachable: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 300:
            try:
                detail = resp.json().get("detail", resp.text[:200])
            except ValueError:
                detail = resp.text[:200]
            raise AdapterError(f"owner API: HTTP {resp.status_code} {detail}")
        try:
            return resp.json()
        except ValueError:
            raise AdapterError(f"owner API answered {method} {path} with non-JSON content") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, data: Any) -> Any:
        return self.request("POST", path, data, signed=True)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path, signed=True)
