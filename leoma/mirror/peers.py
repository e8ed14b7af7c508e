"""Peer validators from `PEER_VALIDATORS`: who they are and where their logs are published.

The value is the seed's JSON list (seed-spec §4.2), one object per allowlisted validator,
including this one:

    [{"hotkey": "5F...", "uid": 3, "bucket": "leoma-val-3",
      "endpoint": "https://<acct>.r2.cloudflarestorage.com", "region": "auto",
      "read_access_key": "...", "read_secret_key": "..."}]

An entry may instead give `url` (`file:///path` for the devnet's directory buckets, or
`s3://bucket?endpoint=...`), in which case `bucket`, `endpoint` and the keys are optional.

Unlike the seed, which skipped bad entries with a log line, `parse_peers` returns every problem
(entry index and field) next to the good entries, so a typo is seen, not silently lost. Later
duplicates of a hotkey replace earlier ones (the seed's rule) and are reported too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import msgspec

from leoma.adapters.signing import SS58_SHAPE, is_ss58
from leoma.adapters.storage import ObjectStore
from leoma.errors import ConfigError

__all__ = ["PeerEntry", "PeerProblem", "parse_peers", "peer_store", "peers_from_env"]

SS58_RE = SS58_SHAPE  # the shape only; `is_ss58` also checks the checksum
_S3_REQUIRED = ("bucket", "endpoint", "read_access_key", "read_secret_key")
_TEXT_FIELDS = ("hotkey", "bucket", "endpoint", "region", "read_access_key", "read_secret_key", "url")


class PeerEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One peer validator and how to read its bucket."""

    hotkey: str
    uid: int | None = None
    bucket: str = ""
    endpoint: str = ""
    region: str = "auto"
    read_access_key: str = ""
    read_secret_key: str = ""
    url: str = ""

    def __repr__(self) -> str:  # never the keys
        where = self.url or f"{self.endpoint}/{self.bucket}"
        return f"PeerEntry(hotkey={self.hotkey!r}, uid={self.uid!r}, at={where!r})"


class PeerProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Why an entry (by its index in the list; -1 for the whole value) was not used as given."""

    index: int
    field: str
    message: str

    def __str__(self) -> str:
        where = "PEER_VALIDATORS" if self.index < 0 else f"PEER_VALIDATORS[{self.index}]"
        return f"{where}{'.' + self.field if self.field else ''}: {self.message}"


def parse_peers(text: str | None) -> tuple[list[PeerEntry], list[PeerProblem]]:
    """Parse the `PEER_VALIDATORS` JSON into entries and a list of problems (see module doc)."""
    if text is None or not text.strip():
        return [], []
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [PeerProblem(index=-1, field="", message=f"not valid JSON ({exc.msg} at char {exc.pos})")]
    if not isinstance(value, list):
        return [], [PeerProblem(index=-1, field="", message=f"must be a JSON list of objects, got {type(value).__name__}")]
    found: dict[str, PeerEntry] = {}
    problems: list[PeerProblem] = []
    for index, item in enumerate(value):
        entry, bad = _entry(index, item)
        problems.extend(bad)
        if entry is None:
            continue
        if entry.hotkey in found:
            problems.append(PeerProblem(index=index, field="hotkey",
                                        message=f"{entry.hotkey} is listed twice; this later entry replaces the earlier"))
        found[entry.hotkey] = entry
    return list(found.values()), problems


def _entry(index: int, item: Any) -> tuple[PeerEntry | None, list[PeerProblem]]:
    if not isinstance(item, dict):
        return None, [PeerProblem(index=index, field="", message=f"must be an object, got {type(item).__name__}")]
    problems: list[PeerProblem] = []
    for name in _TEXT_FIELDS:
        if name in item and item[name] is not None and not isinstance(item[name], str):
            problems.append(PeerProblem(index=index, field=name, message=f"must be a string, got {type(item[name]).__name__}"))
    uid = item.get("uid")
    if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid < 0):
        problems.append(PeerProblem(index=index, field="uid", message=f"must be a non-negative integer, got {uid!r}"))
    if problems:
        return None, problems
    text = {name: (item.get(name) or "").strip() for name in _TEXT_FIELDS}
    if not text["hotkey"]:
        problems.append(PeerProblem(index=index, field="hotkey", message="is missing"))
    elif not is_ss58(text["hotkey"]):
        problems.append(PeerProblem(index=index, field="hotkey", message=f"{text['hotkey'][:60]!r} is not an SS58 address"))
    if text["url"]:
        if not text["url"].startswith(("file:", "s3://")):
            problems.append(PeerProblem(index=index, field="url", message="must start with file: or s3://"))
    else:
        for name in _S3_REQUIRED:
            if not text[name]:
                problems.append(PeerProblem(index=index, field=name, message="is missing (or give a url)"))
    if problems:
        return None, problems
    return PeerEntry(hotkey=text["hotkey"], uid=uid, bucket=text["bucket"], endpoint=text["endpoint"],
                     region=text["region"] or "auto", read_access_key=text["read_access_key"],
                     read_secret_key=text["read_secret_key"], url=text["url"]), []


def _endpoint_url(endpoint: str) -> str:
    # The seed stored a bare host and always used TLS; a scheme given explicitly is kept.
    endpoint = endpoint.rstrip("/")
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def peer_store(entry: PeerEntry, *, env: Mapping[str, str] = os.environ, **options: Any) -> ObjectStore:
    """The store an entry's published log is read from (`options` go to `S3Store`)."""
    from leoma.adapters.s3 import S3Store
    from leoma.adapters.storage import open_store

    if entry.url:
        merged = dict(env)
        if entry.read_access_key and entry.read_secret_key:
            # The default variable names of open_store, filled from the entry's own read keys.
            merged["AWS_ACCESS_KEY_ID"] = entry.read_access_key
            merged["AWS_SECRET_ACCESS_KEY"] = entry.read_secret_key
        return open_store(entry.url, env=merged, **options)
    return S3Store(entry.bucket, endpoint_url=_endpoint_url(entry.endpoint), region=entry.region,
                   access_key=entry.read_access_key, secret_key=entry.read_secret_key, **options)


def peers_from_env(text: str | None = None, *, own: str | None = None, strict: bool = False,
                   env: Mapping[str, str] = os.environ) -> tuple[list[PeerEntry], list[PeerProblem]]:
    """`PEER_VALIDATORS` (or `text`) without the own hotkey; `strict` raises on any problem."""
    entries, problems = parse_peers(env.get("PEER_VALIDATORS", "") if text is None else text)
    if strict and problems:
        raise ConfigError("PEER_VALIDATORS has problems: " + "; ".join(str(p) for p in problems))
    return [e for e in entries if e.hotkey != own], problems
