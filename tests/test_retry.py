"""The one retry policy (`leoma.adapters.retry`) as each adapter uses it, against local stand-ins.

Every test injects the wait (a recorder instead of `asyncio.sleep`), so attempts are counted
and each wait is checked against its jitter bounds without sleeping for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from leoma.adapters import retry
from leoma.adapters.chain import Chain
from leoma.adapters.chutes import ChutesClient
from leoma.devnet.clips import render_source
from leoma.adapters.simchain import SimChain
from leoma.devnet.world import World
from leoma.errors import AdapterError, ChainError, StorageError
from leoma.adapters.judge import Judge, JudgeSettings, Verdict
from leoma.services.serve import Loop, supervise
from leoma.adapters.s3 import S3Store
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, moto_endpoint, s3_bucket  # noqa: F401

KEY = "retry-key"


class Waits:
    """Records each wait instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


# -- the back-off itself --------------------------------------------------------------------------

@pytest.mark.parametrize(("base", "cap", "floor", "floor_cap"), [
    (0.25, 8.0, 0.0, float("inf")), (1.0, 4.0, 0.5, 1.0), (0.5, float("inf"), 1 / 3, float("inf")),
])
def test_backoff_stays_within_its_bounds_and_is_jittered(base: float, cap: float, floor: float, floor_cap: float) -> None:
    backoff = retry.Backoff(base, cap, floor=floor, floor_cap=floor_cap, rng=random.Random(7))
    for n in range(1, 12):
        high = min(cap, base * 2 ** (n - 1))
        delays = [backoff.delay(n) for _ in range(200)]
        assert all(floor * min(high, floor_cap) <= d <= high for d in delays), n
        assert len(set(delays)) > 150, "every wait is jittered"


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="floor"):
        retry.Backoff(1.0, 1.0, floor=2.0)


# -- chutes: the stand-in gateway answers 429, then 502, then a video ---------------------------

@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World(frames=17, chutes_api_key=KEY)
    w.add_miner("flaky", name="flaky")
    w.add_miner("cold", name="cold")
    w.start_thread()
    yield w
    w.stop_thread()


@pytest.fixture(scope="module")
def clip() -> bytes:
    return render_source(5, shots=(("left", 2.0),), width=832, height=480).video


async def test_chutes_retries_the_gateway_twice_then_takes_the_video(world: World, clip: bytes) -> None:
    from leoma.adapters import video

    world.counts["flaky"] = 0
    waits = Waits()
    # a base of 10 s would make this test sleep for 30 s if the wait were not injected
    async with ChutesClient(world.url, KEY, world.generate_url_template, retry_base_delay=10.0,
                            retry_budget=1000.0, sleep=waits) as c:
        reply = await c.generate(world.miners["flaky"].slug, "The camera pans left.", video.first_frame_png(clip),
                                 timeout=120)
    assert (reply.status, reply.attempts) == ("ok", 3)
    assert len(waits.delays) == 2
    for n, delay in enumerate(waits.delays, start=1):
        assert 0.5 * 10.0 * 2 ** (n - 1) <= delay <= 1.5 * 10.0 * 2 ** (n - 1)


async def test_chutes_stops_when_the_next_wait_would_pass_the_budget(world: World, clip: bytes) -> None:
    from leoma.adapters import video

    now = [1000.0]
    waits = Waits()

    async def sleep(seconds: float) -> None:  # the budget's clock moves by each wait, nothing sleeps
        await waits(seconds)
        now[0] += seconds

    async with ChutesClient(world.url, KEY, world.generate_url_template, retry_base_delay=10.0,
                            retry_budget=25.0, sleep=sleep, clock=lambda: now[0]) as c:
        reply = await c.generate(world.miners["cold"].slug, "x", video.first_frame_png(clip), timeout=120)
    # waits are 5..15 s, then 10..30 s, then 20..60 s: the first always fits in 25 s, three never do
    assert (reply.status, reply.failure) == ("failed", "infra")
    assert reply.attempts in (2, 3) and len(waits.delays) == reply.attempts - 1
    assert sum(waits.delays) < 25.0
    assert f"gave up after {reply.attempts} attempts" in reply.detail


# -- judge: the Gemini stand-in answers 500 twice, then a verdict ----------------------------------

async def test_judge_retries_with_a_jittered_pause_and_counts_attempts(world: World, clip: bytes) -> None:
    from leoma.adapters import video

    waits = Waits()
    world.judge_faults[:] = ["http500", "garbage"]
    async with Judge(KEY, base_url=world.url, retry_sleep=4.0, sleep=waits, settings=JudgeSettings()) as judge:
        verdict = await judge.evaluate(video.first_frame_png(clip), "The camera pans left.", clip)
        assert isinstance(verdict, Verdict) and world.judge_faults == []
        assert len(waits.delays) == 2 and all(2.0 <= d <= 6.0 for d in waits.delays)
        waits.delays.clear()
        world.judge_faults[:] = ["http500"] * 3
        with pytest.raises(AdapterError, match="describe"):
            await judge.describe(clip)
        assert len(waits.delays) == JudgeSettings().describe_attempts - 1


