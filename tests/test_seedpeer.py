"""Reading peers that publish only the first implementation's (seed) bucket layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leoma.adapters.directory import DirectoryStore
from leoma.adapters.signing import keypair_from_uri
from leoma.log import events as ev
from leoma.log.eventlog import EventLog
from leoma.mirror import seedformat, seedpeer
from leoma.mirror.inbound import MirrorIn, Peer
from leoma.mirror.out import MirrorOut

SEED = keypair_from_uri("//Dave")      # runs the first implementation: a bucket, no log
OURS = keypair_from_uri("//Alice")     # this validator
OTHER = keypair_from_uri("//Eve")      # someone else
D, A = SEED.ss58_address, OURS.ss58_address
M1, M2 = keypair_from_uri("//M1").ss58_address, keypair_from_uri("//M2").ss58_address


def entries(*pairs: tuple[str, bool]) -> list[dict]:
    return [{"hotkey": m, "passed": p, "status": "passed" if p else "failed", "confidence": 80,
             "reasoning": "r | overall_score=80"} for m, p in pairs]


async def put_file(store: DirectoryStore, task: int, data: bytes, hotkey: str = D) -> str:
    key = seedformat.verdict_key(task, hotkey)
    await store.put(key, data, content_type="application/json")
    return key


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    with EventLog(tmp_path / "ours.db", own=A) as lg:
        yield lg


@pytest.fixture
def bucket(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "dave-bucket")


def own_bodies(log: EventLog, kind: str) -> list:
    return [s.event.payload() for s in log.events(origin=A, kinds=[kind])]


async def test_discovery_keeps_the_seeds_key_rule_and_its_cap(bucket: DirectoryStore) -> None:
    for task in (3, 12, 7):
        await put_file(bucket, task, seedformat.sign_verdict_file(entries((M1, True)), SEED))
    await put_file(bucket, 9, seedformat.sign_verdict_file(entries((M1, True)), OTHER), hotkey=OTHER.ss58_address)
    await bucket.put("x1/evaluation_results/" + D + ".json", b"{}")          # not a task id
    await bucket.put("5/evaluation_results/nested/" + D + ".json", b"{}")    # not the seed's key
    await bucket.put("4/metadata.json", b"{}")
    found, capped = await seedpeer.discover_tasks(bucket, D)
    assert [t for t, _ in found] == [12, 7, 3] and not capped
    assert [t for t, _ in (await seedpeer.discover_tasks(bucket, D, max_tasks=2))[0]] == [12, 7]
    _, capped = await seedpeer.discover_tasks(bucket, D, max_objects=3)
    assert capped


async def test_accepted_file_becomes_own_events_with_provenance_anyone_can_reverify(
        log: EventLog, bucket: DirectoryStore) -> None:
    data = seedformat.sign_verdict_file(entries((M1, True), (M2, False)), SEED)
    key = await put_file(bucket, 5, data)
    assert await seedpeer.sync_seed_peer(log, D, bucket, block=640) == 3
    [task] = own_bodies(log, "seed_task_observed")
    verdicts = own_bodies(log, "seed_verdict_observed")
    assert (task.peer, task.task_id, task.object_key, task.entries) == (D, 5, key, 2)
    assert task.signature == json.loads(data)["signature"]
    assert [(v.miner, v.passed, v.index) for v in verdicts] == [(M1, True, 0), (M2, False, 1)]
    assert seedpeer.verify_observation(task, verdicts)
    # The recorded texts are exactly what was signed; an edited entry no longer verifies.
    forged = [verdicts[0], ev.SeedVerdictObserved(**{**{f: getattr(verdicts[1], f) for f in verdicts[1].__struct_fields__},
                                                     "entry": verdicts[1].entry.replace("false", "true")})]
    assert not seedpeer.verify_observation(task, forged)
    assert not seedpeer.verify_observation(task, verdicts[:1])
    # Idle: an unchanged bucket appends nothing and downloads nothing.
    head = log.head(A).origin_seq
    report = _Report()
    assert await seedpeer.sync_seed_peer(log, D, bucket, report, block=700) == 0
    assert log.head(A).origin_seq == head and report.bytes == 0 and report.layout == "seed"


async def test_a_rewritten_file_is_observed_again(log: EventLog, bucket: DirectoryStore) -> None:
    await put_file(bucket, 5, seedformat.sign_verdict_file(entries((M1, False)), SEED))
    await seedpeer.sync_seed_peer(log, D, bucket, block=1)
    await put_file(bucket, 5, seedformat.sign_verdict_file(entries((M1, True)), SEED))
    assert await seedpeer.sync_seed_peer(log, D, bucket, block=2) == 2
    assert len(own_bodies(log, "seed_task_observed")) == 2


class _Report:
    def __init__(self) -> None:
        self.objects = self.bytes = self.imported = 0
        self.layout = self.rejected = self.rejected_key = ""


def _tampered() -> bytes:
    wrapper = json.loads(seedformat.sign_verdict_file(entries((M1, False)), SEED))
    wrapper["data"][0]["passed"] = True
    return json.dumps(wrapper).encode()


FORGED = {
    "unsigned": (lambda: json.dumps({"signature": "", "data": entries((M1, True))}).encode(), "bad signature: .*unsigned"),
    "no signature": (lambda: json.dumps({"data": entries((M1, True))}).encode(), "bad signature: .*unsigned"),
    "garbage signature": (lambda: json.dumps({"signature": "0xnothex", "data": entries((M1, True))}).encode(),
                          "bad signature: .*not hex"),
    "signed by someone else": (lambda: seedformat.sign_verdict_file(entries((M1, True)), OTHER),
                               "bad signature: .*does not match"),
    "tampered data": (_tampered, "bad signature: .*does not match"),
    "not json": (lambda: b"{nope", "malformed object: .*not JSON"),
    "entries not objects": (lambda: json.dumps({"signature": "0x00", "data": [1]}).encode(), "malformed object"),
    "oversized": (lambda: b" " * (seedpeer.MAX_FILE_BYTES + 1), "oversized object"),
    "oversized entry": (lambda: seedformat.sign_verdict_file(
        [{"hotkey": M1, "passed": True, "reasoning": "x" * seedpeer.MAX_ENTRY_CHARS}], SEED), "oversized object: verdict #0"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
async def test_forged_seed_files_are_rejected_with_a_reason_and_the_rest_are_read(
        log: EventLog, bucket: DirectoryStore, case: str) -> None:
    make, reason = FORGED[case]
    bad_key = await put_file(bucket, 8, make())
    await put_file(bucket, 9, seedformat.sign_verdict_file(entries((M2, True)), SEED))
    report = _Report()
    await seedpeer.sync_seed_peer(log, D, bucket, report, block=900)
    [rejected] = own_bodies(log, "peer_segment_rejected")
    assert (rejected.peer, rejected.object_key) == (D, bad_key)
    import re

    assert re.search(reason, rejected.reason), rejected.reason
    assert report.rejected.startswith(bad_key)
    assert [t.task_id for t in own_bodies(log, "seed_task_observed")] == [9]
    # Refused once: the same bad file is not fetched, nor recorded, again.
    again = _Report()
    await seedpeer.sync_seed_peer(log, D, bucket, again, block=901)
    assert len(own_bodies(log, "peer_segment_rejected")) == 1 and not again.rejected


async def test_mirror_in_reads_a_peer_without_a_log_as_seed_and_one_with_a_log_as_log(
        tmp_path: Path, log: EventLog, bucket: DirectoryStore) -> None:
    await put_file(bucket, 4, seedformat.sign_verdict_file(entries((M1, True)), SEED))
    eve_bucket = DirectoryStore(tmp_path / "eve-bucket")
    with EventLog(tmp_path / "eve.db", own=OTHER.ss58_address) as eve:
        eve.append(ev.ChainHeadObserved(block_hash="11" * 32), key="head/1", block=1)
        await MirrorOut(eve, eve_bucket, OTHER, "d" * 64).push()
    reports = {r.peer: r for r in await MirrorIn(log, [Peer(D, bucket), Peer(OTHER.ss58_address, eve_bucket)],
                                                 "d" * 64).sync(block=50)}
    assert reports[D].layout == "seed" and reports[D].imported == 2 and reports[D].checkpoint_size is None
    assert reports[OTHER.ss58_address].layout == "log" and reports[OTHER.ss58_address].imported == 1
    assert await seedpeer.detect_layout(bucket, D) == "seed"
    assert await seedpeer.detect_layout(eve_bucket, OTHER.ss58_address) == "log"
    assert await seedpeer.detect_layout(DirectoryStore(tmp_path / "nobody"), D) == "none"


def test_mirror_status_says_which_layout_each_peer_has(tmp_path: Path) -> None:
    import asyncio

    import click
    from click.testing import CliRunner

    from leoma_cmd import mirror_cmds

    bucket = DirectoryStore(tmp_path / "dave-bucket")
    asyncio.run(put_file(bucket, 4, seedformat.sign_verdict_file(entries((M1, True)), SEED)))
    EventLog(tmp_path / "ours.db", own=A).close()

    @click.group()
    def cli() -> None:
        """Test group."""

    mirror_cmds.register(cli)
    peers = json.dumps([{"hotkey": D, "url": (tmp_path / "dave-bucket").as_uri()},
                        {"hotkey": OTHER.ss58_address, "url": (tmp_path / "empty").as_uri()}])
    out = CliRunner().invoke(cli, ["mirror", "status", "--db", str(tmp_path / "ours.db"), "--hotkey", A,
                                   "--peers", peers, "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["hotkey"]: r for r in json.loads(out.stdout)}
    assert {h: r["layout"] for h, r in rows.items()} == {A: "log", D: "seed", OTHER.ss58_address: "none"}
    assert (rows[D]["published"], rows[D]["local"], rows[D]["lag_events"]) == (1, 0, 1)  # one file, not read yet
    with EventLog(tmp_path / "ours.db", own=A) as lg:
        asyncio.run(seedpeer.sync_seed_peer(lg, D, bucket))
    out = CliRunner().invoke(cli, ["mirror", "status", "--db", str(tmp_path / "ours.db"), "--hotkey", A,
                                   "--peers", peers])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if D in ln)
    assert " seed " in line and "layout" in out.output


def test_entries_are_read_as_the_seed_reads_them() -> None:
    """A falsy hotkey is skipped, a truthy non-string one counted (as its JSON text), `passed` is `bool(passed)`."""
    data = [{"hotkey": M1, "passed": "yes"}, {"hotkey": "", "passed": True}, {"passed": True},
            {"hotkey": 123, "passed": 0}, {"hotkey": M1, "passed": False}]
    raw = seedformat.sign_verdict_file(data, SEED)
    f = seedpeer.read_seed_file(raw, D, 3, "3/evaluation_results/x.json")
    assert f.verdicts == ((M1, True), ("", True), ("", True), ("123", False), (M1, False))
    assert seedpeer.signed_bytes(f.entries) == json.dumps(data, sort_keys=True).encode()


async def test_a_peer_rewriting_a_file_over_and_over_is_refused_after_a_few_versions(
        log: EventLog, bucket: DirectoryStore) -> None:
    for i in range(seedpeer.MAX_VERSIONS + 2):
        await put_file(bucket, 5, seedformat.sign_verdict_file(entries((M1, i % 2 == 0), (M2, True))[: 1 + i % 2], SEED)
                       if i < 2 else seedformat.sign_verdict_file(entries((M1, True)) * (i + 1), SEED))
        await seedpeer.sync_seed_peer(log, D, bucket, block=i)
    assert len(own_bodies(log, "seed_task_observed")) == seedpeer.MAX_VERSIONS
    [rejected] = own_bodies(log, "peer_segment_rejected")[:1]
    assert rejected.reason.startswith("rewritten object") and seedpeer.observed_tasks(log, D) == 1
