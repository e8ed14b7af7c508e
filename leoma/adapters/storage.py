"""Object stores: an S3/R2 bucket (aioboto3) and a local directory, behind one contract.

Both stores speak the same small vocabulary — `get`, `put` (optionally write-once), `head`,
`list` (lexicographic, paged, `start_after`), `delete`, `presign_get` — and are exercised by one
contract test suite, so the devnet's directory buckets behave like R2.

Keys are validated the same way by both stores (`validate_key`): no empty key, no leading `/`,
no empty, `.` or `..` segment, no backslash, no control character. A key that would climb out of
a directory store is therefore refused before any I/O, and a key that works on one store works
on the other.

`open_store(url)` builds a store from a URL:

    file:///abs/path            a DirectoryStore rooted there (`file:relative/path` also works)
    s3://bucket?endpoint=https://<acct>.r2.cloudflarestorage.com&region=auto
        &access_key_env=R2_OWN_WRITE_ACCESS_KEY&secret_key_env=R2_OWN_WRITE_SECRET_KEY

Secrets come from the environment only, and neither they nor presigned URLs are ever logged.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from leoma.errors import ConfigError, StorageError

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "open_store",
    "validate_key",
]

# What both stores report for an object stored without a content type.
DEFAULT_CONTENT_TYPE = "application/octet-stream"

# S3 refuses keys longer than 1024 UTF-8 bytes; refusing them here keeps both stores alike.
MAX_KEY_BYTES = 1024


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a store knows about one object without reading it.

    `etag` is the MD5 hex digest of the content for single-part uploads (S3, R2, moto and the
    directory store agree on that), without the quotes S3 puts around it. `content_type` is
    None in listings (S3's ListObjectsV2 does not return it) and DEFAULT_CONTENT_TYPE for an
    object stored without one.
    """

    key: str
    size: int
    etag: str
    content_type: str | None = None


def validate_key(key: str) -> str:
    """Return `key` if it is a safe object key for every store; raise StorageError otherwise."""
    if not isinstance(key, str) or not key:
        raise StorageError(f"invalid object key {key!r}: a key must be a non-empty string")
    if key.startswith("/"):
        raise StorageError(f"invalid object key {key!r}: it must not start with '/'")
    if "\\" in key:
        raise StorageError(f"invalid object key {key!r}: backslashes are not allowed")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise StorageError(f"invalid object key {key!r}: control characters are not allowed")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise StorageError(
                f"invalid object key {key!r}: empty, '.' and '..' path segments are not allowed"
            )
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise StorageError(f"invalid object key {key[:60]!r}...: longer than {MAX_KEY_BYTES} bytes")
    return key


def validate_prefix(prefix: str) -> str:
    # A prefix is the start of a key: it may end in '/' or a partial segment, but must not
    # smuggle in anything a key may not hold.
    if prefix:
        validate_key(prefix + "x")
    return prefix


@runtime_checkable
class ObjectStore(Protocol):
    """The operations Leoma needs from a bucket. Every method raises StorageError subclasses."""

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the object's bytes; ObjectNotFound if absent, ObjectTooLarge (before any
        download) if it is larger than `max_bytes`."""
        ...

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> None:
        """Store `data` under `key`. With `if_absent`, write once: ObjectExists if taken."""
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """Return the object's size, etag and content type, or None if absent."""
        ...

    def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Yield objects whose key starts with `prefix`, in lexicographic key order, strictly
        after `start_after`, at most `limit` of them."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing an absent object is not an error."""
        ...

    async def presign_get(self, key: str, expires: int = 3600) -> str:
        """Return a URL that fetches the object without credentials for `expires` seconds."""
        ...

    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...

    async def __aenter__(self) -> ObjectStore: ...

    async def __aexit__(self, *exc: object) -> None: ...


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------

_S3_QUERY = frozenset({"endpoint", "region", "access_key_env", "secret_key_env", "addressing"})


def open_store(url: str, *, env: Mapping[str, str] = os.environ, **options: Any) -> ObjectStore:
    """Build a store from `file:///abs/path`, `file:relative/path` or `s3://bucket?...`.

    S3 query parameters: `endpoint` (omit for AWS), `region` (default `auto`, R2's value),
    `addressing` (`path` by default), and `access_key_env` / `secret_key_env`: the names of the
    environment variables holding the keys (default `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    Extra keyword `options` go to S3Store (attempts, base_delay, page_size, timeouts...).
    """
    from leoma.adapters.directory import DirectoryStore  # the stores import this contract
    from leoma.adapters.s3 import S3Store

    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"store URL {url!r} names host {parts.netloc!r}: use file:///absolute/path or file:relative/path"
            )
        path = urllib.parse.unquote(parts.path)
        if not path:
            raise ConfigError(f"store URL {url!r} has no path: use file:///absolute/path or file:relative/path")
        return DirectoryStore(path)
    if parts.scheme == "s3":
        bucket = parts.netloc
        if not bucket or parts.path not in ("", "/"):
            raise ConfigError(f"store URL {url!r}: write s3://BUCKET?endpoint=...; a key prefix is not supported")
        query: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if name not in _S3_QUERY:
                raise ConfigError(
                    f"store URL for bucket {bucket!r} has unknown parameter {name!r}; known: {', '.join(sorted(_S3_QUERY))}"
                )
            query[name] = value
        access_var = query.get("access_key_env") or "AWS_ACCESS_KEY_ID"
        secret_var = query.get("secret_key_env") or "AWS_SECRET_ACCESS_KEY"
        access, secret = env.get(access_var, ""), env.get(secret_var, "")
        for var, value in ((access_var, access), (secret_var, secret)):
            if not value:
                raise ConfigError(f"{var} is not set: the store s3://{bucket} reads its keys from it")
        return S3Store(
            bucket,
            endpoint_url=query.get("endpoint") or None,
            region=query.get("region") or "auto",
            addressing_style=query.get("addressing") or "path",
            access_key=access,
            secret_key=secret,
            **options,
        )
    raise ConfigError(f"store URL {url!r}: the scheme must be file: or s3:")
