"""Hostile miners against the real checker and sampler path (issue 18): each refused with its
reason, real encoded videos, and no task loses the other miners' verdicts because of one miner."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from leoma.adapters import gates
from leoma.adapters.chutes import ChutesClient
from leoma.log.events import decode_body
from leoma.services import sampler
from leoma.services.checker import check_miners
from leoma.services.sampler import GATES_JUDGE, ByteBudget, sample_turn
from projections.gates import rederive
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
        verdicts_raw, responses_raw = bodies(ctx, "verdict_recorded"), bodies(ctx, "miner_responded")
        checks = bodies(ctx, "miner_checked")
        verdicts = {vw.name_of(b.miner): b for b in verdicts_raw}
        responses = {vw.name_of(b.miner): b for b in responses_raw}
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
    # replay's view: every gate and copy verdict follows from the recorded measurements alone
    seniority = {c.hotkey: (c.commit_block, c.uid) for c in checks}
    assert rederive(responses_raw, verdicts_raw, seniority, vw.consensus) == []
    tampered = [msgspec.structs.replace(r, gates=msgspec.structs.replace(r.gates, motion_c=5000))
                if r.gates is not None and r.reason == "gate:frozen" else r for r in responses_raw]
    assert len(rederive(tampered, verdicts_raw, seniority, vw.consensus)) == 1


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


async def test_the_byte_budget_holds_its_limit_and_lets_a_large_hold_go_alone() -> None:
    budget = ByteBudget(16)
    live: list[int] = []
    seen: list[int] = []

    async def hold(size: int) -> None:
        async with budget.hold(size):
            live.append(size)
            seen.append(sum(live))
            await asyncio.sleep(0.01)
            live.remove(size)

    await asyncio.gather(*(hold(s) for s in (10, 10, 6, 40, 5, 5, 5, 5)))
    assert all(total <= 16 or total == 40 for total in seen)  # within the limit, or the 40 alone
    assert budget.peak == 40 and budget.held == 0  # the 40 ran, alone; nothing is left held
    assert 16 in seen or 15 in seen  # holds that fit together do run together


async def test_replies_are_decoded_and_judged_a_few_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory bound on the real path: a reply past the cap is refused while it streams (to
    disk), at most REPLY_DECODES replies are decoded at once, videos reach the judge within the
    byte budget, and every miner gets the verdict it gets without any bound."""
    vw = await build_validator_world(tmp_path, behaviours=("faithful", "noisy", "flaky", "frozen", "one_frame",
                                                           "corrupt_tail", "oversize"))
    vw.world.oversize_bytes = 30_000_000
    lock = threading.Lock()
    decoding = {"now": 0, "peak": 0}
    judging = {"now": 0, "peak": 0}
    real_measure = gates.measure

    def counted_measure(*args: Any, **kw: Any) -> Any:
        with lock:
            decoding["now"] += 1
            decoding["peak"] = max(decoding["peak"], decoding["now"])
        try:
            time.sleep(0.2)  # long enough that unbounded decodes would overlap
            return real_measure(*args, **kw)
        finally:
            with lock:
                decoding["now"] -= 1

    monkeypatch.setattr(gates, "measure", counted_measure)
    monkeypatch.setattr(sampler, "JUDGE_VIDEO_BYTES", 1)  # every video goes to the judge alone
    try:
        v = vw.validators[0]
        chutes = ChutesClient(vw.world.url, "", vw.world.generate_url_template, retry_base_delay=0.02,
                              retry_budget=3.0, max_response_bytes=20_000_000)
        # no slow miner here: a long per-call deadline, so busy cores cannot turn a miner into a timeout
        settings = vw.settings(v, REQUEST_TIMEOUT="600")
        async with vw.context(v, settings=settings, chutes=chutes) as ctx:
            real_evaluate = ctx.judge.evaluate

            async def counted_evaluate(*args: Any) -> Any:
                judging["now"] += 1
                judging["peak"] = max(judging["peak"], judging["now"])
                try:
                    await asyncio.sleep(0.1)
                    return await real_evaluate(*args)
                finally:
                    judging["now"] -= 1

            ctx.judge.evaluate = counted_evaluate  # type: ignore[method-assign]
            await check_miners(ctx)
            vw.advance_to_turn(v)
            closed = await sample_turn(ctx)
            verdicts = {vw.name_of(b.miner): b for b in bodies(ctx, "verdict_recorded")}
        await chutes.aclose()
    finally:
        await vw.stop()
    assert {n: b.reason for n, b in verdicts.items()} == {
        "faithful": "", "noisy": "", "flaky": "", "frozen": "gate:frozen", "one_frame": "gate:frame_count",
        "corrupt_tail": "gate:decode", "oversize": "too_large"}
    assert verdicts["faithful"].passed and verdicts["faithful"].judge_model != GATES_JUDGE
    assert closed is not None and closed.evaluated == 7
    assert decoding["peak"] == sampler.REPLY_DECODES  # bounded, and the bound is used
    assert judging["peak"] == 1
