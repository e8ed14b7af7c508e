"""Every error Leoma raises on purpose.

    LeomaError
    ├── ConfigError            a setting is missing or malformed (says which and what to do)
    │   └── UnknownConsensus   a decision names a consensus digest whose content is not at hand
    ├── EventError             an event cannot be encoded, decoded or upcast
    │   └── UnknownKind        a row written by a newer version names a kind we do not know
    ├── LogError               the event log refuses an operation
    │   ├── ConflictError      the same (origin, key) offered with a different body
    │   ├── ChainBroken        a hash chain does not verify (names origin and seq)
    │   └── GapError           an import does not continue the stored chain
    ├── SignatureError         a signature is missing, garbage or does not verify
    ├── StorageError           an object store failed (after retries)
    │   ├── ObjectNotFound     the key is not there
    │   ├── ObjectExists       a write-once key is already taken
    │   └── ObjectTooLarge     refused by size before download
    ├── ChainError             the chain could not be read, or refused a transaction
    │   └── ChainRefused       the chain answered, and said no (carries the chain's reason)
    ├── MirrorError            a peer's published log could not be imported (reason recorded)
    ├── AdapterError           an outside service (Chutes, Gemini, Hugging Face) failed
    │   └── VideoError         bytes that are not an acceptable video
    ├── RequestRefused         the owner API refuses a request (carries `status` and `detail`)
    │   ├── AuthError          authentication (401/422) or authorisation (403) failed
    │   └── HttpError          any other refusal (400, 404, 409, 413, ...)
    ├── NotRanked              a miner asked about is not among the ranked ones (also a KeyError)
    └── StatePruned            a fold already forgot events a decision needs (also a ValueError)

`NotRanked` and `StatePruned` also subclass the built-in that callers caught before they existed,
so older `except KeyError` / `except ValueError` code keeps working.

Command-line code turns these into `click.ClickException`s with the same message.
"""

from __future__ import annotations


class LeomaError(Exception):
    """Base class of every error Leoma raises on purpose."""


class ConfigError(LeomaError):
    """A setting is missing or malformed."""


class UnknownConsensus(ConfigError):
    """A decision was made under a consensus digest whose content neither the log nor the caller holds."""


class EventError(LeomaError):
    """An event cannot be encoded, decoded or upcast."""


class UnknownKind(EventError):
    """A stored event names a kind this version does not know (written by a newer Leoma)."""


class LogError(LeomaError):
    """The event log refuses an operation."""


class ConflictError(LogError):
    """The same (origin, key) was offered with a different body; the first one stays."""


class ChainBroken(LogError):
    """A per-origin hash chain does not verify."""

    def __init__(self, message: str, *, origin: str = "", seq: int = 0) -> None:
        super().__init__(message)
        self.origin = origin
        self.seq = seq


class GapError(LogError):
    """Imported events do not continue the stored chain of their origin."""


class SignatureError(LeomaError):
    """A signature is missing, malformed, or does not verify."""


class StorageError(LeomaError):
    """An object store operation failed after its retries."""


class ObjectNotFound(StorageError):
    """The object is not in the store."""


class ObjectExists(StorageError):
    """A write-once object already exists."""


class ObjectTooLarge(StorageError):
    """An object is larger than the caller allows; it was not downloaded."""


class ChainError(LeomaError):
    """The chain could not be reached or read."""


class ChainRefused(ChainError):
    """The chain answered and refused the transaction; `reason` is the chain's own."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class MirrorError(LeomaError):
    """A peer's published log could not be imported."""


class AdapterError(LeomaError):
    """An outside service failed."""


class VideoError(AdapterError):
    """Bytes that are not an acceptable video."""


class RequestRefused(LeomaError):
    """The owner API refuses a request: `status` is the HTTP status, `detail` the caller's message."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AuthError(RequestRefused):
    """A request failed authentication (`status` 401/422) or authorisation (403)."""


class HttpError(RequestRefused):
    """A request refused with `status` and a message for the caller."""


class NotRanked(LeomaError, KeyError):
    """The miner asked about is not among the ranked miners."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StatePruned(LeomaError, ValueError):
    """The fold already forgot events this decision could read: fold from scratch instead."""
