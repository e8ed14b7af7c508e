"""Signed requests (seed-spec §7.2), with the seed's holes closed.

A validator or admin sends three headers:

    X-Validator-Hotkey  its SS58 address
    X-Timestamp         whole seconds since the epoch, as decimal text
    X-Signature         "0x" + sr25519 signature of the UTF-8 text `sha256hex(body) + ":" + timestamp`

`body` is the raw request body (b"" for a GET). The server checks, in order: the headers are
present, the timestamp is a number within `expiry` seconds of now (either side), the signature
verifies for the hotkey, the signature was not used before (replay), and the hotkey is allowed
(an admin, or a validator of the registry or of a verified allowlist).

Fixes of the seed (§12.27): admin hotkeys are stripped; a signature seen once is refused for
the rest of its validity window (the seed accepted replays for ±300 s).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping

from leoma.adapters.signing import SS58_SHAPE, is_ss58
from leoma.errors import AuthError

__all__ = ["AuthError", "ReplayGuard", "Verifier", "message_for", "sign_headers", "SS58_PATTERN", "is_ss58"]

SS58_PATTERN = SS58_SHAPE  # the shape only; `is_ss58` also checks the checksum
HEADERS = ("X-Validator-Hotkey", "X-Signature", "X-Timestamp")


def message_for(body: bytes, timestamp: str) -> bytes:
    """The bytes a request signature covers: `sha256hex(body):timestamp`."""
    return f"{hashlib.sha256(body).hexdigest()}:{timestamp}".encode()


def sign_headers(signer: object, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The three signature headers for `body`, signed by `signer` (a keypair or wallet hotkey)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = signer.sign(message_for(body, ts))  # type: ignore[attr-defined]
    return {
        "X-Validator-Hotkey": str(signer.ss58_address),  # type: ignore[attr-defined]
        "X-Signature": "0x" + bytes(signature).hex(),
        "X-Timestamp": ts,
    }


class ReplayGuard:
    """Signatures seen within their validity window; each may be used once.

    Only signatures that verified are remembered, so garbage cannot fill it; entries leave
    once their timestamp is out of the window. `max_entries` bounds memory under a flood of
    valid requests: beyond it, requests are refused until old entries expire.
    """

    def __init__(self, expiry: int, max_entries: int = 200_000) -> None:
        self.expiry = expiry
        self.max_entries = max_entries
        self._seen: dict[str, int] = {}

    def _purge(self, now: int) -> None:
        stale = [s for s, until in self._seen.items() if until < now]
        for s in stale:
            del self._seen[s]

    def claim(self, signature: bytes, timestamp: int, now: int) -> str:
        """Record a signature; returns "" when fresh, else why the request is refused."""
        key = signature.hex()
        until = timestamp + self.expiry
        held = self._seen.get(key)
        if held is not None and held >= now:
            return "Replayed request: this signature was already used; sign each request anew"
        if len(self._seen) >= self.max_entries:
            self._purge(now)
            if len(self._seen) >= self.max_entries:
                return "Too many signed requests in the last window; retry shortly"
        self._seen[key] = until
        return ""


class Verifier:
    """Checks signed requests. `allowed()` returns the hotkeys (besides admins) that may sign."""

    def __init__(
        self,
        admins: frozenset[str],
        allowed: Callable[[], frozenset[str]],
        *,
        expiry: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.admins = admins
        self.allowed = allowed
        self.expiry = expiry
        self.clock = clock
        self.replays = ReplayGuard(expiry)

    def verify(self, headers: Mapping[str, str], body: bytes, *, admin: bool = False) -> str:
        """The signing hotkey, or `AuthError` naming what was wrong."""
        values = {}
        for name in HEADERS:
            value = headers.get(name)
            if value is None or not value.strip():
                raise AuthError(422, f"Missing header {name}: signed requests need {', '.join(HEADERS)}")
            values[name] = value.strip()
        hotkey, signature, stamp = values["X-Validator-Hotkey"], values["X-Signature"], values["X-Timestamp"]
        if not stamp.isascii() or not stamp.lstrip("-").isdigit() or len(stamp) > 20:
            raise AuthError(401, "Invalid timestamp format")
        ts, now = int(stamp), int(self.clock())
        if abs(now - ts) > self.expiry:
            raise AuthError(401, f"Timestamp expired (max {self.expiry}s)")
        if not is_ss58(hotkey):
            raise AuthError(401, "Invalid SS58 address format in X-Validator-Hotkey")
        text = signature[2:] if signature[:2] in ("0x", "0X") else signature
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise AuthError(401, "Invalid signature: not hex") from None
        if len(raw) != 64:
            raise AuthError(401, f"Invalid signature: {len(raw)} bytes, an sr25519 signature is 64")
        from bittensor_core import verify as sr_verify

        try:
            ok = sr_verify(message_for(body, stamp), raw, hotkey)
        except Exception:  # the Rust core raises plain errors for undecodable addresses
            raise AuthError(401, "Signature verification failed") from None
        if not ok:
            raise AuthError(401, "Invalid signature")
        is_admin = hotkey in self.admins
        if admin and not is_admin:
            raise AuthError(403, "Admin access required")
        if not is_admin and hotkey not in self.allowed():
            raise AuthError(403, "Validator not registered. The subnet owner must add your hotkey "
                                 "(leoma validator add ...).")
        refused = self.replays.claim(raw, ts, now)
        if refused:
            raise AuthError(401, refused)
        return hotkey
