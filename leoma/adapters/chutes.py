"""The Chutes API (chute info) and invoking a miner's chute (httpx).

Two things can go wrong when a validator asks a miner for a video, and they must not be
confused: the **miner** failed (its code answered 4xx, it sent bytes that are not a video or
not 832x480, it ran past the timeout while hot) — that is a fail on the miner's record; or the
**infrastructure** failed (429 or 5xx from the gateway, a cold chute, our own network) — that
says nothing about the miner, is retried with jitter while the time budget lasts, and is
reported as `infra` so scoring can leave it out.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import tempfile
import time
from typing import IO, Any, Callable, Literal

import httpx
import msgspec

from leoma.adapters import retry as retry_policy
from leoma.errors import VideoError
from leoma.log.consensus import DEFAULT as _PINNED, Request

__all__ = ["ChuteInfo", "ChutesClient", "MinerReply", "GENERATE_FPS", "GENERATE_FRAMES"]

log = logging.getLogger("leoma.adapters.chutes")

GENERATE_FPS = _PINNED.request.fps
GENERATE_FRAMES = _PINNED.request.frames
# Statuses that are ours or the gateway's, never the miner's code: auth, rate limit, gateway.
_INFRA_4XX = {401, 403, 408, 429}
SPOOL_BYTES = 1 << 18
"""A reply streams into memory up to this size, then into a temporary file: what many miners
answering at once cost in memory is bounded by the number of calls, never by their replies' size."""


def _read_spool(spool: IO[bytes]) -> bytes:
    try:
        spool.seek(0)
        return spool.read()
    finally:
        spool.close()


class ChuteInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of `GET /chutes/{id}` a validator uses."""

    chute_id: str
    hot: bool
    slug: str
    revision: str = ""
    name: str = ""


class MinerReply(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of asking one miner's chute for one video."""

    status: Literal["ok", "failed"]
    failure: Literal["", "miner", "infra"] = ""
    detail: str = ""
    latency_ms: int = 0
    sha256: str = ""
    video: bytes = b""
    attempts: int = 0
    width: int = 0
    height: int = 0
    reason: str = ""
    """A short code for a miner fault: `timeout`, `too_large`, `http_<status>`, `not_a_video`, `resolution`."""
    body: Any = None
    """`generate(..., spooled=True)` only: the unread body (a temporary file); `ChutesClient.open_reply` reads it."""


def _fail(kind: Literal["miner", "infra"], detail: str, *, latency_ms: int = 0, attempts: int = 0,
          reason: str = "") -> MinerReply:
    return MinerReply(status="failed", failure=kind, detail=detail, latency_ms=latency_ms, attempts=attempts,
                      reason=reason)


class _Retry(Exception):
    """An infra fault worth another attempt."""


