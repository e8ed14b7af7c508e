"""`S3Store`: the object-store contract (`leoma.adapters.storage`) over an S3/R2 bucket (aioboto3).

Requests are retried inside botocore's standard retry mode, with our jittered back-off installed
in it (`leoma.adapters.retry`); a GET whose body breaks mid-read is fetched again under the same
policy. Secrets and presigned URLs are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from leoma.adapters import retry as retry_policy
from leoma.adapters.storage import DEFAULT_CONTENT_TYPE, ObjectInfo, validate_key, validate_prefix
from leoma.errors import ConfigError, ObjectExists, ObjectNotFound, ObjectTooLarge, StorageError

__all__ = [
    "S3Store",
]

log = logging.getLogger("leoma.storage")

T = TypeVar("T")


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
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

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

    Requests run under botocore's standard retry mode (`leoma.adapters.retry.install_s3_policy`): 429,
    5xx, throttling codes, timeouts and connection errors are retried inside botocore, up to
    `attempts` in all, with exponential backoff and full jitter
    (`uniform(0, min(max_delay, base_delay * 2**n))`); other 4xx fail at once. A GET whose body
    breaks after the response began is fetched again under the same policy
    (`leoma.adapters.retry.storage_policy`). Checksums are computed only when required, as R2 needs.
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
        validate_prefix(prefix)
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
