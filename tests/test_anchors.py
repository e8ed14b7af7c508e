"""Anchors: checkpoints committed on the simulated chain through the SDK, and decisions fixed by them."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from leoma.adapters.chain import Chain
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.log.consensus import DEFAULT, replace_leaf
from leoma.log.eventlog import EventLog
from leoma.log.events import AnchorCommitted, AnchorFailed, encode_body
from leoma.mirror import anchors
from leoma.mirror.allowlist import COMMITMENT_PREFIX, parse_commitment
from leoma.services import weight_setter
from leoma.services.anchored import Held, decide_anchored, replay_anchored
from projections import anchors as pa
from tests.builders import LogBuilder

NETUID = 42
LENGTH = 60
INTERVAL = 10
C = replace_leaf(replace_leaf(replace_leaf(DEFAULT, "epoch.length", LENGTH), "anchors.enabled", True),
                 "anchors.cutoff_margin", 5)
E = 20  # epoch 20: block 1200, cutoff 1195


def test_the_consensus_switch_is_off_by_default_and_digest_neutral() -> None:
    assert not DEFAULT.anchors.enabled
    off = replace_leaf(DEFAULT, "anchors.enabled", False)
    assert off.digest == DEFAULT.digest and b"anchors" not in DEFAULT.canonical
    assert replace_leaf(DEFAULT, "anchors.enabled", True).digest != DEFAULT.digest
    assert C.anchor_cutoff(E) == 1195 and C.anchor_grace == LENGTH


def test_payload_fits_one_raw_field_and_parses_back() -> None:
    head = "ab" * 32
    data = anchors.payload(10**9, head)
    assert len(data) <= 128 and anchors.parse(data) == (10**9, head)
    for bad in (b"leoma:anchor:v1:x:" + b"a" * 64, b"leoma:anchor:v1:5:" + b"a" * 63, b"hello", b"\xff"):
        assert anchors.parse(bad) is None
    # an owner-validator's allowlist and anchor share one commitment; the SDK joins the fields
    joined = (COMMITMENT_PREFIX + "d" * 64).encode() + data
    assert parse_commitment(joined.decode()) == "d" * 64


def test_first_anchor_and_the_no_backdating_rule() -> None:
    hist = {"B": [(1050, 4), (1110, 9), (1170, 12)]}
    assert pa.first_anchor(hist["B"], 5) == 1110 and pa.first_anchor(hist["B"], 13) is None
    assert pa.slot_deadline(1031, 10, 60) == 1099
    assert pa.admit(hist, "B", 5, 1051, 10, 60) == (True, 1110)  # slot ends 1059, +60 = 1119
    assert pa.admit(hist, "B", 5, 1031, 10, 60) == (False, 1110)  # slot ends 1039, +60 = 1099
    assert pa.admit(hist, "B", 13, 1161, 10, 60) == (False, -1)


class Node:
    """One validator: its own log (appended to directly) and its wallet; peers import its chain."""

    def __init__(self, path: Path, wallet) -> None:  # type: ignore[no-untyped-def]
        self.wallet = wallet
        self.hk = wallet.ss58_address
        self.log = EventLog(path, own=self.hk)
        self.b = LogBuilder()  # builds bodies only

    def add(self, event) -> None:  # type: ignore[no-untyped-def]
        self.log.append(event.payload(), key=event.key, block=event.block)

    def head(self) -> tuple[int, str]:
        h = self.log.head(self.hk)
        return h.origin_seq, h.hash

    def pull(self, other: Node, upto: int | None = None) -> None:
        events = [e for e in other.log.chain(other.hk) if upto is None or e.origin_seq <= upto]
        self.log.import_events(events)


@pytest.fixture
def net(tmp_path: Path):  # type: ignore[no-untyped-def]
    owner = keypair_from_uri("//Owner").ss58_address
    wallets = [keypair_from_uri("//Alice"), keypair_from_uri("//Bob")]
    miners = [keypair_from_uri(f"//Miner{i}").ss58_address for i in range(3)]
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner, clock="manual", start_block=1000, netuid=NETUID,
                          weights_rate_limit=10, tempo=LENGTH - 1)
    sim.register(owner)
    for w in wallets:
        sim.register(w.ss58_address, stake=10**12, validator_permit=True)
    uids = {m: sim.register(m) for m in miners}
    nodes = sorted((Node(tmp_path / f"{w.ss58_address[:8]}.db", w) for w in wallets), key=lambda n: n.hk)
    vals = [n.hk for n in nodes]
    for n in nodes:
        n.add(n.b.allowlist(n.hk, vals, interval=INTERVAL, block=1001, owner=owner))
        n.add(n.b.metagraph(n.hk, [owner, *vals, *miners], block=1001, netuid=NETUID))
        for i, m in enumerate(miners):
            n.add(n.b.checked(n.hk, m, uid=uids[m], block=1002, commit_block=900 + i))
    yield sim, nodes, miners
    for n in nodes:
        n.log.close()


def produce(nodes: list[Node], miners: list[str], tasks: range, skip: tuple[int, ...] = ()) -> None:
    """Each task by its rotation's sampler (task % 2), with verdicts on the three miners."""
    for task in tasks:
        if task in skip:
            continue
        n = nodes[task % 2]
        block = task * INTERVAL + 1
        n.add(n.b.opened(n.hk, task, block=block, interval=INTERVAL, miners=miners))
        n.add(n.b.verdict(n.hk, task, miners[0], task % 4 != 0, block=block + 2))
        n.add(n.b.verdict(n.hk, task, miners[1], True, block=block + 2))
        n.add(n.b.verdict(n.hk, task, miners[2], task % 3 == 0, block=block + 2))


