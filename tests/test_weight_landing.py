"""Weights that land: the read-back that confirms them, and commit-reveal on the simulated chain.

The chain here is the simulated one with the SDK's real `SetWeights` on top, so on the
commit-reveal path the SDK's own preflight, reveal-round arithmetic and extrinsic run, and the
chain reveals the commit itself at the reveal epoch.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from leoma.adapters.chain import Chain
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.log.consensus import DEFAULT
from leoma.log.events import WeightsSubmitted
from leoma.services import weight_setter
from leoma.services.weight_setter import CONFIRMED, NOT_LANDED, confirm_attempt, normalised, row_matches
from tests.builders import LogBuilder

NETUID = 99
LENGTH = DEFAULT.epoch.length  # 180
INTERVAL = 50


def _world(tmp_path: Path, **chain_params):  # type: ignore[no-untyped-def]
    owner = keypair_from_uri("//Owner").ss58_address
    alice = keypair_from_uri("//Alice")
    miners = [keypair_from_uri(f"//Miner{i}").ss58_address for i in range(3)]
    # tempo 179: the chain's epochs (tempo + 1 blocks) are the validator's 180-block epochs
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner, clock="manual", start_block=1000,
                          netuid=NETUID, tempo=LENGTH - 1, **chain_params)
    sim.register(owner)
    sim.register(alice.ss58_address, stake=10**12, validator_permit=True)
    uids = {m: sim.register(m) for m in miners}
    me = alice.ss58_address
    b = LogBuilder()
    b.allowlist(me, [me], interval=INTERVAL, block=1001, owner=owner)
    b.metagraph(me, [owner, me, *miners], block=1001, netuid=NETUID)
    for i, m in enumerate(miners):
        b.checked(me, m, uid=uids[m], block=1002, commit_block=900 + i)
    for task in range(20, 34):
        block = task * INTERVAL + 1
        b.opened(me, task, block=block, interval=INTERVAL, miners=miners)
        b.verdict(me, task, miners[0], task % 4 != 0, block=block + 3)
        b.verdict(me, task, miners[1], True, block=block + 3)
        b.verdict(me, task, miners[2], task % 2 == 0, block=block + 3)
    log = b.to_log(tmp_path / "alice.db", own=me)
    return sim, log, alice, miners, uids


@pytest.fixture
def plain(tmp_path: Path):  # type: ignore[no-untyped-def]
    world = _world(tmp_path, weights_rate_limit=10)
    yield world
    world[1].close()


@pytest.fixture
def commit_reveal(tmp_path: Path):  # type: ignore[no-untyped-def]
    world = _world(tmp_path, weights_rate_limit=10, commit_reveal=True, reveal_period_epochs=1)
    yield world
    world[1].close()


async def _step(sim: SimChain, log, alice, block: int):  # type: ignore[no-untyped-def]
    sim.advance_to(block)
    async with Chain(f"sim:{sim.path}") as chain:
        return await weight_setter.step(log_=log, chain=chain, wallet=alice, netuid=NETUID, consensus=DEFAULT)


def _kinds(log) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.kind for r in log.rows(origin=log.own) if r.kind.startswith("weights_")]


@pytest.mark.parametrize(
    ("decided", "row", "same"),
    [
        ([(3, 65535)], [(3, 65535)], True),
        ([(3, 65535)], [(3, 1)], True),  # one uid: any positive weight normalises to all of it
        ([(3, 65535)], [(4, 65535)], False),
        ([(3, 65535)], [(3, 65535), (4, 3)], False),  # a stray uid is not the decision
        ([(3, 65535), (4, 32768)], [(3, 65535), (4, 32767)], True),  # u16 quantisation
        ([(3, 65535), (4, 32768)], [(3, 65535), (4, 32700)], False),
        ([(3, 65535), (4, 0)], [(3, 65535)], True),  # zeros are not weight
        ([(3, 65535)], [], False),
    ],
)
def test_row_matches_compares_the_whole_normalised_row(decided, row, same) -> None:  # type: ignore[no-untyped-def]
    assert row_matches(decided, row) is same


def test_normalised_is_exact() -> None:
    assert normalised([(1, 3), (2, 6)]) == {1: Fraction(1, 2), 2: Fraction(1)}


async def test_a_stale_row_with_the_same_winner_is_not_confirmed(plain) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, miners, uids = plain
    first = await _step(sim, log, alice, 10 * LENGTH + 5)
    assert first.confirmed
    # Epoch 11 decides the same winner; its submission was recorded but never executed on chain
    # (the chain still holds epoch 10's row, with epoch 10's LastUpdate).
    second = await _step(sim, log, alice, 11 * LENGTH + 1)
    assert second.confirmed and second.decision.winner == first.decision.winner  # type: ignore[union-attr]
    sent = WeightsSubmitted(epoch=12, uids=(uids[miners[1]],), weights=(65535,), included_at=12 * LENGTH + 1)
    log.append(sent, key="weights/12/submitted", block=12 * LENGTH + 1)
    sim.advance_to(12 * LENGTH + 3)
    async with Chain(f"sim:{sim.path}") as chain:
        outcome = await confirm_attempt(log, chain, alice, NETUID, sent, 1, 12 * LENGTH + 3)
    assert outcome == NOT_LANDED
    assert log.get(alice.ss58_address, "weights/12/confirmed") is None
    not_landed = log.get(alice.ss58_address, "weights/12/not_landed/1").payload()
    assert "stale" in not_landed.reason and not_landed.uids == (uids[miners[1]],)
    # The next step sends epoch 12 again (attempt 2), and that one lands.
    retried = await _step(sim, log, alice, 12 * LENGTH + 20)
    assert retried.submitted and retried.confirmed
    assert log.get(alice.ss58_address, "weights/12/submitted/2") is not None


async def test_a_row_that_is_not_the_decision_is_not_landed(plain) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, miners, uids = plain
    assert (await _step(sim, log, alice, 10 * LENGTH + 5)).confirmed
    # A decision for another miner, "submitted" after the chain's LastUpdate: the row is fresh
    # but holds epoch 10's winner, so it is not this decision.
    sent = WeightsSubmitted(epoch=11, uids=(uids[miners[0]],), weights=(65535,), included_at=10 * LENGTH + 5)
    log.append(sent, key="weights/11/submitted", block=11 * LENGTH)
    async with Chain(f"sim:{sim.path}") as chain:
        assert await confirm_attempt(log, chain, alice, NETUID, sent, 1, 11 * LENGTH) == NOT_LANDED
    not_landed = log.get(alice.ss58_address, "weights/11/not_landed/1").payload()
    assert "not the decision" in not_landed.reason and not_landed.superseded_by == -1, "epoch 10 came before it"


async def test_an_earlier_attempt_the_row_moved_past_is_superseded_not_failed(plain) -> None:  # type: ignore[no-untyped-def]
    """Read back after the chain applied a later decision of ours (commit-reveal with a reveal
    period longer than an epoch), an earlier epoch's attempt names the epoch the row holds."""
    sim, log, alice, miners, uids = plain
    assert (await _step(sim, log, alice, 10 * LENGTH + 5)).confirmed  # the row: epoch 10's winner
    epoch10 = log.get(alice.ss58_address, "weights/10/submitted").payload()
    earlier = WeightsSubmitted(epoch=9, uids=(uids[miners[0]],), weights=(65535,), included_at=epoch10.included_at - 3)
    log.append(earlier, key="weights/9/submitted", block=epoch10.included_at - 3)
    late = WeightsSubmitted(epoch=8, uids=(uids[miners[0]],), weights=(65535,), included_at=epoch10.included_at + 1)
    log.append(late, key="weights/8/submitted", block=epoch10.included_at + 1)
    async with Chain(f"sim:{sim.path}") as chain:
        assert await confirm_attempt(log, chain, alice, NETUID, earlier, 1, 10 * LENGTH + 9) == NOT_LANDED
        assert await confirm_attempt(log, chain, alice, NETUID, late, 1, 10 * LENGTH + 9) == NOT_LANDED
    superseded = log.get(alice.ss58_address, "weights/9/not_landed/1").payload()
    assert superseded.superseded_by == 10 and superseded.reason.startswith("superseded: the row holds epoch 10's")
    # Epoch 8's attempt is numbered earlier but was sent after epoch 10's: the row is not past it.
    failed = log.get(alice.ss58_address, "weights/8/not_landed/1").payload()
    assert failed.superseded_by == -1 and "not the decision" in failed.reason


