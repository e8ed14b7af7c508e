"""leoma.adapters.chutes against the local world: chute info cache, the generate payload, and every
failure class of a miner's reply."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import tracemalloc

import httpx
import pytest

from leoma.adapters import video
from leoma.adapters.chutes import ChuteInfo, ChutesClient
from leoma.devnet.clips import render_source
from leoma.devnet.world import World

KEY = "devnet-key"
PROMPT = "The camera pans right steadily across the scene."


@pytest.fixture(scope="module")
def world():
    w = World(frames=17, slow_seconds=2.0, chutes_api_key=KEY)
    for behaviour in ("faithful", "static", "noisy", "wrong_resolution", "slow", "flaky", "cold", "garbage", "reject"):
        w.add_miner(behaviour, name=behaviour)
    w.add_miner("copycat", name="copycat", copies="faithful")
    w.add_miner("slowloris", name="slowloris")
    w.add_miner("oversize", name="oversize")
    w.drip_seconds = 0.05
    w.oversize_bytes = 40_000_000
    w.start_thread()
    yield w
    w.stop_thread()


@pytest.fixture(scope="module")
def frame_png():
    clip = render_source(11, shots=(("right", 1.0),), width=832, height=480)
    return video.first_frame_png(clip.video)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(world: World, **kw) -> ChutesClient:
    kw.setdefault("retry_base_delay", 0.02)
    kw.setdefault("retry_budget", 5.0)
    return ChutesClient(world.url, KEY, world.generate_url_template, **kw)


def _info_requests(world: World, chute_id: str) -> list:
    return [r for r in world.requests if r[1] == f"/chutes/{chute_id}"]


async def test_chute_info_fields_and_raw_key(world):
    m = world.miners["faithful"]
    async with client(world) as c:
        info = await c.chute_info(m.chute_id)
    assert info == ChuteInfo(chute_id=m.chute_id, hot=True, slug=m.slug, revision=m.revision, name=m.repo_id)
    # The management API gets the raw key, as the seed sends it.
    assert _info_requests(world, m.chute_id)[-1][2]["authorization"] == KEY


async def test_cold_chute_reports_not_hot(world):
    async with client(world) as c:
        info = await c.chute_info(world.miners["cold"].chute_id)
    assert info is not None and info.hot is False


async def test_chute_info_cached_for_ttl(world):
    clock = Clock()
    cid = world.miners["static"].chute_id
    async with client(world, clock=clock) as c:
        await c.chute_info(cid)
        await c.chute_info(cid)
        assert c.info_requests == 1
        clock.now += 301
        await c.chute_info(cid)
        assert c.info_requests == 2


async def test_chute_info_single_flight(world):
    cid = world.miners["noisy"].chute_id
    async with client(world) as c:
        infos = await asyncio.gather(*(c.chute_info(cid) for _ in range(8)))
        assert c.info_requests == 1
    assert len({i.slug for i in infos}) == 1


async def test_chute_info_failures_not_cached(world):
    async with client(world) as c:
        assert await c.chute_info("no-such-chute") is None
        assert await c.chute_info("no-such-chute") is None
        assert c.info_requests == 2
        assert await c.chute_info("") is None


async def test_chute_info_wrong_key_is_none(world):
    async with ChutesClient(world.url, "wrong", world.generate_url_template) as c:
        assert await c.chute_info(world.miners["faithful"].chute_id) is None


async def test_list_chutes(world):
    async with client(world) as c:
        items = await c.list_chutes()
    assert {i["slug"] for i in items} >= {m.slug for m in world.miners.values()}


def test_generate_payload_is_the_seeds():
    c = ChutesClient("http://x", "k")
    body = c.generate_payload("p", b"\x89PNG")
    assert body == {"prompt": "p", "image": base64.b64encode(b"\x89PNG").decode(), "fps": 16,
                    "frames": 81, "resolution": "480p", "fast": True}


async def test_faithful_reply_is_ok(world, frame_png):
    async with client(world) as c:
        info = await c.chute_info(world.miners["faithful"].chute_id)
        reply = await c.generate(info, PROMPT, frame_png, timeout=30)
    assert (reply.status, reply.failure, reply.attempts) == ("ok", "", 1)
    assert (reply.width, reply.height) == (832, 480)
    assert reply.sha256 == hashlib.sha256(reply.video).hexdigest()
    assert reply.latency_ms > 0
    gen = [r for r in world.requests if r[1] == f"/chutes-gen/{info.slug}/generate"]
    assert gen[-1][2]["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "name, detail",
    [
        ("wrong_resolution", "wrong resolution 640x480"),
        ("garbage", "not a video"),
        ("reject", "HTTP 422"),
    ],
)
async def test_miner_faults(world, frame_png, name, detail):
    async with client(world) as c:
        reply = await c.generate(world.miners[name].slug, PROMPT, frame_png, timeout=30)
    assert (reply.status, reply.failure, reply.attempts) == ("failed", "miner", 1)
    assert detail in reply.detail
    assert reply.video == b""


async def test_timeout_of_a_hot_chute_is_the_miners(world, frame_png):
    async with client(world) as c:
        reply = await c.generate(world.miners["slow"].slug, PROMPT, frame_png, timeout=0.5)
    assert (reply.status, reply.failure) == ("failed", "miner")
    assert "timeout" in reply.detail


async def test_a_dripping_reply_hits_the_total_deadline(world, frame_png):
    """A byte every 50 ms never trips a per-read timeout; the total deadline cuts it off."""
    async with client(world) as c:
        reply = await c.generate(world.miners["slowloris"].slug, PROMPT, frame_png, timeout=1.0)
    assert (reply.status, reply.failure, reply.reason) == ("failed", "miner", "timeout")
    assert "deadline" in reply.detail


async def test_a_streamed_reply_is_capped_while_it_streams(world, frame_png):
    """No content-length to refuse up front: the cap is applied as the bytes arrive."""
    async with client(world, max_response_bytes=8) as c:
        reply = await c.generate(world.miners["slowloris"].slug, PROMPT, frame_png, timeout=30)
    assert (reply.failure, reply.reason) == ("miner", "too_large") and "cap" in reply.detail


async def test_oversize_reply_is_the_miners(world, frame_png):
    async with client(world, max_response_bytes=1000) as c:
        reply = await c.generate(world.miners["faithful"].slug, PROMPT, frame_png, timeout=30)
    assert (reply.failure, "cap" in reply.detail) == ("miner", True)


async def test_flaky_gateway_is_retried_until_ok(world, frame_png):
    world.counts["flaky"] = 0
    async with client(world) as c:
        reply = await c.generate(world.miners["flaky"].slug, PROMPT, frame_png, timeout=30)
    assert (reply.status, reply.attempts) == ("ok", 3)  # 429, then 502, then a video


async def test_flaky_gateway_out_of_budget_is_infra(world, frame_png):
    world.counts["flaky"] = 0
    async with client(world, retry_budget=0.0) as c:
        reply = await c.generate(world.miners["flaky"].slug, PROMPT, frame_png, timeout=30)
    assert (reply.status, reply.failure, reply.attempts) == ("failed", "infra", 1)
    assert "HTTP 429" in reply.detail


async def test_cold_chute_is_infra_and_not_called(world, frame_png):
    m = world.miners["cold"]
    before = len(world.requests)
    async with client(world) as c:
        info = await c.chute_info(m.chute_id)
        reply = await c.generate(info, PROMPT, frame_png, timeout=30)
    assert (reply.status, reply.failure) == ("failed", "infra")
    assert not [r for r in world.requests[before:] if r[1].startswith("/chutes-gen/")]


async def test_gateway_503_is_infra(world, frame_png):
    async with client(world, retry_budget=0.2) as c:
        reply = await c.generate(world.miners["cold"].slug, PROMPT, frame_png, timeout=30)
    assert (reply.failure, "HTTP 503" in reply.detail) == ("infra", True)
    assert reply.attempts >= 2


async def test_our_network_error_is_infra(frame_png):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ChutesClient(f"http://127.0.0.1:{port}", "", f"http://127.0.0.1:{port}/{{slug}}",
                            retry_base_delay=0.01, retry_budget=0.1) as c:
        reply = await c.generate("anything", PROMPT, frame_png, timeout=5)
        assert await c.chute_info("x") is None
    assert (reply.failure, "network error" in reply.detail) == ("infra", True)


async def test_wrong_key_is_infra(world, frame_png):
    async with ChutesClient(world.url, "wrong", world.generate_url_template, retry_budget=0.1,
                            retry_base_delay=0.01) as c:
        reply = await c.generate(world.miners["faithful"].slug, PROMPT, frame_png, timeout=30)
    assert (reply.failure, "HTTP 401" in reply.detail) == ("infra", True)


async def test_concurrency_cap_holds(world, frame_png):
    async with client(world, max_concurrency=2) as c:
        replies = await asyncio.gather(*(c.generate(world.miners["static"].slug, PROMPT, frame_png, timeout=30)
                                         for _ in range(4)))
    assert all(r.status == "ok" for r in replies)
    assert c._semaphore._value == 2


async def test_mock_transport_seam(frame_png):
    # The transport seam: a 500 answered by httpx.MockTransport is still classified as infra.
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    async with ChutesClient("http://t", "", "http://t/{slug}", transport=transport, retry_budget=0.0) as c:
        reply = await c.generate("s", PROMPT, frame_png)
    assert reply.failure == "infra"


async def test_a_spooled_reply_is_read_and_checked_by_open_reply(world, frame_png):
    """`spooled=True` returns the body unread; `open_reply` gives what a plain call gives."""
    async with client(world) as c:
        plain = await c.generate(world.miners["static"].slug, PROMPT, frame_png, timeout=30)
        spooled = await c.generate(world.miners["static"].slug, PROMPT, frame_png, timeout=30, spooled=True)
        assert spooled.status == "ok" and spooled.video == b"" and spooled.body is not None
        opened = await c.open_reply(spooled)
    assert spooled.body.closed
    assert (opened.status, opened.sha256, opened.video, opened.width) == ("ok", plain.sha256, plain.video, 832)
    assert opened.sha256 == hashlib.sha256(opened.video).hexdigest()


async def test_a_spooled_garbage_reply_is_refused_when_opened(world, frame_png):
    async with client(world) as c:
        reply = await c.open_reply(await c.generate(world.miners["garbage"].slug, PROMPT, frame_png, timeout=30,
                                                    spooled=True))
    assert (reply.status, reply.failure, reply.reason, reply.video) == ("failed", "miner", "not_a_video", b"")


async def test_a_huge_reply_never_sits_in_memory(world, frame_png):
    """40 MB streamed without a content-length against a 30 MB cap: refused at the cap, and what
    the call holds in memory meanwhile is the spool's share, not the reply's size."""
    async with client(world, max_response_bytes=30_000_000) as c:
        tracemalloc.start()
        try:
            reply = await c.generate(world.miners["oversize"].slug, PROMPT, frame_png, timeout=60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (reply.failure, reply.reason) == ("miner", "too_large")
    assert peak < 12_000_000, f"the call held {peak / 1e6:.1f} MB of a reply refused at 30 MB"


async def test_every_miner_is_asked_the_same_encoded_request(world, frame_png):
    async with client(world) as c:
        first = c._encoded_request(PROMPT, frame_png)
        assert c._encoded_request(PROMPT, frame_png) is first  # encoded once per task, not per miner
        assert json.loads(first) == c.generate_payload(PROMPT, frame_png)
        assert json.loads(c._encoded_request("another prompt", frame_png))["prompt"] == "another prompt"
