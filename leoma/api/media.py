"""Task media the dashboard can load: objects of directory buckets served by the API itself.

A browser will not load the `file://` URL of a directory bucket, so for those the API hands out
its own address, `/media/<validator>/<key>`, and streams the file with HTTP range requests
(video players seek with them). S3/R2 buckets keep their presigned URLs.

What may be served is narrow on purpose: only keys that the task's own events name — the first
frame and the original clip of a task the validator opened, and the videos of the miners whose
responses it accepted (`MinerResponded.object_key`) — and only after the key passed the stores'
key checks (no `..`, no absolute path, no reserved folder) and resolves inside the bucket.
Everything else is refused, whatever exists on disk next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from leoma.adapters.directory import DirectoryStore
from leoma.adapters.storage import validate_key
from leoma.api.state import ApiState
from leoma.errors import StorageError
from leoma.mirror.seedformat import first_frame_key, original_clip_key

__all__ = ["MEDIA_PREFIX", "content_type", "media_file", "media_url", "named_keys", "task_of_key"]

MEDIA_PREFIX = "/media/"
_TYPES = {".mp4": "video/mp4", ".png": "image/png", ".json": "application/json", ".webm": "video/webm"}
_RESERVED = ".leoma-store"


def task_of_key(key: str) -> int | None:
    """The task a key belongs to (its first segment as a plain decimal), else None."""
    head = key.split("/", 1)[0]
    return int(head) if head.isascii() and head.isdigit() and len(head) <= 19 else None


def named_keys(state: ApiState, validator: str, task_id: int) -> frozenset[str]:
    """The object keys `validator`'s events name for `task_id` (empty if it did not open the task)."""
    rec = state.tasks.get(task_id, {}).get(validator)
    if rec is None or rec.opened is None:
        return frozenset()
    keys = {first_frame_key(task_id), original_clip_key(task_id)}
    for resp, _ in rec.responses.values():
        if resp.status == "accepted" and resp.object_key and task_of_key(resp.object_key) == task_id:
            keys.add(resp.object_key)
    return frozenset(keys)


def media_url(base: str, validator: str, key: str) -> str:
    """The API's own URL of an object (`base` is the API's root URL, '' for a relative URL)."""
    return f"{base.rstrip('/')}{MEDIA_PREFIX}{quote(validator, safe='')}/{quote(key, safe='/')}"


def media_file(state: ApiState, store: DirectoryStore, validator: str, key: str,
               named: Callable[[str, int], frozenset[str]] | None = None) -> Path | None:
    """The file to serve for `key` of `validator`'s bucket, or None when it must be refused.

    `named(validator, task_id)` may stand in for `named_keys` (a cache of it).
    """
    try:
        validate_key(key)
    except StorageError:
        return None
    if key.split("/", 1)[0] == _RESERVED:
        return None
    task_id = task_of_key(key)
    if task_id is None:
        return None
    allowed = named(validator, task_id) if named is not None else named_keys(state, validator, task_id)
    if key not in allowed:
        return None
    root = store.root  # already resolved by the store
    path = (root / key).resolve()
    # A symlink in the bucket must not lead the API out of it.
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def content_type(key: str) -> str:
    """The media type of an object, from its key's suffix."""
    return _TYPES.get(Path(key).suffix.lower(), "application/octet-stream")
