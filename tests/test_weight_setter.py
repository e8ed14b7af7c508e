"""The weight setter over the simulated chain, and `leoma replay` of what it decided."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from leoma.adapters.chain import Chain
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import EventLog
from leoma.log.events import VerdictRecorded
from leoma.services import weight_setter
from leoma.tools.replay import find_epoch, recorded_epochs, replay_epoch
from tests.builders import LogBuilder

NETUID = 99
LENGTH = DEFAULT.epoch.length  # 180
INTERVAL = 50


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    owner = keypair_from_uri("//Owner").ss58_address
    alice = keypair_from_uri("//Alice")
    miners = [keypair_from_uri(f"//Miner{i}").ss58_address for i in range(3)]
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner, clock="manual", start_block=1000,
                          netuid=NETUID, weights_rate_limit=100)
    sim.register(owner)
    sim.register(alice.ss58_address, stake=10**12, validator_permit=True)
    uids = {m: sim.register(m) for m in miners}
    hotkeys = [owner, alice.ss58_address, *miners]
    me = alice.ss58_address
    b = LogBuilder()
    b.allowlist(me, [me], interval=INTERVAL, block=1001, owner=owner)
    b.metagraph(me, hotkeys, block=1001, netuid=NETUID)
    for i, m in enumerate(miners):
        b.checked(me, m, uid=uids[m], block=1002, commit_block=900 + i)
    for task in range(20, 34):  # blocks 1000..1650: all settled before epoch 10's block 1800
        block = task * INTERVAL + 1
        b.opened(me, task, block=block, interval=INTERVAL, miners=miners)
        b.verdict(me, task, miners[0], task % 4 != 0, block=block + 3)  # 71%
        b.verdict(me, task, miners[1], True, block=block + 3)  # 100%, committed later: must beat by 5%
        b.verdict(me, task, miners[2], task % 2 == 0, block=block + 3)
    log = b.to_log(tmp_path / "alice.db", own=me)
    yield sim, log, alice, miners, uids
    log.close()


async def _step(sim: SimChain, log: EventLog, alice, block: int):  # type: ignore[no-untyped-def]
    sim.advance_to(block)
    async with Chain(f"sim:{sim.path}") as chain:
        return await weight_setter.step(log_=log, chain=chain, wallet=alice, netuid=NETUID, consensus=DEFAULT)


async def test_an_epoch_is_scored_set_and_confirmed(world) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, miners, uids = world
    result = await _step(sim, log, alice, 10 * LENGTH + 5)
    assert result.epoch == 10 and result.scored and result.submitted and result.confirmed
    decision = result.decision
    assert decision is not None and decision.winner == miners[1]
    assert [(w.uid, w.weight) for w in decision.weights] == [(uids[miners[1]], 65535)]
    assert log.count(kind="weights_submitted") == 1 and log.count(kind="weights_confirmed") == 1
    again = await _step(sim, log, alice, 10 * LENGTH + 6)
    assert again.confirmed and not again.scored and log.count(kind="epoch_scored") == 1


async def test_fix_weights_set_when_the_chain_allows_not_only_on_a_boundary_block(world) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, *_ = world
    result = await _step(sim, log, alice, 10 * LENGTH + 97)  # a poll that missed the boundary by 97 blocks
    assert result.confirmed and result.decision.epoch == 10  # type: ignore[union-attr]


async def test_fix_refused_submission_is_not_success(world) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, *_ = world
    assert (await _step(sim, log, alice, 10 * LENGTH + 5)).confirmed
    sim.set_param("weights_rate_limit", 10_000)
    result = await _step(sim, log, alice, 11 * LENGTH + 5)
    assert result.scored and not result.submitted and not result.confirmed
    assert "SettingWeightsTooFast" in result.refused
    refused = [r for r in log.rows(kinds=["weights_refused"])]
    assert len(refused) == 1 and "SettingWeightsTooFast" in refused[0].body
    assert log.get(alice.ss58_address, "weights/11/confirmed") is None
    sim.set_param("weights_rate_limit", 1)
    retried = await _step(sim, log, alice, 11 * LENGTH + 9)
    assert retried.confirmed and not retried.scored, "the same decision is retried, not re-made"


async def test_fail_closed_keeps_good_weights_when_data_disappears(world) -> None:  # type: ignore[no-untyped-def]
    import msgspec

    from leoma.log.consensus import Epoch

    sim, log, alice, miners, uids = world
    assert (await _step(sim, log, alice, 10 * LENGTH + 5)).confirmed
    sim.set_param("weights_rate_limit", 1)
    # Far later every task has left the lookback floor: no settled window, no data.
    far = 10 * LENGTH + DEFAULT.window.max_lookback_blocks + 2 * LENGTH
    patient = msgspec.structs.replace(DEFAULT, epoch=Epoch(length=LENGTH, burn_after_epochs_without_data=10_000))
    sim.advance_to(far)
    async with Chain(f"sim:{sim.path}") as chain:
        kept = await weight_setter.step(log_=log, chain=chain, wallet=alice, netuid=NETUID, consensus=patient)
    assert kept.decision.burn_reason == "no settled window"  # type: ignore[union-attr]
    assert kept.withheld.startswith("withheld") and not kept.submitted
    assert log.count(kind="weights_submitted") == 1, "the good weights were not overwritten with a burn"
    # Under the pinned grace (3 epochs) the burn goes through, as the seed does.
    burned = await _step(sim, log, alice, far + LENGTH)
    assert burned.decision.burn_reason == "no settled window" and burned.submitted  # type: ignore[union-attr]
    assert [(w.uid, w.weight) for w in burned.decision.weights] == [(0, 65535)]  # type: ignore[union-attr]


async def test_replay_reproduces_every_epoch_and_ignores_later_events(world) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, miners, _ = world
    await _step(sim, log, alice, 10 * LENGTH + 5)
    sim.set_param("weights_rate_limit", 1)
    # Events after the decision (a late verdict) must not change its replay.
    log.append(VerdictRecorded(task_id=33, miner=miners[0], passed=True, overall=99, judge_model="g",
                               prompt_version="evaluate/v1"), key="verdict/33/late", block=10 * LENGTH + 7)
    await _step(sim, log, alice, 11 * LENGTH + 5)
    recorded = list(recorded_epochs(log))
    assert [r.body.epoch for r in recorded] == [10, 11]
    for r in recorded:
        assert replay_epoch(log, r).reproduced


def test_replay_names_a_difference(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import msgspec

    sim, log, alice, miners, uids = world
    import asyncio

    asyncio.run(_step(sim, log, alice, 10 * LENGTH + 5))
    recorded = find_epoch(log, 10)
    forged = msgspec.structs.replace(recorded, body=msgspec.structs.replace(recorded.body, winner=miners[0]))
    result = replay_epoch(log, forged)
    assert not result.reproduced and [d.field for d in result.differences] == ["winner"]


def test_replay_command_exit_codes(world) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from leoma_cmd.main import cli

    sim, log, alice, miners, _ = world
    asyncio.run(_step(sim, log, alice, 10 * LENGTH + 5))
    runner = CliRunner()
    ok = runner.invoke(cli, ["replay", "10", "--db", log.path])
    assert ok.exit_code == 0, ok.output
    assert "reproduced" in ok.output
    every = runner.invoke(cli, ["replay", "--all", "--db", log.path, "--json"])
    assert every.exit_code == 0 and '"ok": true' in every.output
    missing = runner.invoke(cli, ["replay", "99", "--db", log.path])
    assert missing.exit_code == 1 and "no epoch_scored event for epoch 99" in missing.output
    rank = runner.invoke(cli, ["get-rank", "--db", log.path])
    assert rank.exit_code == 0 and miners[1][:12] in rank.output
    why = runner.invoke(cli, ["explain", miners[0], "--db", log.path])
    assert why.exit_code == 0 and "earliest committed eligible miner" in why.output
    behind = runner.invoke(cli, ["explain", miners[2], "--db", log.path])
    assert behind.exit_code == 0 and "NOT beaten" in behind.output  # 50% does not beat the earlier 71%
    why2 = runner.invoke(cli, ["explain", miners[1], "--db", log.path, "--json"])
    assert why2.exit_code == 0 and '"rank": 1' in why2.output


def test_replay_from_a_public_mirror_alone(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    from leoma.adapters.directory import DirectoryStore
    from leoma.log.consensus import DEFAULT as consensus
    from leoma.mirror.out import MirrorOut
    from leoma_cmd.main import cli

    sim, log, alice, miners, _ = world
    asyncio.run(_step(sim, log, alice, 10 * LENGTH + 5))

    async def publish() -> None:
        store = DirectoryStore(tmp_path / "bucket")
        await MirrorOut(log, store, alice, consensus.digest).push()
        await store.close()

    asyncio.run(publish())
    url = (tmp_path / "bucket").as_uri()
    result = CliRunner().invoke(cli, ["replay", "--all", "--from-bucket", url, "--hotkey", alice.ss58_address])
    assert result.exit_code == 0, result.output
    assert "epoch 10" in result.output and "reproduced" in result.output
    wrong = CliRunner().invoke(cli, ["replay", "--all", "--from-bucket", url, "--hotkey", miners[0]])
    assert wrong.exit_code == 1 and "no published log" in wrong.output


async def test_replay_reproduces_a_hold_and_a_burn(world) -> None:  # type: ignore[no-untyped-def]
    """The fail-closed rule is part of the decision (`keeps_epoch`): replay re-derives it."""
    import msgspec

    from leoma.log.consensus import Epoch

    sim, log, alice, *_ = world
    assert (await _step(sim, log, alice, 10 * LENGTH + 5)).confirmed
    sim.set_param("weights_rate_limit", 1)
    far = 10 * LENGTH + DEFAULT.window.max_lookback_blocks + 2 * LENGTH
    patient = msgspec.structs.replace(DEFAULT, epoch=Epoch(length=LENGTH, burn_after_epochs_without_data=10_000))
    sim.advance_to(far)
    async with Chain(f"sim:{sim.path}") as chain:
        kept = await weight_setter.step(log_=log, chain=chain, wallet=alice, netuid=NETUID, consensus=patient)
    burned = await _step(sim, log, alice, far + LENGTH)
    held, gone = find_epoch(log, kept.epoch), find_epoch(log, burned.epoch)
    assert held.body.keeps_epoch == 10 and gone.body.keeps_epoch == -1 and burned.submitted
    assert replay_epoch(log, held, consensus=patient).reproduced
    assert replay_epoch(log, gone).reproduced
    forged = msgspec.structs.replace(held, body=msgspec.structs.replace(held.body, keeps_epoch=-1))
    assert [d.field for d in replay_epoch(log, forged, consensus=patient).differences] == ["keeps_epoch"]
