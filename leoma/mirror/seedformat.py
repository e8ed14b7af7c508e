"""The seed's per-task bucket layout and its signed verdict file, so both generations interoperate.

Per task `T` (the rotation index) a sampler's result bucket holds:

    T/first_frame.png                           first frame of the source clip
    T/original_clip.mp4                         the 5 s source clip
    T/metadata.json                             task metadata, JSON with 2-space indent
    T/generated_videos/<safe miner>.mp4         each accepted miner video
    T/evaluation_results/<safe validator>.json  the signed verdict file

`safe` = the hotkey with `/` and `\\` replaced by `_` (a no-op for SS58 addresses).

The verdict file is `json.dumps({"signature": sig, "data": entries}, indent=2)` where
`sig = "0x" + hex(sr25519_sign(sha256(json.dumps(entries, sort_keys=True)).digest()))`.
Unlike the seed, `read_verdict_file` accepts a file only when that signature verifies: a
missing, empty or garbage signature is rejected, not waved through. Like the seed, a file
whose `data` is missing or empty holds no verdicts (the signature is then over `[]`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

from leoma.adapters.storage import validate_key
from leoma.errors import SignatureError, StorageError

__all__ = [
    "Signer",
    "first_frame_key",
    "generated_video_key",
    "metadata_key",
    "original_clip_key",
    "parse_verdict_key",
    "read_verdict_file",
    "safe_name",
    "sign_verdict_file",
    "verdict_digest",
    "verdict_key",
]

VERDICT_CONTENT_TYPE = "application/json"
SR25519_SIGNATURE_BYTES = 64


class Signer(Protocol):
    """Anything that signs bytes with an sr25519 key (a bittensor `Keypair`, a wallet hotkey)."""

    def sign(self, data: bytes) -> bytes: ...


# ---- keys -----------------------------------------------------------------------------------


def safe_name(hotkey: str) -> str:
    """The seed's file-name form of a hotkey: `/` and `\\` become `_`."""
    if not isinstance(hotkey, str) or not hotkey:
        raise StorageError(f"hotkey {hotkey!r} cannot name an object: it must be a non-empty string")
    return hotkey.replace("/", "_").replace("\\", "_")


def _task(task_id: int) -> str:
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 0:
        raise StorageError(f"task id {task_id!r} is not a rotation index (a non-negative integer)")
    return str(task_id)


def first_frame_key(task_id: int) -> str:
    """`T/first_frame.png`."""
    return f"{_task(task_id)}/first_frame.png"


def original_clip_key(task_id: int) -> str:
    """`T/original_clip.mp4`."""
    return f"{_task(task_id)}/original_clip.mp4"


def metadata_key(task_id: int) -> str:
    """`T/metadata.json`."""
    return f"{_task(task_id)}/metadata.json"


def generated_video_key(task_id: int, miner_hotkey: str) -> str:
    """`T/generated_videos/<safe miner>.mp4`."""
    return validate_key(f"{_task(task_id)}/generated_videos/{safe_name(miner_hotkey)}.mp4")


def verdict_key(task_id: int, validator_hotkey: str) -> str:
    """`T/evaluation_results/<safe validator>.json`: the validator's signed verdict file."""
    return validate_key(f"{_task(task_id)}/evaluation_results/{safe_name(validator_hotkey)}.json")


def parse_verdict_key(key: str) -> tuple[int, str] | None:
    """`(task_id, safe validator name)` if `key` is a verdict file's key, else None.

    Only keys whose first segment is a plain decimal task id count, as in the seed's listing.
    """
    parts = key.split("/")
    if len(parts) != 3 or parts[1] != "evaluation_results" or not parts[2].endswith(".json"):
        return None
    task, name = parts[0], parts[2][: -len(".json")]
    if not task.isascii() or not task.isdigit() or not name:
        return None
    return int(task), name


# ---- verdict file ---------------------------------------------------------------------------


def verdict_digest(entries: Sequence[dict[str, Any]]) -> bytes:
    """sha256 of the seed's canonical form: `json.dumps(entries, sort_keys=True)`, UTF-8."""
    canonical = json.dumps(list(entries), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).digest()


def sign_verdict_file(data_entries: Sequence[dict[str, Any]], keypair: Signer) -> bytes:
    """The bytes of a verdict file holding `data_entries`, signed by `keypair`."""
    entries = list(data_entries)
    _check_entries(entries, "cannot sign verdict file")
    signature = "0x" + bytes(keypair.sign(verdict_digest(entries))).hex()
    return json.dumps({"signature": signature, "data": entries}, indent=2).encode("utf-8")


def _check_entries(entries: object, what: str) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        raise StorageError(f"{what}: 'data' is {type(entries).__name__}, not a list of verdicts")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise StorageError(f"{what}: verdict #{i} is {type(entry).__name__}, not an object")
    return entries


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON; a score that cannot be compared must not enter the window.
    raise ValueError(f"{name} is not a JSON number")


def read_verdict_file(raw: bytes, signer_ss58: str) -> list[dict[str, Any]]:
    """The verdicts in a verdict file, only if `signer_ss58` signed exactly these entries.

    Raises StorageError when the file is not a well-formed verdict file and SignatureError when
    the signature is missing, malformed, from another key or over other data. The reason is in
    the message, so a rejected peer file can be recorded with it.
    """
    from bittensor_core import verify

    what = f"verdict file of {signer_ss58[:16]!r}"
    try:
        wrapper = json.loads(bytes(raw).decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise StorageError(f"{what} is not JSON: {exc}") from None
    if not isinstance(wrapper, dict):
        raise StorageError(f"{what} is a JSON {type(wrapper).__name__}, not an object")
    # The seed reads `wrapper["data"] or []`: a file with no (or an empty) `data` holds no
    # verdicts, and its signature must then be over the empty list.
    data = wrapper.get("data")
    entries = _check_entries(data if data else [], what)
    signature = wrapper.get("signature")
    if not isinstance(signature, str) or not signature.strip():
        raise SignatureError(f"{what} is unsigned (signature missing or empty); rejected")
    text = signature[2:] if signature[:2] in ("0x", "0X") else signature
    try:
        sig = bytes.fromhex(text)
    except ValueError:
        raise SignatureError(f"{what}: signature is not hex; rejected") from None
    if len(sig) != SR25519_SIGNATURE_BYTES:
        raise SignatureError(
            f"{what}: signature is {len(sig)} bytes, an sr25519 signature is {SR25519_SIGNATURE_BYTES}; rejected"
        )
    try:
        ok = verify(verdict_digest(entries), sig, signer_ss58)
    except ValueError as exc:  # the Rust core raises ValueError for a malformed address
        raise SignatureError(f"{what}: cannot verify, signer address is invalid ({exc})") from None
    if not ok:
        raise SignatureError(f"{what}: signature does not match the data or the signer; rejected")
    return entries

