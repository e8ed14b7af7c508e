"""Leoma: the validator, owner tools and miner tools of a Bittensor subnet for AI video.

Everything a validator observes or decides is an immutable event in `leoma.log.eventlog.EventLog`;
everything it shows or does is derived from those events by the pure functions in
`projections`. Heavy clients (bittensor, aioboto3, google-genai) are imported only by the
modules that use them, so importing `leoma` stays cheap: the names below are loaded on first
use (PEP 562), from the module named beside each.

The public surface:

    EventLog, Draft, Row          the hash-chained event log              (leoma.log.eventlog)
    ObjectStore, open_store       an object store by URL (file:, s3://)   (leoma.adapters.storage)
    Consensus, load_consensus     the pinned consensus and its digest     (leoma.log.consensus)
    replay_epoch, replay_all,     re-deciding recorded epochs from the
    recorded_epochs, ReplayResult log alone                               (leoma.tools.replay)
    LeomaError and its tree       every error raised on purpose           (leoma.errors)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.4.0"

_ERRORS = (
    "LeomaError", "ConfigError", "UnknownConsensus", "EventError", "UnknownKind", "LogError",
    "ConflictError", "ChainBroken", "GapError", "SignatureError", "StorageError", "ObjectNotFound",
    "ObjectExists", "ObjectTooLarge", "ChainError", "ChainRefused", "MirrorError", "AdapterError",
    "VideoError", "RequestRefused", "AuthError", "HttpError", "NotRanked", "StatePruned",
)
_WHERE: dict[str, str] = {
    "EventLog": "leoma.log.eventlog", "Draft": "leoma.log.eventlog", "Row": "leoma.log.eventlog",
    "ObjectStore": "leoma.adapters.storage", "open_store": "leoma.adapters.storage",
    "Consensus": "leoma.log.consensus", "load_consensus": "leoma.log.consensus",
    "replay_epoch": "leoma.tools.replay", "replay_all": "leoma.tools.replay",
    "recorded_epochs": "leoma.tools.replay", "ReplayResult": "leoma.tools.replay",
    **{name: "leoma.errors" for name in _ERRORS},
}

__all__ = ["__version__", *_WHERE]

if TYPE_CHECKING:
    from leoma.adapters.storage import ObjectStore, open_store
    from leoma.errors import (
        AdapterError, AuthError, ChainBroken, ChainError, ChainRefused, ConfigError, ConflictError,
        EventError, GapError, HttpError, LeomaError, LogError, MirrorError, NotRanked, ObjectExists,
        ObjectNotFound, ObjectTooLarge, RequestRefused, SignatureError, StatePruned, StorageError,
        UnknownConsensus, UnknownKind, VideoError,
    )
    from leoma.log.consensus import Consensus, load_consensus
    from leoma.log.eventlog import Draft, EventLog, Row
    from leoma.tools.replay import ReplayResult, recorded_epochs, replay_all, replay_epoch


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'leoma' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