async def test_a_rate_limited_submission_is_retried_and_not_counted(plain) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, *_ = plain
    assert (await _step(sim, log, alice, 10 * LENGTH + 5)).confirmed
    sim.set_param("weights_rate_limit", 200)
    limited = await _step(sim, log, alice, 11 * LENGTH + 1)
    assert not limited.submitted and not limited.confirmed and "SettingWeightsTooFast" in limited.refused
    assert log.get(alice.ss58_address, "weights/11/submitted") is None, "a refusal is not a submission"
    again = await _step(sim, log, alice, 11 * LENGTH + 2)
    assert not again.confirmed and log.count(kind="weights_refused") == 1, "the same refusal is recorded once"
    retried = await _step(sim, log, alice, 10 * LENGTH + 6 + 200)  # 200 blocks after the inclusion
    assert retried.submitted and retried.confirmed and not retried.scored
    assert _kinds(log) == ["weights_submitted", "weights_confirmed", "weights_refused", "weights_submitted",
                           "weights_confirmed"]


async def test_commit_reveal_end_to_end(commit_reveal) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, miners, uids = commit_reveal
    committed = await _step(sim, log, alice, 10 * LENGTH + 5)
    assert committed.submitted and committed.committed and not committed.confirmed
    assert "reveals at drand round" in committed.pending
    sent = log.get(alice.ss58_address, "weights/10/submitted").payload()
    assert sent.commit_reveal and sent.reveal_round > 0 and sent.included_at == 10 * LENGTH + 6
    async with Chain(f"sim:{sim.path}") as chain:
        assert await chain.weights(NETUID, 1) == [], "hidden until the chain reveals it"
    waiting = await _step(sim, log, alice, 11 * LENGTH - 2)
    assert not waiting.confirmed and waiting.pending.startswith("committed at block")
    assert log.count(kind="weights_submitted") == 1, "an outstanding commit is read back, not sent again"
    # The chain reveals at the first block of the next epoch; the next step sees it landed.
    after = await _step(sim, log, alice, 11 * LENGTH + 15)
    assert log.get(alice.ss58_address, "weights/10/confirmed") is not None
    async with Chain(f"sim:{sim.path}") as chain:
        assert await chain.weights(NETUID, 1) == [(uids[miners[1]], 65535)]
    assert sim.state(11 * LENGTH + 1).last_update[1] == 11 * LENGTH, "the reveal stamps LastUpdate"
    assert _kinds(log)[:4] == ["weights_submitted", "weights_committed", "weights_revealed", "weights_confirmed"]
    assert after.committed and after.epoch == 11, "epoch 11 is committed in turn"


