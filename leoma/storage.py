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

import asyncio
import builtins
import contextlib
import hashlib
import logging
import os
import random
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec

from leoma import retry as retry_policy
from leoma.errors import ConfigError, ObjectExists, ObjectNotFound, ObjectTooLarge, StorageError

__all__ = [
    "DirectoryStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "open_store",
    "validate_key",
]

log = logging.getLogger("leoma.storage")

T = TypeVar("T")

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


def _validate_prefix(prefix: str) -> str:
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
# Directory store
# --------------------------------------------------------------------------------------------

# Temporary files and metadata sidecars live under this reserved top-level folder, so a
# listing never shows them and a crash never leaves half a file at a real key.
_RESERVED = ".leoma-store"


class _Sidecar(msgspec.Struct, frozen=True):
    etag: str
    content_type: str | None
    size: int
    # The inode of the data file this sidecar describes; a mismatch means the data was replaced
    # (or the sidecar is stale after a crash), and the etag is recomputed instead of trusted.
    ino: int


class DirectoryStore:
    """Objects as files under `root`: atomic writes, write-once via `os.link`, S3-ordered listing.

    Limits compared with S3: a key cannot be both an object and a "folder" of other objects
    (`a` and `a/b`), and each path segment must fit the file system (usually 255 bytes).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / _RESERVED / "tmp"
        self._meta = self.root / _RESERVED / "meta"

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    async def __aenter__(self) -> DirectoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release; present for the contract."""

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == _RESERVED:
            raise StorageError(f"invalid object key {key!r}: {_RESERVED}/ is reserved by the directory store")
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self._meta / (key + ".json")

    # -- reads ---------------------------------------------------------------------------------

    def _info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        try:
            side = msgspec.json.decode(self._meta_path(key).read_bytes(), type=_Sidecar)
        except (OSError, msgspec.DecodeError):
            side = None
        if side is not None and side.ino == st.st_ino and side.size == st.st_size:
            return ObjectInfo(key=key, size=st.st_size, etag=side.etag, content_type=side.content_type)
        # A file placed by hand or a stale sidecar: describe the bytes that are really there.
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        return ObjectInfo(key=key, size=st.st_size, etag=digest, content_type=DEFAULT_CONTENT_TYPE)

    async def head(self, key: str) -> ObjectInfo | None:
        """Return size, etag and content type of `key`, or None if absent."""
        return await asyncio.to_thread(self._info, key)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLarge(
                        f"{self.root}: {key!r} is {size} bytes, more than the {max_bytes} allowed"
                    )
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.root}: no object {key!r}") from None
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot read {key!r}: {exc}") from exc

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes of `key` (see ObjectStore.get)."""
        return await asyncio.to_thread(self._read, key, max_bytes)

    # -- writes --------------------------------------------------------------------------------

    def _write_tmp(self, data: bytes) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / secrets.token_hex(12)
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def _place(self, key: str, data: bytes, content_type: str | None, if_absent: bool) -> None:
        path = self._path(key)
        tmp = self._write_tmp(data)
        try:
            ino = tmp.stat().st_ino
            for attempt in range(2):
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if if_absent:
                        # link() fails if the name exists, so of two racing writers exactly one wins.
                        os.link(tmp, path)
                    else:
                        os.replace(tmp, path)
                    break
                except FileNotFoundError:
                    # A concurrent delete pruned the parent folder between mkdir and link; once more.
                    if attempt:
                        raise
            _fsync_dir(path.parent)
        except FileExistsError:
            raise ObjectExists(f"{self.root}: {key!r} already exists (write-once)") from None
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise StorageError(
                f"{self.root}: cannot store {key!r}: a directory store cannot hold both a key and "
                f"keys below it ({exc})"
            ) from exc
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot write {key!r}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        side = _Sidecar(
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            size=len(data),
            ino=ino,
        )
        meta = self._meta_path(key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        mtmp = self._write_tmp(msgspec.json.encode(side))
        os.replace(mtmp, meta)

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> None:
        """Write `data` under `key` atomically (see ObjectStore.put)."""
        try:
            await asyncio.to_thread(self._place, key, bytes(data), content_type, if_absent)
        except StorageError:
            raise
        except OSError as exc:  # the store's own folders are missing or not folders (bucket down)
            raise StorageError(f"{self.root}: cannot write {key!r}: {exc}") from exc

    def _remove(self, key: str) -> None:
        path = self._path(key)
        for p in (path, self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                p.unlink()
        # Empty folders would block a later key of the same name; S3 has no folders to leave.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def delete(self, key: str) -> None:
        """Remove `key`; absent keys are fine."""
        await asyncio.to_thread(self._remove, key)

    # -- listing -------------------------------------------------------------------------------

    def _keys(self, prefix: str) -> builtins.list[str]:
        # Walk only the deepest folder the prefix pins down, not the whole store.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / base_key if base_key else self.root
        found: builtins.list[str] = []
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                rel = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                if rel == _RESERVED:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif rel.startswith(prefix):
                    found.append(rel)
        found.sort()  # code-point order of str == UTF-8 byte order, which is S3's order
        return found

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Yield objects under `prefix` in key order (see ObjectStore.list)."""
        _validate_prefix(prefix)
        keys = await asyncio.to_thread(self._keys, prefix)
        count = 0
        for key in keys:
            if start_after is not None and key <= start_after:
                continue
            if limit is not None and count >= limit:
                return
            info = await asyncio.to_thread(self._info, key)
            if info is not None:  # deleted while listing
                count += 1
                yield info

    async def presign_get(self, key: str, expires: int = 3600) -> str:
        """Return the object's `file://` URL (no expiry: the file system has no signatures)."""
        return self._path(key).as_uri()