async def _anchor(sim: SimChain, node: Node, block: int, head: str | None = None):  # type: ignore[no-untyped-def]
    """Anchor what the node holds now (a scratch log records it: the node's own chain stays the test's)."""
    sim.advance_to(max(sim.head(), block))
    size, h = node.head()
    scratch = EventLog(Path(node.log.path).parent / f"anchor-{node.hk[:8]}.db", own=node.hk)
    try:
        async with Chain(f"sim:{sim.path}") as chain:
            return await anchors.anchor_step(scratch, chain, node.wallet, NETUID, C, published=(size, head or h))
    finally:
        scratch.close()


async def _observe(sim: SimChain, log: EventLog, epoch: int):  # type: ignore[no-untyped-def]
    sim.advance_to(max(sim.head(), epoch * LENGTH + 1))
    async with Chain(f"sim:{sim.path}") as chain:
        return await anchors.observe(log, chain, NETUID, C, epoch)


def _decide(log: EventLog, epoch: int):  # type: ignore[no-untyped-def]
    return decide_anchored(log, epoch=epoch, epoch_block=epoch * LENGTH, netuid=NETUID, consensus=C,
                           observed=anchors.observed(log, epoch))


async def history(sim: SimChain, nodes: list[Node], miners: list[str], *, skip: tuple[int, ...] = ()) -> None:
    """Epochs 17..20: tasks 100..118 produced, each node anchoring before every cutoff and
    recording the anchors after it (as the weight setter does), all synced."""
    for epoch, tasks in ((17, range(100, 102)), (18, range(102, 108)), (19, range(108, 114)), (20, range(114, 119))):
        produce(nodes, miners, tasks, skip)
        for n in nodes:
            assert isinstance(await _anchor(sim, n, C.anchor_cutoff(epoch) - 3), AnchorCommitted)
        nodes[0].pull(nodes[1])
        nodes[1].pull(nodes[0])
        if epoch < E:
            for n in nodes:
                await _observe(sim, n.log, epoch)


