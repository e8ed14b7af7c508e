"""Best-effort reports to the owner's API (dashboard only), signed as the seed signs them.

    POST {API_URL}/miners/report   {"miners": [entry, ...]}            after each checker pass
    POST {API_URL}/samples/batch   {"signature": sig, "samples": [...]} after each published task

Headers (seed-spec §7.2): `X-Validator-Hotkey`, `X-Timestamp` (whole seconds) and `X-Signature`
= `0x` + sr25519 signature of the UTF-8 string `sha256hex(body) + ":" + timestamp`. Nothing here
decides anything: a failure is logged and the validator carries on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from leoma.log.events import MinerChecked
from leoma.services.context import ServiceContext

__all__ = ["MAX_BATCH", "post_signed", "report_miners", "report_samples", "sign_request", "miner_report_entry"]

log = logging.getLogger("leoma.reporter")

MAX_BATCH = 100
MAX_REASONING = 4096
MAX_ARTIFACTS = 8192


def sign_request(signer: Any, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The seed's signature headers for a request `body` (b"" when there is none)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    message = f"{hashlib.sha256(body).hexdigest()}:{ts}".encode()
    return {
        "X-Validator-Hotkey": str(signer.ss58_address),
        "X-Signature": "0x" + bytes(signer.sign(message)).hex(),
        "X-Timestamp": ts,
    }


async def post_signed(ctx: ServiceContext, path: str, data: Any) -> bool:
    """POST `data` as the seed's client did; True when the API answered 2xx. Never raises."""
    if not ctx.settings.api_url or ctx.http is None:
        return False
    body = json.dumps(data).encode() if data else b""
    headers = {"Content-Type": "application/json", **sign_request(ctx.signer, body)}
    url = ctx.settings.api_url.rstrip("/") + path
    try:
        resp = await ctx.http.post(url, content=body, headers=headers, timeout=30.0)
    except Exception as exc:  # best effort: the dashboard must never block the validator
        log.warning("report %s failed: %s: %s", path, type(exc).__name__, str(exc)[:200])
        return False
    if resp.status_code >= 300:
        log.warning("report %s refused: HTTP %s %s", path, resp.status_code, resp.text[:200])
        return False
    return True


def miner_report_entry(m: MinerChecked) -> dict[str, Any]:
    """The seed's `_to_report_entry`: empty strings and block 0 become null."""
    def opt(value: str) -> str | None:
        return value or None

    return {
        "uid": m.uid, "miner_hotkey": m.hotkey, "model_name": opt(m.model_name),
        "model_revision": opt(m.model_revision), "model_hash": opt(m.model_hash), "chute_id": opt(m.chute_id),
        "chute_slug": opt(m.chute_slug), "block": m.commit_block or None, "is_valid": m.valid,
        "invalid_reason": opt(m.invalid_reason),
    }


async def report_miners(ctx: ServiceContext, miners: Sequence[MinerChecked]) -> bool:
    """`POST /miners/report` with every checked miner (best effort)."""
    if not ctx.settings.api_url:
        return False
    return await post_signed(ctx, "/miners/report", {"miners": [miner_report_entry(m) for m in miners]})


def _clip(value: Any, limit: int) -> Any:
    # The API refuses the whole batch when one field is too long (seed-spec §12.26): cut, not fail.
    return value[:limit] if isinstance(value, str) else value


async def report_samples(ctx: ServiceContext, task_id: int, samples: Sequence[dict[str, Any]], signature: str) -> bool:
    """`POST /samples/batch` in chunks of at most 100 (best effort); True if every chunk landed."""
    if not ctx.settings.api_url or not samples:
        return False
    ok = True
    cleaned = [
        {**s, "reasoning": _clip(s.get("reasoning"), MAX_REASONING),
         "original_artifacts": _clip(s.get("original_artifacts"), MAX_ARTIFACTS),
         "generated_artifacts": _clip(s.get("generated_artifacts"), MAX_ARTIFACTS)}
        for s in samples
    ]
    for start in range(0, len(cleaned), MAX_BATCH):
        chunk = cleaned[start:start + MAX_BATCH]
        ok = await post_signed(ctx, "/samples/batch", {"samples": chunk, "signature": signature}) and ok
    if not ok:
        log.warning("task=%s dashboard samples not fully reported", task_id)
    return ok