def _fsync_dir(folder: Path) -> None:
    # Makes the new directory entry durable; not every platform can open a folder for fsync.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# S3 / R2 store
# --------------------------------------------------------------------------------------------

# Error codes worth another try even when the status alone would not say so.
_RETRY_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",  # two conditional writes raced (409); the retry settles it
    }
)


def _error_parts(exc: BaseException) -> tuple[int, str, str]:
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    err = response.get("Error", {})
    return status, str(err.get("Code", "")), str(err.get("Message", ""))


def _is_client_error(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError)


def _retryable(exc: BaseException) -> bool:
    """True for throttling, server errors, timeouts and broken connections; False for 4xx."""
    import aiohttp
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    if _is_client_error(exc):
        status, code, _ = _error_parts(exc)
        return status == 429 or status >= 500 or code in _RETRY_CODES
    return isinstance(
        exc,
        (
            HTTPClientError,  # read timeouts, closed connections, broken response streams
            BotoConnectionError,  # connect timeouts, refused connections
            IncompleteReadError,
            aiohttp.ClientError,
            asyncio.TimeoutError,
            OSError,
        ),
    )


class _BodyBroken(Exception):
    """A response body broke after botocore handed it over (its cause is the transport's error)."""


def _attempts_made(exc: BaseException, default: int) -> int:
    """How many requests botocore made for the call that failed with `exc` (its RetryAttempts + 1)."""
    response: Mapping[str, Any] = getattr(exc, "response", None) or {}
    retried = response.get("ResponseMetadata", {}).get("RetryAttempts")
    return int(retried) + 1 if isinstance(retried, int) else default


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error recorded"
    if _is_client_error(exc):
        status, code, message = _error_parts(exc)
        return f"{code or 'error'} (HTTP {status}){': ' + message if message else ''}"
    return f"{type(exc).__name__}: {exc}"