# -- chain: a dropped connection is reconnected once ------------------------------------------------

@pytest.fixture
def sim(tmp_path: Path) -> SimChain:
    return SimChain.create(tmp_path / "chain.jsonl", owner="5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
                           clock="manual")


async def test_chain_reconnects_once_after_a_dropped_connection(sim: SimChain) -> None:
    waits = Waits()
    clients: list[Any] = []

    async def flaky(client: Any) -> int:
        clients.append(client)
        if len(clients) == 1:
            raise ConnectionError("socket closed by peer")
        return int(await client.block())

    async with Chain(f"sim:{sim.path}", reconnect_pause=3.0, sleep=waits) as chain:
        assert await chain._call("reading the head", flaky) >= 0
        assert len(clients) == 2 and clients[0] is not clients[1], "a new client after the drop"
        assert len(waits.delays) == 1 and 0.0 <= waits.delays[0] <= 3.0

        clients.clear()

        async def dead(client: Any) -> int:
            clients.append(client)
            raise ConnectionError("socket closed by peer")

        with pytest.raises(ChainError, match="failed twice"):
            await chain._call("reading the head", dead)
        assert len(clients) == 2
        clients.clear()
        with pytest.raises(ChainError):
            await chain._call("reading the head", dead, retry=False)
        assert len(clients) == 1


# -- serve: a crashing loop restarts under the policy ----------------------------------------------

async def test_a_crashing_loop_backs_off_within_bounds_and_resets_after_a_good_round() -> None:
    stop = asyncio.Event()
    waits = Waits()
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError(f"boom {calls}")
        if calls == 5:
            stop.set()

    lp = Loop("checker", body, 10.0, max_backoff=60.0)
    await supervise(lp, stop, sleep=waits, rng=random.Random(3))
    assert calls == 5 and lp.restarts == 3 and lp.failures == 0 and "boom 3" in lp.last_error
    restarts, rounds = waits.delays[:3], waits.delays[3:]
    for n, delay in enumerate(restarts, start=1):
        c = min(60.0, 10.0 * 2 ** n)
        assert min(10.0, c) / 2 <= delay <= c, (n, delay)
    assert rounds == [10.0, 10.0]  # after a good round the plain interval, not a back-off


async def test_restore_policy_retries_its_error_until_stopped() -> None:
    stopped = False
    waits = Waits()
    tries = 0

    async def read_bucket() -> str:
        nonlocal tries, stopped
        tries += 1
        if tries == 4:
            stopped = True
        raise StorageError("bucket down")

    policy = retry.restore_policy(retry_on=StorageError, stopped=lambda: stopped, sleep=waits,
                                  before_sleep=lambda _s: None)
    with pytest.raises(StorageError):
        await policy(read_bucket)
    assert tries == 4 and len(waits.delays) == 3
    assert all(min(60.0, 2.0 ** n) / 2 <= d <= min(60.0, 2.0 ** n) for n, d in enumerate(waits.delays, start=1))


# -- S3: botocore's own standard retry mode, with Leoma's back-off ----------------------------------

@pytest.fixture
async def proxied_store(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[tuple[FaultProxy, S3Store]]:  # noqa: F811
    def store(endpoint: str, **kw: Any) -> S3Store:
        return S3Store(s3_bucket, endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                       base_delay=0.001, max_delay=0.01, **kw)

    async with store(moto_endpoint) as direct:
        await direct.ensure_bucket()
    with FaultProxy(moto_endpoint) as proxy:
        async with store(proxy.endpoint, attempts=4) as st:
            yield proxy, st


async def test_s3_requests_are_retried_inside_botocore(proxied_store: tuple[FaultProxy, S3Store],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    proxy, st = proxied_store
    client = await st._s3()
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}
    proxy.script = ["500", "429"]
    with caplog.at_level(logging.WARNING, logger="leoma.storage"):
        await st.put("k/1", b"one")
    assert [a for _, _, a in proxy.seen] == ["500", "429", "pass"]
    lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(lines) == 2 and "attempt=1/4" in lines[0] and "attempt=2/4" in lines[1]
    response = await client.head_object(Bucket=st.bucket, Key="k/1")
    assert response["ResponseMetadata"]["RetryAttempts"] == 0
    proxy.script = ["503", "503"]
    response = await client.head_object(Bucket=st.bucket, Key="k/1")
    assert response["ResponseMetadata"]["RetryAttempts"] == 2, "botocore itself made the retries"


async def test_s3_gives_up_after_its_attempts_with_the_last_error(proxied_store: tuple[FaultProxy, S3Store]) -> None:
    proxy, st = proxied_store
    proxy.seen.clear()
    proxy.script = ["500", "500", "500", "503", "500"]
    with pytest.raises(StorageError, match="after 4 attempts; last error: .*503"):
        await st.get("k/none")
    assert len(proxy.seen) == 4 and proxy.script == ["500"]