async def test_anchor_is_committed_once_per_epoch_and_refusals_are_recorded(net) -> None:  # type: ignore[no-untyped-def]
    sim, nodes, _ = net
    n = nodes[0]
    scratch = n.log  # here the node's own log records its anchors
    async def step(block: int):  # type: ignore[no-untyped-def]
        sim.advance_to(block)
        async with Chain(f"sim:{sim.path}") as chain:
            return await anchors.anchor_step(scratch, chain, n.wallet, NETUID, C, published=n.head())
    assert await step(1170) is None  # the cutoff 1195 is 25 blocks away
    done = await step(1186)
    assert isinstance(done, AnchorCommitted) and done.epoch == E and done.size == 5
    assert await step(1187) is None  # once per epoch
    async with Chain(f"sim:{sim.path}") as chain:
        read = await anchors.read_anchor(chain, NETUID, n.hk, 1195)
        assert (read.size, read.head, read.block) == (done.size, done.head, done.commit_block)
        assert (await anchors.read_anchor(chain, NETUID, n.hk, done.commit_block - 1)).size == 0  # history
    # the chain's space limit refuses the next epoch's anchor: recorded with the chain's reason, retried
    sim.set_param("commitments_max_space", 50)
    failed = await step(1246)
    assert isinstance(failed, AnchorFailed) and failed.reason == "SpaceLimitExceeded" and failed.retried
    again = await step(1247)
    assert isinstance(again, AnchorFailed) and again.attempt == 2
    sim.set_param("commitments_max_space", 3100)
    assert isinstance(await step(1248), AnchorCommitted)


async def test_owner_validator_keeps_its_allowlist_field_next_to_the_anchor(net) -> None:  # type: ignore[no-untyped-def]
    sim, nodes, _ = net
    n = nodes[0]
    async with Chain(f"sim:{sim.path}") as chain:
        await chain.set_commitment(n.wallet, NETUID, COMMITMENT_PREFIX + "e" * 64)
    await _anchor(sim, n, 1186)
    async with Chain(f"sim:{sim.path}") as chain:
        assert parse_commitment(await chain.plain_commitment(NETUID, n.hk)) == "e" * 64
        assert (await anchors.read_anchor(chain, NETUID, n.hk, 1190)).size == n.head()[0]