class S3Store:
    """A bucket on any S3-compatible service (R2, AWS, moto), retried by botocore's own retry mode.

    Requests run under botocore's standard retry mode (`leoma.retry.install_s3_policy`): 429,
    5xx, throttling codes, timeouts and connection errors are retried inside botocore, up to
    `attempts` in all, with exponential backoff and full jitter
    (`uniform(0, min(max_delay, base_delay * 2**n))`); other 4xx fail at once. A GET whose body
    breaks after the response began is fetched again under the same policy
    (`leoma.retry.storage_policy`). Checksums are computed only when required, as R2 needs.
    """

    def __init__(
        self,
        bucket: str,
        *,
        access_key: str,
        secret_key: str,
        endpoint_url: str | None = None,
        region: str = "auto",
        attempts: int = 5,
        base_delay: float = 0.25,
        max_delay: float = 8.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_pool_connections: int = 16,
        page_size: int = 1000,
        addressing_style: str = "path",
    ) -> None:
        if len(bucket) < 3 or "/" in bucket:
            raise ConfigError(f"invalid bucket name {bucket!r}: 3 or more characters, no '/'")
        if attempts < 1 or not 1 <= page_size <= 1000:
            raise ConfigError("S3Store needs attempts >= 1 and 1 <= page_size <= 1000")
        if addressing_style not in ("path", "virtual", "auto"):
            raise ConfigError(f"addressing style {addressing_style!r}: use path, virtual or auto")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.page_size = page_size
        self._access_key = access_key
        self._secret_key = secret_key
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._pool = max_pool_connections
        self._addressing = addressing_style
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._rng = random.Random()

    def __repr__(self) -> str:  # never the keys
        return f"S3Store(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    async def __aenter__(self) -> S3Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    import aioboto3
                    from botocore.config import Config

                    config = Config(
                        signature_version="s3v4",
                        s3={"addressing_style": self._addressing},
                        retries={"total_max_attempts": self.attempts, "mode": "standard"},
                        max_pool_connections=self._pool,
                        connect_timeout=self._connect_timeout,
                        read_timeout=self._read_timeout,
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                    )
                    session = aioboto3.Session(
                        aws_access_key_id=self._access_key,
                        aws_secret_access_key=self._secret_key,
                        region_name=self.region,
                    )
                    stack = contextlib.AsyncExitStack()
                    client = await stack.enter_async_context(
                        session.client("s3", endpoint_url=self.endpoint_url, config=config)
                    )
                    retry_policy.install_s3_policy(
                        client, attempts=self.attempts, base=self.base_delay, cap=self.max_delay,
                        codes=_RETRY_CODES, what=f"bucket={self.bucket}", logger=log, rng=self._rng)
                    self._stack, self._client = stack, client
        return self._client

    async def _call(self, op: str, key: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run `fn(client)`; botocore retried each request already, a broken GET body is fetched again.

        Retryable errors that outlast the attempts become a `StorageError` naming the bucket, the
        key and the last error; other errors propagate as-is.
        """
        client = await self._s3()
        policy = retry_policy.storage_policy(
            attempts=self.attempts, base=self.base_delay, cap=self.max_delay, rng=self._rng,
            retry_on=lambda exc: isinstance(exc, _BodyBroken), what=f"s3 {op} bucket={self.bucket}")
        async def once() -> T:  # a coroutine function: tenacity calls a plain callable without awaiting
            return await fn(client)

        try:
            return await policy(once)
        except _BodyBroken as exc:
            last: BaseException = exc.__cause__ or exc
        except Exception as exc:
            if not _retryable(exc):
                raise
            last = exc
        raise StorageError(
            f"s3 {op} of key {key!r} in bucket {self.bucket!r} failed after {_attempts_made(last, self.attempts)} "
            f"attempts; last error: {_describe(last)}"
        ) from last

    def _failed(self, op: str, key: str, exc: BaseException) -> StorageError:
        status, code, _ = _error_parts(exc)
        if code == "NoSuchBucket":
            return StorageError(f"bucket {self.bucket!r} does not exist (s3 {op} of {key!r}); create it first")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"s3 {op} of {key!r} in bucket {self.bucket!r} was refused ({_describe(exc)}): "
                "check the access key, secret key and their permissions"
            )
        return StorageError(f"s3 {op} of {key!r} in bucket {self.bucket!r} failed: {_describe(exc)}")

    async def head(self, key: str) -> ObjectInfo | None:
        """Return size, etag and content type of `key`, or None if absent."""
        validate_key(key)
        try:
            resp = await self._call("head", key, lambda s3: s3.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if _is_client_error(exc) and _error_parts(exc)[0] == 404:
                return None
            if _is_client_error(exc):
                raise self._failed("head", key, exc) from exc
            raise
        return ObjectInfo(
            key=key,
            size=int(resp.get("ContentLength", 0)),
            etag=str(resp.get("ETag", "")).strip('"'),
            content_type=resp.get("ContentType"),
        )

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes of `key` (see ObjectStore.get).

        A size limit is enforced from the GET's Content-Length before the body is read (one
        request, not HEAD + GET), and again while reading when no length was announced.
        """
        validate_key(key)

        def too_large(size: object) -> ObjectTooLarge:
            return ObjectTooLarge(
                f"{key!r} in bucket {self.bucket!r} is {size} bytes, more than the {max_bytes} allowed"
            )

        async def fetch(s3: Any) -> bytes:
            resp = await s3.get_object(Bucket=self.bucket, Key=key)
            try:
                return await read(resp)
            except Exception as exc:
                if _retryable(exc) and not _is_client_error(exc):
                    raise _BodyBroken() from exc  # the request succeeded; its body did not arrive whole
                raise

        async def read(resp: Any) -> bytes:
            stream = resp["Body"]
            async with stream as body:
                length = resp.get("ContentLength")
                if max_bytes is None:
                    data: bytes = await body.read()
                    return data
                if length is not None and int(length) > max_bytes:
                    raise too_large(length)
                chunks, total = [], 0
                async for chunk in stream.iter_chunks(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise too_large(f"more than {total}")
                    chunks.append(chunk)
                return b"".join(chunks)

        try:
            return await self._call("get", key, fetch)
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            status, code, _ = _error_parts(exc)
            if code == "NoSuchKey" or (status == 404 and code != "NoSuchBucket"):
                raise ObjectNotFound(f"no object {key!r} in bucket {self.bucket!r}") from None
            raise self._failed("get", key, exc) from exc

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> None:
        """Store `data` under `key` (see ObjectStore.put); `if_absent` sends `If-None-Match: *`."""
        validate_key(key)
        body = bytes(data)
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type or DEFAULT_CONTENT_TYPE,
        }
        if if_absent:
            params["IfNoneMatch"] = "*"
        maybe_landed = False

        async def send(s3: Any) -> None:
            nonlocal maybe_landed
            try:
                await s3.put_object(**params)
            except Exception as exc:
                # A timeout or 5xx may hide a write that did happen (botocore then retried: the
                # answer's RetryAttempts says so); remember it for a 412 below.
                maybe_landed = maybe_landed or _retryable(exc) or _attempts_made(exc, 1) > 1
                raise

        try:
            await self._call("put", key, send)
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            status, code, _ = _error_parts(exc)
            if if_absent and (status == 412 or code == "PreconditionFailed"):
                if maybe_landed:
                    # Our own earlier attempt may be what took the key: same bytes means done.
                    info = await self.head(key)
                    if info is not None and info.etag == hashlib.md5(body, usedforsecurity=False).hexdigest():
                        return
                raise ObjectExists(f"{key!r} already exists in bucket {self.bucket!r} (write-once)") from None
            raise self._failed("put", key, exc) from exc

    async def delete(self, key: str) -> None:
        """Remove `key`; absent keys are fine (S3 answers 204 either way)."""
        validate_key(key)
        try:
            await self._call("delete", key, lambda s3: s3.delete_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if _is_client_error(exc):
                raise self._failed("delete", key, exc) from exc
            raise

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Yield objects under `prefix` in key order, one ListObjectsV2 request per page.

        With `start_after` set to the last key seen, an up-to-date poll costs one request.
        """
        _validate_prefix(prefix)
        token: str | None = None
        remaining = limit
        while remaining is None or remaining > 0:
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Prefix": prefix,
                "MaxKeys": self.page_size if remaining is None else min(self.page_size, remaining),
            }
            if token is not None:
                params["ContinuationToken"] = token
            elif start_after is not None:
                params["StartAfter"] = start_after
            try:
                page = await self._call(
                    "list", prefix, lambda s3, p=params: s3.list_objects_v2(**p)  # type: ignore[misc]
                )
            except Exception as exc:
                if _is_client_error(exc):
                    raise self._failed("list", prefix, exc) from exc
                raise
            for item in page.get("Contents", []):
                yield ObjectInfo(key=item["Key"], size=int(item["Size"]), etag=str(item.get("ETag", "")).strip('"'))
                if remaining is not None:
                    remaining -= 1
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return
            token = page["NextContinuationToken"]

    async def presign_get(self, key: str, expires: int = 3600) -> str:
        """Return a presigned GET URL (signed locally, no request). Do not log it: it is a credential."""
        validate_key(key)
        s3 = await self._s3()
        url: str = await s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(expires)
        )
        return url

    async def ensure_bucket(self) -> None:
        """Create the bucket if it is missing; an existing or unreadable-but-present bucket is fine."""
        try:
            await self._call("head-bucket", "", lambda s3: s3.head_bucket(Bucket=self.bucket))
            return
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            status, _, _ = _error_parts(exc)
            if status == 403:
                # Keys scoped to one bucket often may not HEAD it; writes will tell soon enough.
                log.info("s3 bucket=%s: HEAD refused (403); assuming it exists", self.bucket)
                return
            if status != 404:
                raise self._failed("head-bucket", "", exc) from exc
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self.region not in ("us-east-1", "auto", ""):
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await self._call("create-bucket", "", lambda s3: s3.create_bucket(**params))
            log.info("s3 bucket=%s created", self.bucket)
        except Exception as exc:
            if not _is_client_error(exc):
                raise
            status, code, _ = _error_parts(exc)
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists") or status == 403:
                return
            raise self._failed("create-bucket", "", exc) from exc


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
