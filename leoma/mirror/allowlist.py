"""The validator allowlist: a JSON file in the source bucket anchored by the owner's commitment.

The owner puts `allowlist/v1.json` in the source bucket and commits
`leoma:allowlist:v1:<sha256 of its bytes>` from the subnet owner hotkey. A validator trusts the
file only when its bytes hash to the committed digest (seed-spec §3.1). Reading returns an
`Allowlist` or raises `AllowlistRejected` whose `reason` says precisely why it was not trusted.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import msgspec

from leoma.errors import ConfigError, LeomaError, ObjectNotFound, StorageError

ALLOWLIST_KEY = "allowlist/v1.json"
COMMITMENT_PREFIX = "leoma:allowlist:v1:"


class AllowlistRejected(LeomaError):
    """The on-chain allowlist could not be verified; `reason` is a short machine-readable tag."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Allowlist(msgspec.Struct, frozen=True, kw_only=True):
    """A verified allowlist: validators in rotation order (code-point sort), interval, digest."""

    validators: tuple[str, ...]
    interval: int
    digest: str
    owner_hotkey: str


class Store(Protocol):
    async def put(self, key: str, data: bytes, *, content_type: str | None = None) -> None: ...

    async def get(self, key: str) -> bytes: ...


class AllowlistChain(Protocol):
    async def owner_hotkey(self, netuid: int) -> str | None: ...

    async def plain_commitment(self, netuid: int, hotkey: str) -> str | None: ...

    async def set_commitment(self, wallet: Any, netuid: int, text: str) -> int: ...


def canonical_bytes(validators: list[str] | tuple[str, ...], interval: int) -> bytes:
    """The seed's canonical file: sorted keys, compact separators, validators sorted and unique."""
    body = {"version": 1, "interval": int(interval), "validators": sorted({str(v) for v in validators})}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def digest(data: bytes) -> str:
    """Lowercase hex sha256."""
    return hashlib.sha256(data).hexdigest()


def parse_commitment(text: str | None) -> str | None:
    """The digest after the `leoma:allowlist:v1:` prefix, stripped; None if absent or empty."""
    if not text or not text.startswith(COMMITMENT_PREFIX):
        return None
    rest = text[len(COMMITMENT_PREFIX) :]
    # An owner-validator keeps its anchor (`leoma:anchor:...`) as another field of the same
    # commitment; the SDK joins the fields' bytes, so the digest ends where the next one starts.
    rest = rest.split("leoma:", 1)[0].strip()
    return rest or None


async def publish_allowlist(store: Store, chain: AllowlistChain, wallet: Any, netuid: int,
                            validators: list[str], interval: int) -> str:
    """Put the allowlist file in the source bucket, then commit its digest from the owner hotkey."""
    cleaned = sorted({v.strip() for v in validators if v and v.strip()})
    if not cleaned:
        raise ConfigError("the allowlist is empty: pass at least one validator hotkey")
    if int(interval) <= 0:
        raise ConfigError(f"the rotation interval must be a positive number of blocks, not {interval}")
    data = canonical_bytes(cleaned, interval)
    value = digest(data)
    await store.put(ALLOWLIST_KEY, data, content_type="application/json")
    await chain.set_commitment(wallet, netuid, COMMITMENT_PREFIX + value)
    return value


def _reject(reason: str, message: str) -> AllowlistRejected:
    return AllowlistRejected(message, reason=reason)


async def read_allowlist(chain: AllowlistChain, store: Store, netuid: int) -> Allowlist:
    """Read and verify the allowlist; raises `AllowlistRejected` with the reason it is not trusted."""
    owner = await chain.owner_hotkey(netuid)
    if not owner:
        raise _reject("no_owner", f"subnet {netuid} has no owner hotkey on chain")
    committed = parse_commitment(await chain.plain_commitment(netuid, owner))
    if committed is None:
        raise _reject("no_commitment", f"the owner {owner} has not committed an allowlist (leoma validator publish)")
    try:
        data = await store.get(ALLOWLIST_KEY)
    except ObjectNotFound:
        raise _reject("file_missing", f"{ALLOWLIST_KEY} is not in the source bucket") from None
    except StorageError as exc:
        raise _reject("file_unreadable", f"{ALLOWLIST_KEY} could not be read: {exc}") from exc
    actual = digest(data)
    # Compared exactly, as the seed does: the digest is committed as lowercase hex, and a
    # commitment in another case is not the one `leoma validator publish` writes.
    if actual != committed:
        raise _reject("hash_mismatch",
                      f"{ALLOWLIST_KEY} hashes to {actual} but the owner committed {committed}: the file was tampered with or replaced")
    try:
        body = json.loads(data)
        validators = sorted({str(h) for h in body["validators"] if h})
        interval = int(body.get("interval", 0))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise _reject("bad_json", f"{ALLOWLIST_KEY} is not a valid allowlist: {exc}") from exc
    if not validators:
        raise _reject("empty", f"{ALLOWLIST_KEY} lists no validators")
    if interval <= 0:
        raise _reject("bad_interval", f"{ALLOWLIST_KEY} has interval {interval}; it must be positive")
    return Allowlist(validators=tuple(validators), interval=interval, digest=actual, owner_hotkey=owner)