async def test_validators_decide_the_same_on_anchored_events_or_hold(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim, nodes, miners = net
    await history(sim, nodes, miners)
    anchored = {n.hk: n.head() for n in nodes}
    # after the last anchors, one validator records more: flipped verdicts that its peer imports too
    late = nodes[1]
    for task in range(101, 119, 2):
        late.add(late.b.verdict(late.hk, task, miners[1], False, block=1190, key=f"verdict/{task}/{miners[1]}/again"))
    nodes[0].pull(late)
    decided = {}
    for n in nodes:
        obs = await _observe(sim, n.log, E)
        assert obs is not None and [(a.origin, a.size, a.head) for a in obs.anchors] == \
            [(hk, *anchored[hk]) for hk in sorted(anchored)]
        decided[n.hk] = _decide(n.log, E)
        assert not isinstance(decided[n.hk], Held), decided[n.hk]
    first, second = (encode_body(decided[n.hk]) for n in nodes)
    assert first == second  # byte-identical, though the late verdicts are in both logs
    d = decided[nodes[0].hk]
    assert [(f.origin, f.origin_seq, f.hash) for f in d.frontier] == [(hk, *anchored[hk]) for hk in sorted(anchored)]
    assert d.window and d.winner == miners[1] and not d.late_tasks  # the unanchored flips would sink miner 1
    # the plain rule on the same log reads the unanchored events and decides otherwise
    plain = weight_setter.decide_epoch(nodes[0].log, own=nodes[0].hk, epoch=E, epoch_block=E * LENGTH,
                                       netuid=NETUID, consensus=replace_leaf(C, "anchors.enabled", False))
    assert plain.winner != d.winner
    # a validator lacking anchored events of its peer holds, naming the peer
    short = EventLog(tmp_path / "short.db", own=nodes[0].hk)
    short.import_events(list(nodes[0].log.chain(nodes[0].hk)) + list(late.log.chain(late.hk))[:19])
    await _observe(sim, short, E)
    held = _decide(short, E)
    assert isinstance(held, Held) and held.peer == late.hk and held.reason == pa.BEHIND and held.local_size == 19
    short.close()
    # replay from scratch reproduces the decision
    again = replay_anchored(late.log, E, E * LENGTH, NETUID, C, late.hk)
    assert again is not None and encode_body(again) == first


async def test_an_anchor_naming_a_head_the_bucket_does_not_serve_makes_everyone_hold(net) -> None:  # type: ignore[no-untyped-def]
    sim, nodes, miners = net
    produce(nodes, miners, range(114, 119))
    nodes[0].pull(nodes[1])
    nodes[1].pull(nodes[0])
    liar = nodes[1]
    await _anchor(sim, nodes[0], 1186)
    await _anchor(sim, liar, 1186, head="f" * 64)
    for n in nodes:
        await _observe(sim, n.log, E)
        held = _decide(n.log, E)
        assert isinstance(held, Held) and held.peer == liar.hk and held.reason == pa.FORKED


async def test_a_backdated_task_counts_for_no_one(net) -> None:  # type: ignore[no-untyped-def]
    sim, nodes, miners = net
    await history(sim, nodes, miners, skip=(103,))
    for n in nodes:
        await _observe(sim, n.log, E)
    # after epoch 20's cutoff, the validator whose turn task 103 was claims it at block 1031
    cheat = nodes[103 % 2]
    cheat.add(cheat.b.opened(cheat.hk, 103, block=1031, interval=INTERVAL, miners=miners))
    for m in miners:
        cheat.add(cheat.b.verdict(cheat.hk, 103, m, True, block=1033))
    nodes[0].pull(nodes[1])
    nodes[1].pull(nodes[0])
    for n in nodes:
        await _anchor(sim, n, C.anchor_cutoff(E + 1) - 3)
    out = []
    for n in nodes:
        await _observe(sim, n.log, E + 1)
        out.append(_decide(n.log, E + 1))
    assert not any(isinstance(o, Held) for o in out), out
    assert encode_body(out[0]) == encode_body(out[1])
    d = out[0]
    assert 103 not in d.window and {101, 104, 118} <= set(d.window)
    assert [(t.origin, t.task_id, t.block) for t in d.late_tasks] == [(cheat.hk, 103, 1031)]
    assert d.late_tasks[0].anchored_at > pa.slot_deadline(1031, INTERVAL, C.anchor_grace)


async def test_the_weight_setter_decides_or_holds_under_the_anchored_rule(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sim, nodes, miners = net
    await history(sim, nodes, miners)
    short = EventLog(tmp_path / "short.db", own=nodes[0].hk)
    short.import_events(list(nodes[0].log.chain(nodes[0].hk)))
    sim.advance_to(E * LENGTH + 2)
    async with Chain(f"sim:{sim.path}") as chain:
        async def step(log: EventLog, wallet):  # type: ignore[no-untyped-def]
            return await weight_setter.step(log_=log, chain=chain, wallet=wallet, netuid=NETUID, consensus=C)
        r = await step(short, nodes[0].wallet)
        assert r.held and not r.scored and short.count(kind="epoch_held") == 1
        r = await step(short, nodes[0].wallet)
        assert r.held and short.count(kind="epoch_held") == 1  # the same hold is recorded once
        short.import_events(list(nodes[1].log.chain(nodes[1].hk)))  # the peer's bucket is back
        r = await step(short, nodes[0].wallet)
        assert r.scored and not r.held and r.decision is not None and r.decision.winner == miners[1]
        r2 = await step(nodes[1].log, nodes[1].wallet)
        assert r2.scored and r2.decision is not None and encode_body(r2.decision) == encode_body(r.decision)
    short.close()


async def test_replay_reproduces_anchored_decisions_and_refuses_unanchored_inputs(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from leoma.tools.replay import find_epoch, recorded_epochs, replay_all, replay_epoch

    sim, nodes, miners = net
    await history(sim, nodes, miners)
    sim.advance_to(E * LENGTH + 2)
    async with Chain(f"sim:{sim.path}") as chain:
        for n in nodes:
            r = await weight_setter.step(log_=n.log, chain=chain, wallet=n.wallet, netuid=NETUID, consensus=C)
            assert r.scored
        # a third party holding both mirrors replays each decision from the logs, the chain only to verify
        nodes[0].pull(nodes[1])
        nodes[1].pull(nodes[0])
        for n in nodes:
            for other in nodes:
                recorded = find_epoch(n.log, E, origin=other.hk)
                assert replay_epoch(n.log, recorded, consensus=C).reproduced
                assert await anchors.verify_observed(chain, NETUID, C, anchors.observations(n.log, origin=other.hk)[-1]) == []
            results = replay_all(n.log, list(recorded_epochs(n.log, detail=False)), lambda _r: C)
            assert len(results) == 2 and all(x.reproduced for x in results)
        # an observation the chain does not back is reported
        forged = msgspec.structs.replace(anchors.observations(nodes[0].log)[-1], anchors=())
        assert await anchors.verify_observed(chain, NETUID, C, forged)
    # a log that lacks the anchored events cannot reproduce the decision
    short = EventLog(tmp_path / "short.db")
    short.import_events(list(nodes[0].log.chain(nodes[0].hk)))
    res = replay_epoch(short, find_epoch(short, E, origin=nodes[0].hk), consensus=C)
    assert not res.reproduced and res.differences[0].field == "anchors"
    short.close()


def test_replay_and_explain_commands_show_the_anchors(net, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import json

    from click.testing import CliRunner

    from leoma.log.consensus import record_consensus
    from leoma_cmd.main import cli

    sim, nodes, miners = net
    short = EventLog(tmp_path / "short.db", own=nodes[0].hk)

    async def run() -> None:
        await history(sim, nodes, miners)
        short.import_events(list(nodes[0].log.chain(nodes[0].hk)))
        sim.advance_to(E * LENGTH + 2)
        async with Chain(f"sim:{sim.path}") as chain:
            held = await weight_setter.step(log_=short, chain=chain, wallet=nodes[0].wallet, netuid=NETUID,
                                            consensus=C)
            assert held.held
            r = await weight_setter.step(log_=nodes[1].log, chain=chain, wallet=nodes[1].wallet, netuid=NETUID,
                                         consensus=C)
            assert r.scored

    asyncio.run(run())
    log = nodes[1].log
    record_consensus(log, C)
    log.import_events(list(short.chain(short.own or "")))  # the held validator's mirror, with its epoch_held
    short.close()
    runner = CliRunner()
    ok = runner.invoke(cli, ["replay", str(E), "--db", log.path, "--network", f"sim:{sim.path}"])
    assert ok.exit_code == 0 and "reproduced" in ok.output, ok.output
    why = runner.invoke(cli, ["explain", miners[1], "--db", log.path, "--epoch", str(E), "--json"])
    assert why.exit_code == 0, why.output
    rows = {a["validator"]: a for a in json.loads(why.output)["anchors"]}
    assert rows[nodes[1].hk]["status"] == "decided" and rows[nodes[1].hk]["anchored_size"] > 0
    assert rows[nodes[0].hk]["status"].startswith("held: behind")
    text = runner.invoke(cli, ["explain", miners[1], "--db", log.path, "--epoch", str(E)])
    assert "decided on anchored events" in text.output and "held: behind" in text.output


async def test_earlier_anchors_a_view_recorded_wrongly_make_the_others_hold(net) -> None:  # type: ignore[no-untyped-def]
    from leoma.log.events import AnchorEntry, AnchorsObserved

    sim, nodes, miners = net
    view, other = nodes  # the first anchored validator in code-point order is the view
    forged = AnchorsObserved(epoch=16, cutoff_block=C.anchor_cutoff(16), validators=tuple(n.hk for n in nodes),
                             anchors=(AnchorEntry(origin=view.hk), AnchorEntry(origin=other.hk, size=5, head="a" * 64,
                                                                               block=900)))
    view.log.append(forged, key="anchors/16/observed", block=forged.cutoff_block)
    await history(sim, nodes, miners)
    for n in nodes:
        await _observe(sim, n.log, E)
    assert not isinstance(_decide(view.log, E), Held)
    held = _decide(other.log, E)
    assert isinstance(held, Held) and held.peer == view.hk and held.reason == pa.DIFFERS