async def test_a_reveal_the_chain_drops_is_not_confirmed_even_with_the_same_winner(commit_reveal) -> None:  # type: ignore[no-untyped-def]
    sim, log, alice, *_ = commit_reveal
    await _step(sim, log, alice, 10 * LENGTH + 5)
    await _step(sim, log, alice, 11 * LENGTH + 15)  # epoch 10 revealed and confirmed; epoch 11 committed
    assert log.get(alice.ss58_address, "weights/10/confirmed") is not None
    assert log.get(alice.ss58_address, "weights/11/committed/1") is not None
    sim.set_param("weights_version_key", 7)  # the owner raises the key: epoch 11's reveal is dropped
    result = await _step(sim, log, alice, 12 * LENGTH + 1)
    assert log.get(alice.ss58_address, "weights/11/revealed/1") is not None
    assert log.get(alice.ss58_address, "weights/11/confirmed") is None
    reason = log.get(alice.ss58_address, "weights/11/not_landed/1").payload().reason
    assert "dropped the reveal" in reason
    assert result.epoch == 12 and result.committed, "epoch 12 goes out with the new version key"
    assert log.get(alice.ss58_address, "weights/12/submitted").payload().version_key == 7


async def test_plain_set_weights_is_refused_on_a_commit_reveal_subnet(commit_reveal) -> None:  # type: ignore[no-untyped-def]
    import bittensor as bt

    from leoma.adapters.simchain import SimSubstrate

    sim, _log, alice, *_ = commit_reveal
    call = bt.calls.SubtensorModule.set_mechanism_weights(netuid=NETUID, mecid=0, dests=[2], weights=[65535],
                                                          version_key=0)
    async with bt.Client("local", substrate=SimSubstrate(sim)) as client:
        res = await client.submit_call(call, alice, signer="hotkey")
    assert not res.success and res.error.name == "CommitRevealEnabled"
