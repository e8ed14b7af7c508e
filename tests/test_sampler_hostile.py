"""Hostile miners against the real checker and sampler path (issue 18): each refused with its
reason, real encoded videos, and no task loses the other miners' verdicts because of one miner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leoma.events import decode_body
from leoma.services.checker import check_miners
from leoma.services.sampler import GATES_JUDGE, sample_turn
from tests.validator_fixtures import ValidatorWorld, build_validator_world

HOSTILE_WORLD = ("faithful", "one_frame", "frozen", "corrupt_tail", "slowloris", "proxy_of_faithful", "source_clip",
                 "lone_surrogate")


def bodies(ctx, kind: str) -> list:
    return [decode_body(r.body, r.v) for r in ctx.log.rows(kinds=[kind], origin=ctx.hotkey)]


@pytest.fixture
async def hostile(tmp_path: Path) -> AsyncIterator[ValidatorWorld]:
    vw = await build_validator_world(tmp_path, behaviours=HOSTILE_WORLD)
    vw.world.bucket_roots = (tmp_path / "buckets",)  # the validators' public buckets
    try:
        yield vw
    finally:
        await vw.stop()


async def test_every_hostile_miner_is_refused_with_its_reason(hostile: ValidatorWorld) -> None:
    vw = hostile
    v = vw.validators[0]
    async with vw.context(v) as ctx:
        checked = {vw.name_of(r.hotkey): r for r in await check_miners(ctx)}
        assert checked["lone_surrogate"].invalid_reason == "invalid_text:model_name"
        assert all(r.valid for n, r in checked.items() if n != "lone_surrogate")
        task = vw.advance_to_turn(v)
        closed = await sample_turn(ctx)
        verdicts = {vw.name_of(b.miner): b for b in bodies(ctx, "verdict_recorded")}
        responses = {vw.name_of(b.miner): b for b in bodies(ctx, "miner_responded")}
    assert closed is not None and closed.task_id == task and closed.reason == ""
    assert {n: b.reason for n, b in verdicts.items()} == {
        "faithful": "",
        "one_frame": "gate:frame_count",
        "frozen": "gate:frozen",
        "corrupt_tail": "gate:decode",
        "slowloris": "timeout",
        "proxy_of_faithful": f"copied_output:{vw.uids['faithful']}",
        "source_clip": "returned_source_clip",
    }
    assert verdicts["faithful"].passed and verdicts["faithful"].judge_model != GATES_JUDGE
    assert all(not b.passed and b.judge_model == GATES_JUDGE for n, b in verdicts.items() if n != "faithful")
    # measurements are in the events; the refused videos never reached the judge
    assert responses["one_frame"].gates.frames == 1 and responses["frozen"].gates.motion_c < 150
    assert responses["corrupt_tail"].gates.decode_error
    assert 0 <= responses["source_clip"].gates.source_distance <= 10
    assert responses["proxy_of_faithful"].status == "accepted"  # a good video; only the copy check fails it
    assert responses["proxy_of_faithful"].gates.hashes == responses["faithful"].gates.hashes
    assert vw.world.counts["faithful"] == 2  # once by us, once by the proxy
    judged = [p for p in vw.world.requests if p[1].endswith(":generateContent")]
    assert len(judged) == 2  # one description, one evaluation: the faithful miner's
    assert closed.evaluated == 7 and closed.passed == 1


async def test_a_slowloris_miner_cannot_take_the_task_down(tmp_path: Path) -> None:
    """With a per-call deadline longer than the turn, the turn's reply deadline still cuts the
    slow miner off: it is a timeout and the others are judged in the same task."""
    vw = await build_validator_world(tmp_path, behaviours=("faithful", "noisy", "slowloris"))
    try:
        v = vw.validators[0]
        settings = vw.settings(v, REQUEST_TIMEOUT="600", SAMPLER_POLL_INTERVAL="0.2")
        async with vw.context(v, settings=settings) as ctx:
            await check_miners(ctx)
            task = vw.advance_to_turn(v)
            turn = asyncio.create_task(sample_turn(ctx))
            while len(bodies(ctx, "miner_responded")) < 2 or not vw.world.counts.get("slowloris"):
                assert not turn.done()
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            assert not turn.done()  # still waiting for the slow miner
            deadline = task * vw.interval + (3 * vw.interval + 3) // 4
            vw.sim.advance_to(deadline)
            closed = await asyncio.wait_for(turn, 120)
            responses = {vw.name_of(b.miner): b for b in bodies(ctx, "miner_responded")}
            verdicts = {vw.name_of(b.miner): b for b in bodies(ctx, "verdict_recorded")}
        assert responses["slowloris"].reason == "timeout" and f"block {deadline}" in responses["slowloris"].detail
        assert verdicts["slowloris"].reason == "timeout" and not verdicts["slowloris"].passed
        assert {n for n, b in verdicts.items() if b.judge_model != GATES_JUDGE} == {"faithful", "noisy"}
        assert closed is not None and closed.reason == "" and closed.evaluated == 3
    finally:
        await vw.stop()