class ChutesClient:
    """Chute info (cached, single-flight per id) and chute invocation with failure classes.

    `generate_url_template` turns a slug into the generation URL (the seed's is
    `https://{slug}.chutes.ai/generate`); a devnet points it at its own server.
    """

    def __init__(
        self,
        api_url: str = "https://api.chutes.ai",
        api_key: str = "",
        generate_url_template: str = "https://{slug}.chutes.ai/generate",
        *,
        info_ttl: float = 300.0,
        info_timeout: float = 10.0,
        max_concurrency: int = 40,
        max_response_bytes: int = 100_000_000,
        retry_budget: float = 30.0,
        retry_base_delay: float = 0.5,
        required_resolution: tuple[int, int] = (832, 480),
        resolution_tolerance: int = 32,
        request: Request = _PINNED.request,
        video_limits: Any = None,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: retry_policy.Sleep | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.generate_url_template = generate_url_template
        self.info_ttl = info_ttl
        self.info_timeout = info_timeout
        self.max_response_bytes = max_response_bytes
        self.retry_budget = retry_budget
        self.retry_base_delay = retry_base_delay
        self.required_resolution = required_resolution
        self.resolution_tolerance = resolution_tolerance
        self.request = request
        self.video_limits = video_limits
        self._clock = clock
        self._sleep = sleep  # the wait between gateway retries (tests pass a recorder)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._cache: dict[str, tuple[float, ChuteInfo]] = {}
        self._inflight: dict[str, asyncio.Future[ChuteInfo | None]] = {}
        self._request_body: tuple[tuple[str, bytes], bytes] | None = None
        self.info_requests = 0  # how many chute-info requests actually went out (for tests/metrics)
        limits = httpx.Limits(max_connections=max_concurrency + 8, max_keepalive_connections=max_concurrency)
        self._http = httpx.AsyncClient(transport=transport, limits=limits, follow_redirects=False)

    async def __aenter__(self) -> ChutesClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    # -- chute info ---------------------------------------------------------------------------

    async def chute_info(self, chute_id: str) -> ChuteInfo | None:
        """`GET {api}/chutes/{id}`; None when the API fails (failures are not cached).

        Successes are cached for `info_ttl` seconds; concurrent lookups of one id share a request.
        """
        if not chute_id:
            return None
        hit = self._cache.get(chute_id)
        if hit and hit[0] > self._clock():
            return hit[1]
        pending = self._inflight.get(chute_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ChuteInfo | None] = asyncio.get_running_loop().create_future()
        self._inflight[chute_id] = future
        try:
            info = await self._fetch_info(chute_id)
            if info is not None:
                self._cache[chute_id] = (self._clock() + self.info_ttl, info)
            future.set_result(info)
            return info
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._inflight[chute_id]

    async def _fetch_info(self, chute_id: str) -> ChuteInfo | None:
        # The seed sends the raw key (no "Bearer") to the management API.
        headers = {"Authorization": self.api_key} if self.api_key else {}
        self.info_requests += 1
        try:
            resp = await self._http.get(f"{self.api_url}/chutes/{chute_id}", headers=headers, timeout=self.info_timeout)
        except httpx.HTTPError as exc:
            log.warning("chute info %s failed: %s", chute_id, exc)
            return None
        if resp.status_code != 200:
            log.warning("chute info %s: HTTP %s", chute_id, resp.status_code)
            return None
        try:
            body = resp.json()
        except ValueError:
            log.warning("chute info %s: body is not JSON", chute_id)
            return None
        if not isinstance(body, dict):
            return None
        return ChuteInfo(
            chute_id=chute_id,
            hot=bool(body.get("hot")),
            slug=str(body.get("slug") or ""),
            revision=str(body.get("revision") or ""),
            name=str(body.get("name") or ""),
        )

    async def list_chutes(self) -> list[dict[str, Any]]:
        """`GET {api}/chutes/` (Bearer auth, as the seed's miner push does); the items list."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        resp = await self._http.get(f"{self.api_url}/chutes/", headers=headers, timeout=self.info_timeout)
        resp.raise_for_status()
        data = resp.json()
        items = data.get("items", []) if isinstance(data, dict) else data
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    # -- generation ---------------------------------------------------------------------------

    def generate_payload(self, prompt: str, image_png: bytes) -> dict[str, Any]:
        """The seed's request body for a chute's `/generate`; fps, frames, resolution and fast
        are the consensus's `[request]` (every validator asks every miner the same thing)."""
        r = self.request
        return {
            "prompt": prompt,
            "image": base64.b64encode(image_png).decode("ascii"),
            "fps": r.fps,
            "frames": r.frames,
            "resolution": r.resolution,
            "fast": r.fast,
        }

    async def generate(
        self, chute: ChuteInfo | str, prompt: str, image_png: bytes, *, timeout: float = 300.0,
        spooled: bool = False,
    ) -> MinerReply:
        """Ask one chute for a video and classify the outcome; never raises for a bad miner.

        `timeout` is the call's **total** deadline: connecting, waiting for the first byte,
        reading the whole body and any infra retries all fit in it, so a miner that drips its
        reply a byte at a time is cut off (`reason="timeout"`) like one that never answers.

        With `spooled=True` an answered call returns at once with the body unread in
        `reply.body` (memory holds at most `SPOOL_BYTES` of it); `open_reply` reads and checks
        it, so a caller can bound how many bodies sit in memory at once.
        """
        if isinstance(chute, ChuteInfo):
            if not chute.hot:
                return _fail("infra", f"chute {chute.chute_id} is cold")
            if not chute.slug:
                return _fail("infra", f"chute {chute.chute_id} has no slug")
            slug = chute.slug
        else:
            slug = chute
        url = self.generate_url_template.format(slug=slug)
        content = self._encoded_request(prompt, image_png)
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        deadline = self._clock() + self.retry_budget
        loop = asyncio.get_running_loop()
        async with self._semaphore:
            total_deadline = loop.time() + timeout  # from the call's start, not its wait for a slot

            def budget_ends(wait: float) -> bool:
                return self._clock() + wait >= deadline or loop.time() + wait >= total_deadline

            policy = retry_policy.chutes_policy(base=self.retry_base_delay, budget_ends=budget_ends,
                                                retry_on=_Retry, sleep=self._sleep)
            started = time.perf_counter()
            attempts = 0
            spool: IO[bytes] | None = None
            try:
                async for attempt in policy:
                    with attempt:
                        attempts += 1
                        started = time.perf_counter()
                        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
                        try:
                            async with asyncio.timeout_at(total_deadline):
                                await self._post(url, content, headers, timeout, spool)
                        except BaseException:
                            spool.close()  # a failed attempt's partial body goes at once
                            spool = None
                            raise
            except TimeoutError:
                # Only hot chutes are called, so running out the clock is the miner's fault.
                latency = int((time.perf_counter() - started) * 1000)
                return _fail("miner", f"timeout: no complete reply within the {timeout:g}s deadline "
                             "(connect + first byte + body)", latency_ms=latency,
                             attempts=attempts, reason="timeout")
            except _Retry as exc:
                return _fail("infra", f"{exc} (gave up after {attempts} attempts)", attempts=attempts)
            except _MinerFault as exc:
                latency = int((time.perf_counter() - started) * 1000)
                return _fail("miner", str(exc), latency_ms=latency, attempts=attempts, reason=exc.reason)
            latency = int((time.perf_counter() - started) * 1000)
        reply = MinerReply(status="ok", latency_ms=latency, attempts=attempts, body=spool)
        return reply if spooled else await self.open_reply(reply)

    async def open_reply(self, reply: MinerReply) -> MinerReply:
        """Read a spooled reply's body and check it is a video of the right size (the file is closed)."""
        if reply.body is None:
            return reply
        body = await asyncio.to_thread(_read_spool, reply.body)
        return await self._validate(body, reply.latency_ms, reply.attempts)

    def _encoded_request(self, prompt: str, image_png: bytes) -> bytes:
        # One task asks every miner the same thing: encode it once, not once per miner.
        key = (prompt, image_png)
        if self._request_body is None or self._request_body[0] != key:
            payload = self.generate_payload(prompt, image_png)
            self._request_body = (key, json.dumps(payload, separators=(",", ":")).encode())
        return self._request_body[1]

    async def _post(self, url: str, content: bytes, headers: dict[str, str], timeout: float,
                    sink: IO[bytes]) -> None:
        try:
            async with self._http.stream("POST", url, content=content, headers=headers, timeout=timeout) as resp:
                if resp.status_code in _INFRA_4XX or resp.status_code >= 500:
                    raise _Retry(f"HTTP {resp.status_code} from the chute gateway")
                if resp.status_code != 200:
                    raise _MinerFault(f"HTTP {resp.status_code} from the miner's chute",
                                      reason=f"http_{resp.status_code}")
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                    raise _MinerFault(f"reply of {declared} bytes exceeds the cap {self.max_response_bytes}",
                                      reason="too_large")
                # Refused the moment it passes the cap, and spooled to disk past SPOOL_BYTES: an
                # oversized reply costs a temporary file up to the cap, never memory of its size.
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise _MinerFault(f"reply exceeds the cap of {self.max_response_bytes} bytes",
                                          reason="too_large")
                    sink.write(chunk)
        except httpx.TimeoutException as exc:
            # Only hot chutes are called, so running out the clock is the miner's fault.
            raise _MinerFault(f"timeout after {timeout:g}s ({type(exc).__name__})", reason="timeout") from exc
        except httpx.TransportError as exc:
            raise _Retry(f"network error: {type(exc).__name__}: {exc}") from exc

    async def _validate(self, body: bytes, latency: int, attempts: int) -> MinerReply:
        from leoma.adapters import video

        limits = self.video_limits or video.VideoLimits(max_bytes=self.max_response_bytes)
        try:
            info = await asyncio.to_thread(video.probe, body, limits=limits)
        except VideoError as exc:
            return _fail("miner", str(exc), latency_ms=latency, attempts=attempts, reason="not_a_video")
        if not video.resolution_ok(info.width, info.height, self.required_resolution, self.resolution_tolerance):
            req = "x".join(map(str, self.required_resolution))
            return MinerReply(
                status="failed",
                failure="miner",
                detail=f"wrong resolution {info.width}x{info.height}, need {req} ±{self.resolution_tolerance}",
                reason="resolution",
                latency_ms=latency,
                attempts=attempts,
                sha256=hashlib.sha256(body).hexdigest(),
                width=info.width,
                height=info.height,
            )
        return MinerReply(
            status="ok",
            latency_ms=latency,
            sha256=hashlib.sha256(body).hexdigest(),
            video=body,
            attempts=attempts,
            width=info.width,
            height=info.height,
        )


class _MinerFault(Exception):
    """The miner's chute is at fault; not retried. `reason` is its short code."""

    def __init__(self, message: str, *, reason: str = "miner_error") -> None:
        super().__init__(message)
        self.reason = reason
