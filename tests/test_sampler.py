"""The sampler on the simulated chain with the local world: one turn end to end, every reference
miner's outcome, outages of the chute, the judge and the bucket, a crash and a restart."""

from __future__ import annotations

import asyncio
import hashlib
import json

import msgspec
import pytest
from bittensor_core import verify

from leoma.mirror import seedformat
from leoma.errors import StorageError
from leoma.log.events import decode_body
from leoma.services.checker import check_miners
from leoma.services.sampler import sample_turn
from tests.validator_fixtures import ValidatorWorld, vworld  # noqa: F401

CALLED = ("faithful", "static", "noisy", "wrong_resolution", "slow", "flaky", "garbage", "reject")


def bodies(ctx, kind: str) -> list:
    return [decode_body(r.body, r.v) for r in ctx.log.rows(kinds=[kind], origin=ctx.hotkey)]


def by_miner(vw: ValidatorWorld, items: list) -> dict:
    return {vw.name_of(b.miner): b for b in items}


async def test_one_turn_end_to_end(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    async with vworld.context(v) as ctx:
        await check_miners(ctx)
        task = vworld.advance_to_turn(v)
        closed = await sample_turn(ctx)
        assert closed is not None and closed.task_id == task and closed.reason == ""
        assert await sample_turn(ctx) is None  # never opened twice
        opened = bodies(ctx, "task_opened")
        assert len(opened) == 1 and opened[0].block_hash == vworld.sim.block_hash(task * vworld.interval)
        assert sorted(vworld.name_of(m) for m in opened[0].miners) == sorted(CALLED)
        responses = by_miner(vworld, bodies(ctx, "miner_responded"))
        verdicts = by_miner(vworld, bodies(ctx, "verdict_recorded"))
    # every valid miner was called; the cold and the copycat were not
    assert {n for n, c in vworld.world.counts.items() if c} == set(CALLED)
    assert vworld.world.counts["faithful"] == 1
    expected = {"faithful": ("accepted", ""), "static": ("failed", "miner"), "noisy": ("accepted", ""),
                "flaky": ("accepted", ""), "wrong_resolution": ("failed", "miner"), "slow": ("failed", "miner"),
                "garbage": ("failed", "miner"), "reject": ("failed", "miner")}
    assert {n: (r.status, r.failure_class) for n, r in responses.items()} == expected
    assert "timeout" in responses["slow"].detail and "resolution" in responses["wrong_resolution"].detail
    # a miner fault fails the verdict without a judge call, with its reason
    reasons = {n: v.reason for n, v in verdicts.items()}
    assert reasons == {"faithful": "", "noisy": "", "flaky": "", "static": "gate:frozen", "wrong_resolution": "resolution",
                       "slow": "timeout", "garbage": "not_a_video", "reject": "http_422"}
    assert all(v.judge_model == "leoma-gates" for n, v in verdicts.items() if reasons[n])
    assert verdicts["faithful"].passed and not verdicts["static"].passed and not verdicts["noisy"].passed
    assert closed.evaluated == 8 and closed.passed == sum(v.passed for v in verdicts.values())

    bucket = vworld.own_store(v)
    for key in (seedformat.original_clip_key(task), seedformat.first_frame_key(task), seedformat.metadata_key(task)):
        assert await bucket.head(key) is not None, key
    for name, r in responses.items():
        stored = await bucket.head(seedformat.generated_video_key(task, vworld.hotkey(name)))
        assert (stored is not None) == (r.status == "accepted")
    metadata = json.loads(await bucket.get(seedformat.metadata_key(task)))
    assert metadata["task_id"] == task and metadata["prompt"]["text"] == opened[0].prompt
    assert sorted(metadata["miners"]) == sorted(vworld.hotkey(n) for n, r in responses.items() if r.status == "accepted")
    assert metadata["source"]["key"] == opened[0].source_key

    # the seed's verdict file, checked with the seed's own recipe
    raw = await bucket.get(closed.verdict_key)
    assert closed.verdict_key == f"{task}/evaluation_results/{v.ss58_address}.json"
    assert hashlib.sha256(raw).hexdigest() == closed.verdict_sha256
    wrapper = json.loads(raw)
    digest = hashlib.sha256(json.dumps(wrapper["data"], sort_keys=True).encode()).digest()
    assert verify(digest, bytes.fromhex(wrapper["signature"][2:]), v.ss58_address)
    assert seedformat.read_verdict_file(raw, v.ss58_address) == wrapper["data"]
    entries = {vworld.name_of(e["hotkey"]): e for e in wrapper["data"]}
    assert set(entries) == set(verdicts)
    for name, e in entries.items():
        assert e["passed"] == verdicts[name].passed and e["status"] == ("passed" if e["passed"] else "failed")
        assert f"overall_score={verdicts[name].overall}" in e["reasoning"]
        assert e["latency_ms"] == responses[name].latency_ms and e["presentation_order"] == "single-video benchmark"
        assert json.loads(e["generated_artifacts"])["overall_score"] == verdicts[name].overall


async def test_a_chute_that_turns_cold_after_the_check_is_infra(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    async with vworld.context(v) as ctx:
        results = await check_miners(ctx)
        assert next(r for r in results if r.hotkey == vworld.hotkey("faithful")).valid
        vworld.world.miners["faithful"] = msgspec.structs.replace(vworld.world.miners["faithful"], behaviour="cold")
        vworld.advance_to_turn(v)
        closed = await sample_turn(ctx)
        responses = by_miner(vworld, bodies(ctx, "miner_responded"))
        assert (responses["faithful"].status, responses["faithful"].failure_class) == ("failed", "infra")
        assert vworld.hotkey("faithful") not in {b.miner for b in bodies(ctx, "verdict_recorded")}
        assert closed is not None and closed.evaluated == 7  # faithful (infra) has none; miner faults fail


async def test_bucket_outage_then_recovery_finishes_the_task_once(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    bucket = vworld.own_store(v)
    async with vworld.context(v) as ctx:
        await check_miners(ctx)
        task = vworld.advance_to_turn(v)
        bucket.fail_suffixes = ("metadata.json",)
        with pytest.raises(StorageError, match="simulated outage"):
            await sample_turn(ctx)
        assert ctx.log.count(kind="task_opened") == 1 and ctx.log.count(kind="task_closed") == 0
        assert ctx.log.count(kind="miner_responded") == len(CALLED)
        calls = dict(vworld.world.counts)
        # the judge answers garbage once: that evaluation is retried, nobody is failed for it
        vworld.world.judge_faults = ["garbage"]
        bucket.heal()
        closed = await sample_turn(ctx)
        assert closed is not None and closed.task_id == task and closed.evaluated == 8
        assert vworld.world.judge_faults == [] and ctx.log.count(kind="judge_failed") == 0
        assert await sample_turn(ctx) is None
    assert vworld.world.counts == calls  # nobody was called again
    assert bucket.puts[seedformat.verdict_key(task, v.ss58_address)] == 1
    assert bucket.puts[seedformat.original_clip_key(task)] == 1
    assert all(n == 1 for n in bucket.puts.values())


async def test_a_judge_that_cannot_answer_fails_no_miner(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    bucket = vworld.own_store(v)
    async with vworld.context(v) as ctx:
        await check_miners(ctx)
        task = vworld.advance_to_turn(v)
        bucket.fail_suffixes = ("metadata.json",)
        with pytest.raises(StorageError):
            await sample_turn(ctx)
        vworld.world.judge_faults = ["garbage"] * 100
        bucket.heal()
        closed = await sample_turn(ctx)
        fails = bodies(ctx, "judge_failed")
        assert len(fails) == 3 and all(f.attempts == 3 for f in fails)
        # only the miners at fault have verdicts: reached without the judge
        assert {b.judge_model for b in bodies(ctx, "verdict_recorded")} == {"leoma-gates"}
        assert {vworld.name_of(f.miner) for f in fails} == {"faithful", "noisy", "flaky"}
        assert closed is not None and closed.evaluated == 5


async def test_crash_mid_task_and_restart(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    async with vworld.context(v) as ctx:
        await check_miners(ctx)
        task = vworld.advance_to_turn(v)
        run = asyncio.create_task(sample_turn(ctx))
        while ctx.log.count(kind="verdict_recorded") == 0 and not run.done():
            await asyncio.sleep(0.005)
        crashed = run.cancel()  # the process dies in the middle of judging
        try:
            await run
        except asyncio.CancelledError:
            pass
        if crashed:
            assert ctx.log.count(kind="task_closed") == 0
    calls = dict(vworld.world.counts)
    async with vworld.context(v) as ctx:  # a new process: nothing in memory, only the log and the bucket
        closed = await sample_turn(ctx)
        if crashed:
            assert closed is not None and closed.task_id == task and closed.evaluated == 8
        assert await sample_turn(ctx) is None
        assert ctx.log.count(kind="task_closed") == 1 and ctx.log.count(kind="verdict_recorded") == 8
    assert vworld.world.counts == calls
    assert vworld.own_store(v).puts[seedformat.verdict_key(task, v.ss58_address)] == 1


async def test_turn_over_closes_with_what_is_done(vworld: ValidatorWorld) -> None:
    v = vworld.validators[0]
    bucket = vworld.own_store(v)
    async with vworld.context(v) as ctx:
        await check_miners(ctx)
        task = vworld.advance_to_turn(v)
        bucket.fail_suffixes = ("metadata.json",)
        with pytest.raises(StorageError):
            await sample_turn(ctx)
        vworld.sim.advance_to((task + 1) * vworld.interval)
        bucket.heal()
        closed = await sample_turn(ctx)
        assert closed is not None and closed.task_id == task and closed.reason == "turn over"
        assert ctx.log.count(kind="verdict_recorded") == 0 and ctx.log.count(kind="task_closed") == 1
