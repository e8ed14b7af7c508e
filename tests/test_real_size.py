"""A real-size network (64 validators x 256 miners): the decision is appended, set and confirmed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner

from leoma.adapters.chain import Chain
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.log import decisions
from leoma.log.consensus import DEFAULT
from leoma.log.events import MAX_BODY_BYTES
from leoma.services import weight_setter
from leoma.tools.replay import find_epoch, replay_epoch
from tests.builders import LogBuilder

NETUID = 7
INTERVAL = 10
LENGTH = DEFAULT.epoch.length
EPOCH = 20  # decision block 3600: window = the 100 settled tasks 259..358


def _hotkey(kind: str, i: int) -> str:
    return "5" + hashlib.sha256(f"{kind}{i}".encode()).hexdigest()[:47]


async def test_a_64_validator_256_miner_decision_is_appended_and_confirmed(tmp_path: Path) -> None:
    owner = keypair_from_uri("//Owner").ss58_address
    me = keypair_from_uri("//Alice")
    validators = sorted([me.ss58_address, *(_hotkey("v", i) for i in range(63))])
    miners = [_hotkey("m", i) for i in range(256)]
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner, clock="manual", start_block=1000,
                          netuid=NETUID, weights_rate_limit=1)
    sim.register(owner)
    sim.register(me.ss58_address, stake=10**12, validator_permit=True)
    uids = {m: sim.register(m) for m in miners}
    b = LogBuilder()
    b.allowlist(me.ss58_address, validators, interval=INTERVAL, block=1001, owner=owner)
    b.metagraph(me.ss58_address, [owner, me.ss58_address, *miners], block=1001, netuid=NETUID)
    for i, m in enumerate(miners):
        b.checked(me.ss58_address, m, uid=uids[m], block=1002, commit_block=900 + i)
    best = miners[200]
    for task in range(250, 359):
        sampler = validators[task % len(validators)]
        b.opened(sampler, task, block=task * INTERVAL + 1, interval=INTERVAL, miners=miners)
        for i, m in enumerate(miners):
            b.verdict(sampler, task, m, m == best or (task + i) % 3 == 0, block=task * INTERVAL + 3)
    log = b.to_log(tmp_path / "alice.db", own=me.ss58_address)
    try:
        sim.advance_to(EPOCH * LENGTH + 5)
        async with Chain(f"sim:{sim.path}") as chain:
            result = await weight_setter.step(log_=log, chain=chain, wallet=me, netuid=NETUID, consensus=DEFAULT)
        assert result.scored and result.submitted and result.confirmed, result
        decision = result.decision
        assert decision is not None and decision.winner == best and decision.winner_uid == uids[best]
        assert len(decision.aggregates) == 256 and len(decision.validators) == 64
        assert all(len(a.rates) == 64 for a in decision.aggregates if a.hotkey == best)
        # Stored small: the decision and each of its parts under the body limit, the parts by key.
        stored = log.row_of(me.ss58_address, decisions.scored_key(EPOCH))
        assert stored is not None and stored.v == 2 and len(stored.body) <= MAX_BODY_BYTES
        parts = log.count(kind="epoch_detail")
        assert parts == len(decision.details) > 1
        assert log.get(me.ss58_address, f"weights/{EPOCH}/confirmed") is not None
        recorded = find_epoch(log, EPOCH)
        assert recorded.body.aggregates == decision.aggregates
        assert replay_epoch(log, recorded).reproduced
        rank = CliRunner().invoke(_cli(), ["get-rank", "--db", log.path, "--json"])
        assert rank.exit_code == 0 and f'"winner": "{best}"' in rank.output
    finally:
        log.close()


def _cli():  # type: ignore[no-untyped-def]
    from leoma_cmd.main import cli

    return cli
