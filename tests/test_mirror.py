"""The mirror: own events out as immutable segments + a signed checkpoint, peers' events in.

Every refusal case checks three things: a clear reason is recorded once as an event, the
peer's position does not advance past the bad object, and the other peers still sync. Importing
itself appends nothing (the mirror is quiet), and what a bucket stores stays close to the log
compressed once at any push interval (the mirror is bounded).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard

from leoma.log import events as ev
from leoma.log.consensus import DEFAULT
from leoma.errors import MirrorError, ObjectNotFound, StorageError
from leoma.log.eventlog import Draft, EventLog
from leoma.mirror.segments import (
    MAX_EVENTS_PER_OBJECT,
    checkpoint_key,
    decode_segment,
    encode_segment,
    fetch_checkpoint,
    named_objects,
    segment_key,
    segment_ranges,
)
from leoma.mirror.inbound import MirrorIn, Peer, verify_published
from leoma.mirror.out import MirrorOut, uploaded_position
from leoma.adapters.signing import CHECKPOINT_DOMAIN, Checkpoint, SignedCheckpoint, keypair_from_uri, sign
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.storage import ObjectInfo, ObjectStore
from leoma.adapters.s3 import S3Store
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, moto_endpoint, s3_bucket  # noqa: F401

ALICE = keypair_from_uri("//Alice")
BOB = keypair_from_uri("//Bob")
CHARLIE = keypair_from_uri("//Charlie")
EVE = keypair_from_uri("//Eve")
A, B, C = ALICE.ss58_address, BOB.ss58_address, CHARLIE.ss58_address
DIGEST = DEFAULT.digest


# ---- helpers -------------------------------------------------------------------------------


def fill(log: EventLog, n: int, tag: str = "x", block: int = 1000) -> None:
    """Append `n` cheap own events."""
    start = log.head(log.own or "").origin_seq
    log.append_many([Draft(f"head/{tag}/{start + i}", block + start + i,
                           ev.ChainHeadObserved(block_hash=f"0x{tag}{start + i:08d}")) for i in range(n)])


class Counting:
    """A store wrapper that records every call (the proof that reads need no LIST)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []
        self.bytes_read = 0

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.calls.append(("get", key))
        data = await self.inner.get(key, max_bytes=max_bytes)
        self.bytes_read += len(data)
        return data

    async def put(self, key: str, data: bytes, **kw: Any) -> None:
        self.calls.append(("put", key))
        await self.inner.put(key, data, **kw)

    async def head(self, key: str) -> ObjectInfo | None:
        self.calls.append(("head", key))
        return await self.inner.head(key)

    def list(self, prefix: str = "", **kw: Any) -> AsyncIterator[ObjectInfo]:
        self.calls.append(("list", prefix))
        return self.inner.list(prefix, **kw)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()


class Flaky(DirectoryStore):
    """A directory bucket that fails the next `failures` calls, as an outage would."""

    failures = 0

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StorageError("injected outage: the bucket is unreachable")

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self._maybe_fail()
        return await super().get(key, max_bytes=max_bytes)

    async def put(self, key: str, data: bytes, **kw: Any) -> None:
        self._maybe_fail()
        await super().put(key, data, **kw)


def make_s3(endpoint: str, bucket: str, **options: Any) -> S3Store:
    settings: dict[str, Any] = {"base_delay": 0.001, "max_delay": 0.01}
    settings.update(options)
    return S3Store(bucket, endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **settings)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[dict[str, EventLog]]:
    opened = {name: EventLog(tmp_path / f"{name}.db", own=key.ss58_address)
              for name, key in (("alice", ALICE), ("bob", BOB), ("charlie", CHARLIE))}
    yield opened
    for lg in opened.values():
        lg.close()


@pytest.fixture(params=["directory", "s3"])
async def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """Alice's bucket, on each backend."""
    if request.param == "directory":
        yield DirectoryStore(tmp_path / "alice-bucket")
        return
    s3 = make_s3(request.getfixturevalue("moto_endpoint"), request.getfixturevalue("s3_bucket"))
    await s3.ensure_bucket()
    async with s3:
        yield s3


def rejections(log: EventLog) -> list[ev.PeerSegmentRejected]:
    return [s.event.payload() for s in log.events(kinds=["peer_segment_rejected"])]  # type: ignore[misc]


async def published(tmp_path: Path, logs: dict[str, EventLog], n: int = 12, size: int = 5) -> DirectoryStore:
    store = DirectoryStore(tmp_path / "alice-bucket")
    fill(logs["alice"], n)
    await MirrorOut(logs["alice"], store, ALICE, DIGEST, size).push()
    return store


async def charlie_also(tmp_path: Path, logs: dict[str, EventLog]) -> Peer:
    """A well-behaved second peer, to show one bad peer never stops the others."""
    store = DirectoryStore(tmp_path / "charlie-bucket")
    fill(logs["charlie"], 3, tag="c")
    await MirrorOut(logs["charlie"], store, CHARLIE, DIGEST, 5).push()
    return Peer(C, store)


# ---- naming --------------------------------------------------------------------------------


@pytest.mark.parametrize(("after", "size", "expected"), [
    (0, 0, []),
    (0, 12, [(1, 5), (6, 10), (11, 12)]),
    (5, 12, [(6, 10), (11, 12)]),
    (7, 12, [(6, 10), (11, 12)]),
    (10, 12, [(11, 12)]),
    (12, 12, []),
    (0, 10, [(1, 5), (6, 10)]),
])
def test_segment_ranges_cover_only_what_is_new(after: int, size: int, expected: list[tuple[int, int]]) -> None:
    assert segment_ranges(after, size, 5) == expected


def test_segment_key_is_the_range() -> None:
    assert segment_key(A, 1001, 1137) == f"log/{A}/seg/000001001-000001137.jsonl.zst"
    assert checkpoint_key(A) == f"log/{A}/checkpoint.json"


# ---- round trip ----------------------------------------------------------------------------


async def test_push_pull_round_trip_reads_only_new_objects(bucket: ObjectStore, logs: dict[str, EventLog]) -> None:
    alice, bob = logs["alice"], logs["bob"]
    fill(alice, 12)
    out = MirrorOut(alice, bucket, ALICE, DIGEST, 5)
    report = await out.push()
    assert (report.size, report.segments_written, report.previous_size) == (12, 3, 0)
    assert (await out.push()).segments_written == 0  # nothing new, nothing written

    counted = Counting(bucket)
    mirror_in = MirrorIn(bob, [Peer(A, counted)], DIGEST)
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.head, sync.rejected, sync.error) == (12, 12, "", "")
    assert list(bob.chain(A)) == list(alice.chain(A))
    assert [k for op, k in counted.calls if op != "get"] == []  # no LIST, no HEAD of our own
    assert bob.count(origin=B) == 0  # importing appended nothing of bob's own

    fill(alice, 4)
    await out.push()  # seals 11-15, starts 16-16, and lists 13-16 as a shortcut
    counted.calls.clear()
    [sync] = await mirror_in.sync()
    assert sync.imported == 4
    # Only the new events are read, in one object: not the whole new segment 11-15.
    assert counted.calls == [("get", checkpoint_key(A)), ("get", segment_key(A, 13, 16))]
    later = MirrorIn(logs["charlie"], [Peer(A, Counting(bucket))], DIGEST)
    [sync] = await later.sync()  # a reader from scratch takes the full segments and the tail
    assert sync.imported == 16 and later.peers[0].store.calls == [  # type: ignore[attr-defined]
        ("get", checkpoint_key(A))] + [("get", segment_key(A, f, f + 4)) for f in (1, 6, 11)] + [
        ("get", segment_key(A, 16, 16))]
    assert bob.head(A) == alice.head(A)
    assert bob.verify().ok


async def test_verify_published_on_both_backends(bucket: ObjectStore, logs: dict[str, EventLog]) -> None:
    fill(logs["alice"], 7)
    await MirrorOut(logs["alice"], bucket, ALICE, DIGEST, 3).push()
    report = await verify_published("unused://", A, store=bucket)
    assert report["ok"], report
    assert (report["events"], report["segments"], report["consensus_known"]) == (7, 3, True)


async def test_verify_published_by_url_and_finds_an_edit(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    store = await published(tmp_path, logs, 12, 5)
    url = (tmp_path / "alice-bucket").as_uri()
    assert (await verify_published(url, A))["ok"]
    await _edit_segment(store, A, 6, 10)
    report = await verify_published(url, A)
    assert not report["ok"] and "broken chain" in report["message"]
    assert not (await verify_published(url, "../../etc"))["ok"]


async def test_two_validators_converge(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice, bob = logs["alice"], logs["bob"]
    stores = {A: DirectoryStore(tmp_path / "a"), B: DirectoryStore(tmp_path / "b")}
    outs = {A: MirrorOut(alice, stores[A], ALICE, DIGEST, 4), B: MirrorOut(bob, stores[B], BOB, DIGEST, 4)}
    ins = {A: MirrorIn(alice, [Peer(B, stores[B]), Peer(A, stores[A])], DIGEST),
           B: MirrorIn(bob, [Peer(A, stores[A]), Peer(B, stores[B])], DIGEST)}
    for round_ in range(3):
        fill(alice, 5 + round_, tag="a")
        fill(bob, 3 + round_, tag="b")
        for h in (A, B):
            await outs[h].push()
        for h in (A, B):
            await ins[h].sync()

    def observed(lg: EventLog) -> set[tuple[str, int, str]]:
        return {(s.event.origin, s.event.origin_seq, s.event.hash) for s in lg.events()}

    assert observed(alice) == observed(bob)  # every event, not "every event but the chatter"
    assert alice.count(origin=A) == 5 + 6 + 7 and bob.count(origin=B) == 3 + 4 + 5
    for origin in (A, B):
        ours, theirs = list(alice.chain(origin)), list(bob.chain(origin))
        shorter = min(len(ours), len(theirs))
        assert ours[:shorter] == theirs[:shorter]
    assert not rejections(alice) and not rejections(bob)


# ---- faults of the bucket ------------------------------------------------------------------


async def test_s3_500_429_timeout_then_recovers_without_loss_or_duplicates(
    moto_endpoint: str, s3_bucket: str, logs: dict[str, EventLog]  # noqa: F811
) -> None:
    alice, bob = logs["alice"], logs["bob"]
    async with make_s3(moto_endpoint, s3_bucket) as direct:
        await direct.ensure_bucket()
    fill(alice, 9)
    with FaultProxy(moto_endpoint, hold=1.0) as proxy:
        timeouts = {"read_timeout": 0.3, "connect_timeout": 0.3}
        async with make_s3(proxy.endpoint, s3_bucket, attempts=2, **timeouts) as hasty, \
                make_s3(proxy.endpoint, s3_bucket, attempts=6, **timeouts) as patient:
            # An outage longer than the store's retries: the push fails, nothing is recorded.
            proxy.script = ["500"] * 4
            with pytest.raises(StorageError):
                await MirrorOut(alice, hasty, ALICE, DIGEST, 4).push()
            proxy.script = []
            out = MirrorOut(alice, patient, ALICE, DIGEST, 4)
            assert out.uploaded() is None
            proxy.script = ["429", "timeout", "500"]  # within the retries: the push goes through
            assert (await out.push()).size == 9

            proxy.script = ["500", "429"] * 3
            [sync] = await MirrorIn(bob, [Peer(A, hasty)], DIGEST).sync()
            assert sync.error and sync.imported == 0 and not rejections(bob)
            proxy.script = []
            mirror_in = MirrorIn(bob, [Peer(A, patient)], DIGEST)
            proxy.script = ["timeout", "500", "429"]
            [sync] = await mirror_in.sync()
            assert (sync.imported, sync.error) == (9, "")
            fill(alice, 2)
            proxy.script = ["500", "timeout"]
            await out.push()
            proxy.script = ["429", "500"]
            await mirror_in.sync()
    assert list(bob.chain(A)) == list(alice.chain(A))
    assert bob.count(origin=A) == 11 and bob.verify().ok and not rejections(bob)
    async with make_s3(moto_endpoint, s3_bucket) as direct:
        assert (await verify_published("unused://", A, store=direct))["ok"]


async def test_a_bucket_down_for_an_epoch_then_back_loses_nothing_and_records_nothing(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    alice, bob = logs["alice"], logs["bob"]
    store = Flaky(tmp_path / "flaky")
    out = MirrorOut(alice, store, ALICE, DIGEST, 5)
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    fill(alice, 3)
    await out.push()
    await mirror_in.sync()
    store.failures = 10**6  # down for a whole epoch of pushes and pulls
    for _ in range(20):
        fill(alice, 2)  # appending goes on during the outage
        with pytest.raises(StorageError):
            await out.push()
        [sync] = await mirror_in.sync()
        assert sync.error and not sync.rejected
    store.failures = 0
    report = await out.push()
    assert report.size == 43 and uploaded_position(alice, A) == 43
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.error, sync.rejected) == (40, "", "")
    assert list(bob.chain(A)) == list(alice.chain(A))
    assert not rejections(bob) and bob.count(origin=B) == 0
    assert (await verify_published("unused://", A, store=store))["ok"]


async def test_crash_between_segments_and_checkpoint_redoes_the_work(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice = logs["alice"]
    store = DirectoryStore(tmp_path / "bucket")

    class CrashBeforeCheckpoint(Counting):
        async def put(self, key: str, data: bytes, **kw: Any) -> None:
            if key.endswith("checkpoint.json"):
                raise StorageError("killed before the checkpoint was written")
            await super().put(key, data, **kw)

    fill(alice, 11)
    with pytest.raises(StorageError):
        await MirrorOut(alice, CrashBeforeCheckpoint(store), ALICE, DIGEST, 5).push()
    assert await store.head(segment_key(A, 11, 11)) is not None
    assert await store.head(checkpoint_key(A)) is None
    restarted = MirrorOut(alice, store, ALICE, DIGEST, 5)
    assert uploaded_position(alice, A) == 0  # nothing was recorded as published: the work is redone
    report = await restarted.push()
    assert (report.size, report.segments_written, report.segments_already_there) == (11, 0, 3)
    assert (await verify_published("unused://", A, store=store))["ok"]


async def test_kill_9_in_a_subprocess_then_restart(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    """A real kill -9 while pushing (the child stops itself right after the segments)."""
    import signal
    import subprocess
    import sys

    fill(logs["alice"], 11)
    logs["alice"].close()
    db, bucket = tmp_path / "alice.db", tmp_path / "bucket"
    child = (
        "import asyncio, os, signal, sys\n"
        "from leoma.log.eventlog import EventLog\nfrom leoma.mirror.out import MirrorOut\nfrom leoma.adapters.directory import DirectoryStore\n"
        "from leoma.adapters.signing import keypair_from_uri\nfrom leoma.log.consensus import DEFAULT\n"
        "class Die(DirectoryStore):\n"
        "    async def put(self, key, data, **kw):\n"
        "        if key.endswith('checkpoint.json'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "        await super().put(key, data, **kw)\n"
        "k = keypair_from_uri('//Alice')\n"
        f"log = EventLog({str(db)!r}, own=k.ss58_address)\n"
        f"asyncio.run(MirrorOut(log, Die({str(bucket)!r}), k, DEFAULT.digest, 5).push())\n"
    )
    proc = subprocess.run([sys.executable, "-c", child], cwd=Path(__file__).parent.parent, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    store = DirectoryStore(bucket)
    assert await store.head(checkpoint_key(A)) is None
    with EventLog(db, own=A) as alice:
        report = await MirrorOut(alice, store, ALICE, DIGEST, 5).push()
        assert (report.size, report.segments_already_there) == (11, 3)
    assert (await verify_published("unused://", A, store=store))["ok"]
    logs["alice"] = EventLog(db, own=A)  # so the fixture can close it


async def test_push_refuses_a_signed_range_holding_other_events_and_replaces_an_unsigned_one(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    alice = logs["alice"]
    store = DirectoryStore(tmp_path / "bucket")
    fill(logs["bob"], 5)
    fake = list(logs["bob"].chain(B))  # Bob's events, planted under Alice's keys
    # Past anything signed: left by a crash before a checkpoint, so it is replaced.
    await store.put(segment_key(A, 1, 5), encode_segment(fake), if_absent=True)
    fill(alice, 5)
    report = await MirrorOut(alice, store, ALICE, DIGEST, 5).push()
    assert report.objects_replaced == 1 and (await verify_published("unused://", A, store=store))["ok"]
    # Inside what the checkpoint signed (the key four small pushes merge into): a rewrite.
    charlie, other = logs["charlie"], DirectoryStore(tmp_path / "charlie-bucket")
    out = MirrorOut(charlie, other, CHARLIE, DIGEST, 20)
    for _ in range(4):
        fill(charlie, 1)
        await out.push()
    await other.put(segment_key(C, 1, 4), encode_segment(fake[:4]), if_absent=True)
    fill(charlie, 1)
    with pytest.raises(MirrorError, match="rewritten segment"):
        await out.push()


# ---- bad peers -----------------------------------------------------------------------------


async def _edit_segment(store: DirectoryStore, origin: str, first: int, last: int) -> None:
    key = segment_key(origin, first, last)
    raw = zstandard.ZstdDecompressor().decompress(await store.get(key))
    edited = raw.replace(b"0xx", b"0xy", 1)
    assert edited != raw
    await store.delete(key)
    await store.put(key, zstandard.ZstdCompressor().compress(edited))


async def _truncate_segment(store: DirectoryStore, origin: str, first: int, last: int) -> None:
    key = segment_key(origin, first, last)
    data = await store.get(key)
    await store.delete(key)
    await store.put(key, data[: len(data) // 2])


async def _forged_checkpoint(store: DirectoryStore, origin: str, first: int, last: int) -> None:
    cp = Checkpoint(origin=A, size=12, head="ab" * 32, consensus_digest=DIGEST, segment_size=5)
    enc = msgspec.json.Encoder(order="deterministic")
    await store.put(checkpoint_key(A), enc.encode(SignedCheckpoint(checkpoint=cp, signature=sign(EVE, CHECKPOINT_DOMAIN, enc.encode(cp)))))


async def _huge_segment(store: DirectoryStore, origin: str, first: int, last: int) -> None:
    path = store.root / segment_key(origin, first, last)
    path.unlink()
    with open(path, "wb") as fh:  # sparse: 2 GiB on paper, nothing on disk
        fh.truncate(2 * 1024**3)


async def _missing_segment(store: DirectoryStore, origin: str, first: int, last: int) -> None:
    await store.delete(segment_key(origin, first, last))


@pytest.mark.parametrize(("tamper", "reason", "key_end"), [
    (_truncate_segment, "malformed object", "000000006-000000010.jsonl.zst"),
    (_edit_segment, "broken chain", "000000006-000000010.jsonl.zst"),
    (_forged_checkpoint, "bad signature", "checkpoint.json"),
    (_huge_segment, "oversized object", "000000006-000000010.jsonl.zst"),
    (_missing_segment, "missing segment", "000000006-000000010.jsonl.zst"),
])
async def test_bad_objects_are_rejected_with_a_reason_and_the_rest_continues(
    tmp_path: Path, logs: dict[str, EventLog], tamper: Any, reason: str, key_end: str
) -> None:
    bob = logs["bob"]
    store = await published(tmp_path, logs, 12, 5)
    await tamper(store, A, 6, 10)
    charlie = await charlie_also(tmp_path, logs)
    mirror_in = MirrorIn(bob, [Peer(A, store), charlie], DIGEST, max_segment_bytes=1024 * 1024)
    alice_sync, charlie_sync = await mirror_in.sync()
    assert alice_sync.rejected.startswith(reason), alice_sync.rejected
    assert charlie_sync.imported == 3 and not charlie_sync.rejected
    expected_head = 0 if key_end == "checkpoint.json" else 5
    assert bob.head(A).origin_seq == expected_head  # never past the bad object
    [rejected] = rejections(bob)
    assert rejected.peer == A and rejected.object_key.endswith(key_end) and rejected.reason.startswith(reason)
    assert rejected.at_seq == expected_head + 1
    await mirror_in.sync()  # retried later: the same refusal is not recorded twice
    assert len(rejections(bob)) == 1
    assert bob.head(A).origin_seq == expected_head


async def test_unknown_consensus_digest_is_refused(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    fill(logs["alice"], 3)
    await MirrorOut(logs["alice"], store, ALICE, "f" * 64, 5).push()
    mirror_in = MirrorIn(logs["bob"], [Peer(A, store)], DIGEST)
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("unknown consensus digest") and logs["bob"].head(A).origin_seq == 0
    # The peer comes round, then goes back: the same refusal of the same object is recorded once.
    fill(logs["alice"], 1)
    await MirrorOut(logs["alice"], store, ALICE, DIGEST, 5).push()
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.rejected) == (4, "")
    fill(logs["alice"], 1)
    await MirrorOut(logs["alice"], store, ALICE, "f" * 64, 5).push()
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("unknown consensus digest") and not sync.error
    assert logs["bob"].counts_by_kind() == {"chain_head_observed": 4, "peer_segment_rejected": 1}


@pytest.mark.parametrize(("segment_size", "first_n", "then_n"), [(5, 5, 8), (10, 3, 5)])
async def test_a_peer_that_rewrites_published_segments_is_refused(
    tmp_path: Path, logs: dict[str, EventLog], segment_size: int, first_n: int, then_n: int
) -> None:
    bob = logs["bob"]
    store = DirectoryStore(tmp_path / "bucket")
    fill(logs["alice"], first_n, tag="x")
    await MirrorOut(logs["alice"], store, ALICE, DIGEST, segment_size).push()
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    await mirror_in.sync()
    assert bob.head(A).origin_seq == first_n
    # Alice wipes her bucket and publishes another history under the same key.
    shutil.rmtree(tmp_path / "bucket")
    with EventLog(tmp_path / "alice2.db", own=A) as other:
        fill(other, then_n, tag="y")
        await MirrorOut(other, store, ALICE, DIGEST, segment_size).push()
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("rewritten segment"), sync.rejected
    assert bob.head(A).origin_seq == first_n
    assert [r.reason.split(":")[0] for r in rejections(bob)] == ["rewritten segment"]


async def test_keys_with_path_tricks_are_refused(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "checkpoint.json").write_text("{}")
    store = DirectoryStore(tmp_path / "bucket")
    charlie = await charlie_also(tmp_path, logs)
    syncs = await MirrorIn(logs["bob"], [Peer("../../secret", store), charlie], DIGEST).sync()
    assert syncs[0].rejected.startswith("invalid hotkey") and syncs[1].imported == 3
    [rejected] = rejections(logs["bob"])
    assert rejected.peer == "../../secret" and rejected.at_seq == 0


async def test_segment_decoding_refuses_foreign_origins_and_bombs(logs: dict[str, EventLog]) -> None:
    fill(logs["bob"], 2)
    with pytest.raises(MirrorError, match="malformed object.*origin"):
        decode_segment(encode_segment(list(logs["bob"].chain(B))), origin=A, first=1, last=2)
    bomb = zstandard.ZstdCompressor().compress(b"\n" * (200 * 1024 * 1024))
    with pytest.raises(MirrorError, match="oversized object"):
        decode_segment(bomb, origin=A, first=1, last=1)
    with pytest.raises(MirrorError, match="malformed object"):
        decode_segment(b"not zstd at all", origin=A, first=1, last=1)


# ---- entitlement ---------------------------------------------------------------------------


def task(task_id: int, sampler: str) -> ev.TaskOpened:
    return ev.TaskOpened(task_id=task_id, interval=100, sampler=sampler, block_hash="0x00", source_key="s.mp4",
                         clip_start_ms=0, clip_ms=5000, prompt="p", prompt_model="m", prompt_version="describe/v1",
                         miners=("m1",))


def verdict(task_id: int) -> ev.VerdictRecorded:
    return ev.VerdictRecorded(task_id=task_id, miner="m1", passed=True, overall=80, judge_model="j",
                              prompt_version="evaluate/v1")


async def test_tasks_and_verdicts_a_peer_was_not_entitled_to_are_refused(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice, bob = logs["alice"], logs["bob"]
    validators = tuple(sorted((A, B)))
    mine = validators.index(A)  # task t belongs to validators[t % 2] at the start of its rotation
    store = DirectoryStore(tmp_path / "bucket")
    out = MirrorOut(alice, store, ALICE, DIGEST, 10)
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    # Rightful: Alice's own task, opened at the start of its rotation, and its verdict.
    fill(alice, 1)
    alice.append(task(mine, A), key=f"task/{mine}", block=mine * 100 + 1)
    alice.append(verdict(mine), key=f"verdict/{mine}", block=mine * 100 + 2)
    await out.push()
    for _ in range(2):  # no allowlist known yet: wait at the task, import nothing past it, record nothing
        [sync] = await mirror_in.sync()
        assert (sync.imported if _ == 0 else 0, bob.head(A).origin_seq, sync.rejected) == (1 if _ == 0 else 0, 1, "")
        assert sync.waiting.startswith("#2 task_opened cannot be checked yet"), sync.waiting
    assert bob.count(origin=B) == 0
    bob.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=(B, A)), key="allow", block=1)
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.waiting) == (2, "")
    # Bob's task opened by Alice, early in its rotation: not hers.
    alice.append(task(1 - mine, A), key=f"task/{1 - mine}", block=(1 - mine) * 100 + 1)
    await out.push()
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("not entitled: #4 task_opened"), sync.rejected
    assert bob.head(A).origin_seq == 3


async def test_a_verdict_for_a_task_the_peer_did_not_open_is_refused(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice, bob = logs["alice"], logs["bob"]
    bob.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=(A, B)), key="allow", block=1)
    store = DirectoryStore(tmp_path / "bucket")
    alice.append(verdict(7), key="verdict/7", block=750)
    await MirrorOut(alice, store, ALICE, DIGEST, 10).push()
    [sync] = await MirrorIn(bob, [Peer(A, store)], DIGEST).sync()
    assert sync.rejected.startswith("not entitled: #1 verdict_recorded for task 7")


async def test_a_verdict_is_checked_against_the_task_its_peer_opened_in_an_earlier_sync(
        tmp_path: Path, logs: dict[str, EventLog]) -> None:
    """Across syncs a verdict's task is found by the sampler's key (`task/<id>/opened`), and
    checked by its body: a task under another key still counts (the full read), a key whose
    body names another task does not."""
    alice, bob = logs["alice"], logs["bob"]
    validators = tuple(sorted((A, B)))
    mine = [t for t in range(8) if validators[t % 2] == A]  # Alice's rotations: tasks 0/2/4/6 or 1/3/5/7
    bob.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=validators),
               key="allow", block=1)
    store = DirectoryStore(tmp_path / "bucket")
    out = MirrorOut(alice, store, ALICE, DIGEST, 10)
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    alice.append(task(mine[0], A), key=f"task/{mine[0]}/opened", block=mine[0] * 100 + 1)
    alice.append(task(mine[1], A), key=f"opened-elsewhere/{mine[1]}", block=mine[1] * 100 + 1)
    await out.push()
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.rejected) == (2, "")
    alice.append(verdict(mine[0]), key=f"verdict/{mine[0]}", block=mine[0] * 100 + 2)  # found by its key
    alice.append(verdict(mine[1]), key=f"verdict/{mine[1]}", block=mine[1] * 100 + 2)  # found by the full read
    await out.push()
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.rejected) == (2, "")
    # Task mine[2] stored under mine[3]'s sampler key: mine[3] was never opened.
    alice.append(task(mine[2], A), key=f"task/{mine[3]}/opened", block=mine[2] * 100 + 1)
    await out.push()
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.rejected) == (1, "")
    alice.append(verdict(mine[3]), key=f"verdict/{mine[3]}", block=mine[3] * 100 + 2)
    await out.push()
    [sync] = await MirrorIn(bob, [Peer(A, store)], DIGEST).sync()
    assert sync.rejected.startswith(f"not entitled: #6 verdict_recorded for task {mine[3]}"), sync.rejected


async def test_entitlement_follows_an_allowlist_recorded_between_syncs(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    """The latest allowlist is remembered across syncs and read again for what was appended since."""
    alice, bob = logs["alice"], logs["bob"]
    both = tuple(sorted((A, B)))
    t = next(t for t in range(2) if both[t % 2] == A)
    bob.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=both), key="allow/1", block=1)
    store = DirectoryStore(tmp_path / "bucket")
    out = MirrorOut(alice, store, ALICE, DIGEST, 10)
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    alice.append(task(t, A), key=f"task/{t}/opened", block=t * 100 + 1)
    await out.push()
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.rejected) == (1, "")
    fill(bob, 3)
    # A newer allowlist without Alice: her next rightful-looking task is no longer hers.
    bob.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=(B,)), key="allow/2",
               block=2)
    alice.append(task(t + 2, A), key=f"task/{t + 2}/opened", block=(t + 2) * 100 + 1)
    await out.push()
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("not entitled: #2 task_opened"), sync.rejected


def test_last_of_kind_is_the_latest_row_by_local_seq(tmp_path: Path) -> None:
    with EventLog(tmp_path / "k.db", own=A) as log:
        assert log.last_of_kind(A, "allowlist_verified") is None
        assert log.last_of_kind(B, "allowlist_verified") is None
        allow = ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=(A,))
        log.append(allow, key="allow/1", block=50)
        fill(log, 5)
        log.append(allow, key="allow/2", block=10)  # a lower block, appended later: still the latest
        fill(log, 5)
        found = log.last_of_kind(A, "allowlist_verified")
        assert found is not None and found.key == "allow/2"
        after = log.last_of_kind(A, "allowlist_verified", after=found.seq - 1)
        assert after is not None and after.key == "allow/2"
        assert log.last_of_kind(A, "allowlist_verified", after=found.seq) is None
        assert log.last_of_kind(A, "chain_head_observed", after=1).seq == log.last_seq()


# ---- restore -------------------------------------------------------------------------------


async def test_restore_brings_back_a_lost_tail_before_appending(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice = logs["alice"]
    store = DirectoryStore(tmp_path / "bucket")
    fill(alice, 7)
    alice.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(tmp_path / "alice.db", tmp_path / "backup.db")  # the machine's last backup
    fill(alice, 6)
    await MirrorOut(alice, store, ALICE, DIGEST, 5).push()
    expected = list(alice.chain(A))
    with EventLog(tmp_path / "backup.db", own=A) as restored:
        out = MirrorOut(restored, store, ALICE, DIGEST, 5)
        with pytest.raises(MirrorError, match="restore"):
            await out.push()  # pushing first would reuse seqs 8..13
        assert await out.restore() == 6
        assert list(restored.chain(A)) == expected
        fill(restored, 1, tag="z")
        assert (await out.push()).size == 14
        assert await out.restore() == 0
    with EventLog(tmp_path / "empty.db", own=A) as fresh:  # a lost disk: everything comes back
        assert await MirrorOut(fresh, store, ALICE, DIGEST, 5).restore() == 14


async def test_restore_refuses_a_bucket_that_disagrees(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    fill(logs["alice"], 8, tag="x")
    await MirrorOut(logs["alice"], store, ALICE, DIGEST, 5).push()
    with EventLog(tmp_path / "fork.db", own=A) as fork:
        fill(fork, 3, tag="y")
        with pytest.raises(MirrorError, match="disagrees"):
            await MirrorOut(fork, store, ALICE, DIGEST, 5).restore()
        assert fork.head(A).origin_seq == 3


async def test_no_checkpoint_yet_is_not_a_rejection(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    [sync] = await MirrorIn(logs["bob"], [Peer(A, DirectoryStore(tmp_path / "empty"))], DIGEST).sync()
    assert (sync.checkpoint_size, sync.rejected, sync.error) == (None, "", "")
    with pytest.raises(ObjectNotFound):
        await DirectoryStore(tmp_path / "empty").get(checkpoint_key(A))


# ---- commands ------------------------------------------------------------------------------


def test_mirror_commands_push_pull_status_and_verify(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    import json

    import click
    from click.testing import CliRunner

    from leoma_cmd import events_cmds, mirror_cmds

    @click.group()
    def cli() -> None:
        """Test group."""

    mirror_cmds.register(cli)
    events_cmds.register(cli)
    fill(logs["alice"], 7)
    for lg in logs.values():
        lg.close()
    bucket = (tmp_path / "alice-bucket").as_uri()
    peers = json.dumps([{"hotkey": A, "url": bucket}, {"hotkey": B, "url": bucket}, {"hotkey": "bad"}])
    runner = CliRunner()
    alice_db, bob_db = str(tmp_path / "alice.db"), str(tmp_path / "bob.db")

    pushed = runner.invoke(cli, ["mirror", "push", "--db", alice_db, "--bucket", bucket, "--dev-key", "//Alice",
                                 "--segment-size", "5", "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.output)["size"] == 7

    before = runner.invoke(cli, ["mirror", "status", "--db", bob_db, "--hotkey", B, "--peers", peers, "--json"])
    assert before.exit_code == 0, before.output
    assert [(r["role"], r["local"], r["published"], r["lag_events"]) for r in json.loads(before.stdout)] == [
        ("own", 0, None, 0), ("peer", 0, 7, 7)]  # published, not imported yet: the lag `/metrics` reports too
    pulled = runner.invoke(cli, ["mirror", "pull", "--db", bob_db, "--dev-key", "//Bob", "--json"],
                           env={"PEER_VALIDATORS": peers})
    assert pulled.exit_code == 0, pulled.output
    assert "PEER_VALIDATORS[2].hotkey" in pulled.stderr
    [report] = json.loads(pulled.stdout)
    assert (report["peer"], report["imported"]) == (A, 7)

    status = runner.invoke(cli, ["mirror", "status", "--db", bob_db, "--hotkey", B, "--peers", peers, "--json"])
    assert status.exit_code == 0, status.output
    rows = json.loads(status.stdout)
    assert [(r["role"], r["local"], r["published"], r["lag_events"]) for r in rows] == [("own", 0, None, 0), ("peer", 7, 7, 0)]  # importing appends nothing own
    table = runner.invoke(cli, ["mirror", "status", "--db", alice_db, "--hotkey", A, "--bucket", bucket])
    assert table.exit_code == 0 and "lag events" in table.output

    verified = runner.invoke(cli, ["verify", "--bucket", bucket, "--hotkey", A, "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["events"] == 7

    missing = runner.invoke(cli, ["mirror", "push", "--db", alice_db, "--dev-key", "//Alice"], env={"LEOMA_OWN_BUCKET_URL": ""})
    assert missing.exit_code != 0 and "LEOMA_OWN_BUCKET_URL" in missing.output
    for name in ("alice", "bob", "charlie"):
        logs[name] = EventLog(tmp_path / f"{name}.db", own={"alice": A, "bob": B, "charlie": C}[name])


# ---- quiet -----------------------------------------------------------------------------------


async def test_a_network_where_nothing_happens_appends_nothing_and_an_idle_sync_is_one_request(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    names = {"alice": ALICE, "bob": BOB, "charlie": CHARLIE}
    stores = {name: Counting(DirectoryStore(tmp_path / name)) for name in names}
    outs = {n: MirrorOut(logs[n], stores[n], k, DIGEST, 5) for n, k in names.items()}
    ins = {n: MirrorIn(logs[n], [Peer(k.ss58_address, stores[m]) for m, k in names.items() if m != n], DIGEST)
           for n in names}
    for n in names:
        fill(logs[n], 7, tag=n[0])
    for _ in range(2):  # everything converges
        for n in names:
            await outs[n].push()
        for n in names:
            await ins[n].sync()
    before = {n: (logs[n].last_seq(), logs[n].counts_by_kind()) for n in names}
    for st in stores.values():
        st.calls.clear()
    for _ in range(10):  # then nothing is observed for a while
        for n in names:
            assert not (await outs[n].push()).checkpoint_written
        for n in names:
            assert all(r.imported == 0 and not r.rejected for r in await ins[n].sync())
    assert {n: (logs[n].last_seq(), logs[n].counts_by_kind()) for n in names} == before
    for n, st in stores.items():  # two peers read the checkpoint once a round, nothing else; no push
        assert st.calls == [("get", checkpoint_key(names[n].ss58_address))] * 20


async def test_an_idle_sync_does_not_read_the_log_or_verify_again(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    import leoma.mirror.inbound as inbound

    store = await published(tmp_path, logs, 12, 5)
    mirror_in = MirrorIn(logs["bob"], [Peer(A, store)], DIGEST)
    await mirror_in.sync()
    calls = []
    real = inbound.parse_checkpoint
    inbound.parse_checkpoint = lambda *a: calls.append(a) or real(*a)  # type: ignore[assignment]
    try:
        [sync] = await mirror_in.sync()
    finally:
        inbound.parse_checkpoint = real  # type: ignore[assignment]
    assert (sync.checkpoint_size, sync.imported, sync.objects) == (12, 0, 1) and calls == []


# ---- bounded -------------------------------------------------------------------------------


def _stored(root: Path) -> tuple[int, int]:
    files = [p for p in (root / "log").rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


async def test_a_trickle_of_pushes_keeps_the_bucket_linear_in_the_log(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    import random

    alice, bob = logs["alice"], logs["bob"]
    store = DirectoryStore(tmp_path / "bucket")
    out = MirrorOut(alice, store, ALICE, DIGEST, 40)
    counted = Counting(store)
    mirror_in = MirrorIn(bob, [Peer(A, counted)], DIGEST)
    rng = random.Random(7)
    ratios, uploaded = [], 0
    for push in range(150):
        head = alice.head(A).origin_seq
        fill(alice, rng.randint(1, 5))
        uploaded += (await out.push()).bytes_written
        counted.calls.clear()
        counted.bytes_read = 0
        await mirror_in.sync()
        # An up-to-date peer reads the checkpoint and one object of just the new events.
        new_once = len(encode_segment(list(alice.chain(A, after=head))))
        assert len(counted.calls) == 2, counted.calls
        assert counted.bytes_read <= 1.2 * new_once + len(await store.get(checkpoint_key(A))), push
        # From ~150 events on: below that the signed checkpoint's ~500 bytes alone weigh 1/10.
        if push % 25 == 24 and push >= 49:
            once = len(encode_segment(list(alice.chain(A))))
            stored, objects = _stored(store.root)
            ratios.append(stored / once)
            sealed = alice.head(A).origin_seq // 40
            assert objects <= 1 + sealed + 3 * 4 + 1  # checkpoint, full segments, a few per level, a shortcut
    assert max(ratios) <= 1.5, ratios
    # Each event is uploaded a few times (once per level), not once per push.
    assert uploaded <= 8 * len(encode_segment(list(alice.chain(A)))) + 150 * 1024
    assert list(bob.chain(A)) == list(alice.chain(A)) and bob.count(origin=B) == 0


# ---- hostile peers with a key --------------------------------------------------------------


def _signed(signer: Any, **fields: Any) -> bytes:
    from leoma.adapters.signing import sign_checkpoint

    fields.setdefault("consensus_digest", DIGEST)
    return sign_checkpoint(signer, Checkpoint(origin=signer.ss58_address, **fields))


async def test_a_signed_huge_segment_size_and_a_zstd_bomb_are_refused_within_our_memory(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    import tracemalloc

    bob = logs["bob"]
    store = DirectoryStore(tmp_path / "bucket")
    fill(logs["alice"], 3)
    await MirrorOut(logs["alice"], store, ALICE, DIGEST, 5).push()
    await MirrorIn(bob, [Peer(A, store)], DIGEST).sync()
    tip = logs["alice"].head(A)
    # The peer signs a segment of a million events and serves 1 GiB of newlines in 1 MiB.
    cobj, newlines = zstandard.ZstdCompressor(level=1).compressobj(), b"\n" * (1 << 20)
    bomb = b"".join([cobj.compress(newlines) for _ in range(1024)] + [cobj.flush()])
    assert len(bomb) < 1024 * 1024
    await store.put(segment_key(A, 1, 1_000_000), bomb)
    await store.put(checkpoint_key(A), _signed(ALICE, size=1_000_000, head=tip.hash, segment_size=1_000_000))
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("oversized object") and "segment_size" in sync.rejected
    # Within our event cap: well-formed lines, each 60 KB, in 1 MiB stopped by our inflate cap.
    await store.put(segment_key(A, 1, MAX_EVENTS_PER_OBJECT), _line_bomb(MAX_EVENTS_PER_OBJECT))
    await store.put(checkpoint_key(A), _signed(ALICE, size=MAX_EVENTS_PER_OBJECT, head=tip.hash,
                                               segment_size=MAX_EVENTS_PER_OBJECT))
    tracemalloc.start()
    try:
        for _ in range(3):  # retried: refused again, recorded once
            [sync] = await mirror_in.sync()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sync.rejected.startswith("oversized object: inflates to more than"), sync.rejected
    assert peak < 96 * 1024 * 1024, peak  # our 32 MiB inflate cap, not the 600 MB the lines add up to
    assert [r.reason.split(":")[0] for r in rejections(bob)] == ["oversized object", "oversized object"]
    assert bob.head(A).origin_seq == 3
    # A frame of nothing but newlines is refused at its first line, long before any cap.
    await store.delete(segment_key(A, 1, MAX_EVENTS_PER_OBJECT))
    await store.put(segment_key(A, 1, MAX_EVENTS_PER_OBJECT), bomb)
    [sync] = await mirror_in.sync()
    assert sync.rejected.startswith("malformed object") and bob.head(A).origin_seq == 3


def _line_bomb(count: int) -> bytes:
    """`count` event lines with consecutive seqs and a 60 KB body each, compressed as a stream."""
    cobj = zstandard.ZstdCompressor(level=3).compressobj()
    parts = []
    for seq in range(1, count + 1):
        line = (b'{"origin":"' + A.encode() + b'","origin_seq":' + str(seq).encode() + b',"key":"k","v":1,"block":1,'
                b'"body":{"kind":"chain_head_observed","block_hash":"' + b"a" * 60_000 + b'"},"prev":"' + b"0" * 64 +
                b'","hash":"' + b"0" * 64 + b'"}\n')
        parts.append(cobj.compress(line))
    parts.append(cobj.flush())
    data = b"".join(parts)
    assert len(data) < 16 * 1024 * 1024 and len(data) * 30 < count * 60_000
    return data


async def test_a_signed_checkpoint_naming_objects_that_do_not_exist(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    bob = logs["bob"]
    store = await published(tmp_path, logs, 7, 5)  # 1-5 sealed, 6-7 in the tail
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    await mirror_in.sync()
    tip = logs["alice"].head(A)
    await store.put(checkpoint_key(A), _signed(ALICE, size=9, head=tip.hash, segment_size=5, layout=2,
                                               tail=((6, 7, 0), (8, 9, 0))))
    for _ in range(3):
        [sync] = await mirror_in.sync()
        assert sync.rejected.startswith("missing segment"), sync.rejected
    [rejected] = rejections(bob)
    assert rejected.object_key == segment_key(A, 8, 9) and rejected.at_seq == 8
    assert bob.head(A).origin_seq == 7 and bob.count(origin=B) == 1


@pytest.mark.parametrize("tail", [((1, 3, 0),), ((6, 7, 0), (9, 9, 0)), ((6, 9, 99),)])
async def test_an_impossible_tail_is_refused(tmp_path: Path, logs: dict[str, EventLog], tail: Any) -> None:
    store = await published(tmp_path, logs, 7, 5)
    await store.put(checkpoint_key(A), _signed(ALICE, size=9, head="ab" * 32, segment_size=5, layout=2, tail=tail))
    [sync] = await MirrorIn(logs["bob"], [Peer(A, store)], DIGEST).sync()
    assert sync.rejected.startswith("malformed object"), sync.rejected
    assert logs["bob"].head(A).origin_seq == 0


async def test_an_object_deleted_by_compaction_mid_read_is_not_a_rejection(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice, bob = logs["alice"], logs["bob"]
    store = DirectoryStore(tmp_path / "bucket")
    out = MirrorOut(alice, store, ALICE, DIGEST, 5)
    fill(alice, 3)
    await out.push()
    stale = await store.get(checkpoint_key(A))
    fill(alice, 4)
    await out.push()  # seals 1-5 and deletes 1-3, which the stale checkpoint names

    class Stale(Counting):
        served = False

        async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
            if key == checkpoint_key(A) and not self.served:
                self.served = True
                self.calls.append(("get", key))
                return stale
            return await super().get(key, max_bytes=max_bytes)

    [sync] = await MirrorIn(bob, [Peer(A, Stale(store))], DIGEST).sync()
    assert (sync.imported, sync.rejected, sync.error) == (7, "", "")
    assert not rejections(bob)


async def test_objects_are_fetched_within_our_limit_per_sync(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    store = await published(tmp_path, logs, 23, 2)
    mirror_in = MirrorIn(logs["bob"], [Peer(A, store)], DIGEST, max_segments_per_sync=4)
    heads = []
    for _ in range(4):
        [sync] = await mirror_in.sync()
        heads.append(sync.head)
        assert sync.objects <= 1 + 4 and not sync.rejected
    assert heads == [8, 16, 23, 23]


# ---- entitlement cannot be skipped ---------------------------------------------------------


async def test_a_fresh_validator_without_an_allowlist_waits_then_refuses_a_task_for_someone_elses_turn(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    alice, bob = logs["alice"], logs["bob"]
    validators = tuple(sorted((A, B)))
    theirs = 1 - validators.index(A)  # task `theirs` is Bob's to sample
    store = DirectoryStore(tmp_path / "bucket")
    fill(alice, 2)
    alice.append(task(theirs, A), key=f"task/{theirs}", block=theirs * 100 + 1)
    alice.append(verdict(theirs), key=f"verdict/{theirs}", block=theirs * 100 + 2)
    fill(alice, 2)
    await MirrorOut(alice, store, ALICE, DIGEST, 10).push()
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    for _ in range(3):
        [sync] = await mirror_in.sync()
        assert sync.waiting.startswith("#3 task_opened cannot be checked yet") and not sync.rejected
    assert bob.head(A).origin_seq == 2 and bob.count(origin=B) == 0  # nothing past it, nothing recorded
    bob.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=validators), key="allow", block=1)
    for _ in range(3):
        [sync] = await mirror_in.sync()
        assert sync.rejected.startswith("not entitled: #3 task_opened"), sync.rejected
    assert [r.at_seq for r in rejections(bob)] == [3] and bob.head(A).origin_seq == 2


async def test_the_api_feed_judges_entitlement_by_the_trusted_validators_allowlists(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    from leoma.api.feed import Feeder

    alice = logs["alice"]
    validators = tuple(sorted((A, B)))
    mine = validators.index(A)
    store = DirectoryStore(tmp_path / "bucket")
    alice.append(ev.AllowlistVerified(owner_hotkey="o", digest="d", interval=100, validators=validators),
                 key="allow", block=1)
    alice.append(task(mine, A), key=f"task/{mine}", block=mine * 100 + 1)
    alice.append(task(1 - mine, A), key=f"task/{1 - mine}", block=(1 - mine) * 100 + 1)
    await MirrorOut(alice, store, ALICE, DIGEST, 10).push()
    with EventLog(tmp_path / "api.db", own="api") as api_log:
        feeder = Feeder(api_log, [], DEFAULT, stores={A: store})
        [sync] = await feeder.sync(frozenset({A}))
        assert sync.rejected.startswith("not entitled: #3"), sync.rejected
        assert api_log.head(A).origin_seq == 2
        [sync] = await Feeder(api_log, [], DEFAULT, stores={A: store}).sync(frozenset({A}))
        assert api_log.count(origin="api") == 1  # the refusal, once


# ---- disk loss and kill -9 -----------------------------------------------------------------


async def test_orphans_past_the_checkpoint_then_disk_loss_then_restore_and_publishing_resumes(
    tmp_path: Path, logs: dict[str, EventLog]
) -> None:
    alice, bob = logs["alice"], logs["bob"]
    store = DirectoryStore(tmp_path / "bucket")
    mirror_in = MirrorIn(bob, [Peer(A, store)], DIGEST)
    fill(alice, 7)
    await MirrorOut(alice, store, ALICE, DIGEST, 5).push()
    await mirror_in.sync()

    class CrashBeforeCheckpoint(Counting):
        async def put(self, key: str, data: bytes, **kw: Any) -> None:
            if key.endswith("checkpoint.json"):
                raise StorageError("killed before the checkpoint was written")
            await super().put(key, data, **kw)

    fill(alice, 3, tag="lost")
    with pytest.raises(StorageError):  # writes 6-10 and the shortcut 8-10, never signed
        await MirrorOut(alice, CrashBeforeCheckpoint(store), ALICE, DIGEST, 5).push()
    assert await store.head(segment_key(A, 6, 10)) is not None
    with EventLog(tmp_path / "new-disk.db", own=A) as fresh:  # the disk is lost
        out = MirrorOut(fresh, store, ALICE, DIGEST, 5)
        assert await out.restore() == 7  # and the unsigned 6-10 and 8-10 are swept (one LIST)
        assert await store.head(segment_key(A, 6, 10)) is None and await store.head(segment_key(A, 8, 10)) is None
        fill(fresh, 5, tag="new")  # the same seqs 8..12, other events
        report = await out.push()
        assert report.size == 12 and report.objects_replaced == 0
        fill(fresh, 1, tag="more")
        assert (await out.push()).size == 13  # and publishing goes on
        assert (await verify_published("unused://", A, store=store))["ok"]
        [sync] = await mirror_in.sync()
        assert (sync.imported, sync.rejected) == (6, "")
        assert list(bob.chain(A)) == list(fresh.chain(A))


async def test_an_unsigned_object_left_in_the_way_is_replaced_at_write_time(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    alice = logs["alice"]
    store = DirectoryStore(tmp_path / "bucket")
    fill(alice, 7)
    out = MirrorOut(alice, store, ALICE, DIGEST, 5)
    await out.push()
    with EventLog(tmp_path / "other.db", own=A) as other:  # a planted or leftover 6-10 with other events
        other.import_events(list(alice.chain(A)))
        fill(other, 3, tag="other")
        await store.put(segment_key(A, 6, 10), encode_segment(list(other.chain(A, after=5))), if_absent=True)
    fill(alice, 3)
    report = await out.push()
    assert report.objects_replaced == 1 and (await verify_published("unused://", A, store=store))["ok"]


def _child(db: Path, bucket: Path, die_on: str) -> str:
    return (
        "import asyncio, os, signal\n"
        "from leoma.log.eventlog import EventLog\nfrom leoma.mirror.out import MirrorOut\nfrom leoma.adapters.directory import DirectoryStore\n"
        "from leoma.adapters.signing import keypair_from_uri\nfrom leoma.log.consensus import DEFAULT\n"
        "class Die(DirectoryStore):\n"
        "    async def put(self, key, data, **kw):\n"
        f"        if {die_on!r} == 'checkpoint' and key.endswith('checkpoint.json'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "        await super().put(key, data, **kw)\n"
        "    async def delete(self, key):\n"
        f"        if {die_on!r} == 'delete': os.kill(os.getpid(), signal.SIGKILL)\n"
        "        await super().delete(key)\n"
        "k = keypair_from_uri('//Alice')\n"
        f"log = EventLog({str(db)!r}, own=k.ss58_address)\n"
        f"asyncio.run(MirrorOut(log, Die({str(bucket)!r}), k, DEFAULT.digest, 5).push())\n"
    )


@pytest.mark.parametrize("die_on", ["checkpoint", "delete"])
async def test_kill_9_during_compaction_then_restart(tmp_path: Path, logs: dict[str, EventLog], die_on: str) -> None:
    import signal
    import subprocess
    import sys

    alice = logs["alice"]
    store = DirectoryStore(tmp_path / "bucket")
    out = MirrorOut(alice, store, ALICE, DIGEST, 5)
    for _ in range(4):  # four small objects in the tail
        fill(alice, 1)
        await out.push()
    fill(alice, 3)  # this push seals 1-5 (and deletes the tail) or merges: compaction
    alice.close()
    db = tmp_path / "alice.db"
    proc = subprocess.run([sys.executable, "-c", _child(db, store.root, die_on)], cwd=Path(__file__).parent.parent,
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with EventLog(db, own=A) as alice:
        out = MirrorOut(alice, store, ALICE, DIGEST, 5)
        assert (await out.push()).size == 7
        fill(alice, 1)
        await out.push()
        assert (await verify_published("unused://", A, store=store))["ok"]
        cp = await fetch_checkpoint(store, A)
        assert cp is not None
        on_disk = {p.name for p in (store.root / "log" / A / "seg").iterdir()}
        assert on_disk == {Path(segment_key(A, f, last)).name for f, last in named_objects(cp)}  # nothing left behind
        [sync] = await MirrorIn(logs["bob"], [Peer(A, store)], DIGEST).sync()
        assert (sync.imported, sync.rejected) == (8, "")
    logs["alice"] = EventLog(db, own=A)


# ---- the first layout stays readable -------------------------------------------------------

V1 = Path(__file__).parent / "fixtures" / "mirror_v1"


async def test_a_bucket_in_the_first_layout_is_read_and_continued(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    shutil.copytree(V1 / "bucket", tmp_path / "bucket")
    store = DirectoryStore(tmp_path / "bucket")
    expected = [msgspec.json.decode(line, type=ev.Event) for line in (V1 / "events.jsonl").read_bytes().splitlines()]
    cp = await fetch_checkpoint(store, A)
    assert cp is not None and cp.layout == 1 and cp.size == len(expected) == 12
    report = await verify_published("unused://", A, store=store, consensus_digest=cp.consensus_digest)
    assert report["ok"] and report["events"] == 12, report
    bob = logs["bob"]
    mirror_in = MirrorIn(bob, [Peer(A, store)], cp.consensus_digest)
    [sync] = await mirror_in.sync()
    assert (sync.imported, sync.rejected) == (12, "") and list(bob.chain(A)) == expected
    # The owner upgrades: a new log restored from the old bucket goes on in layout 2.
    with EventLog(tmp_path / "upgraded.db", own=A) as upgraded:
        out = MirrorOut(upgraded, store, ALICE, cp.consensus_digest, 5)
        assert await out.restore() == 12
        fill(upgraded, 6, tag="v2")
        assert (await out.push()).size == 18
        after = await fetch_checkpoint(store, A)
        assert after is not None and after.layout == 2
        [sync] = await mirror_in.sync()
        assert (sync.imported, sync.rejected) == (6, "") and list(bob.chain(A)) == list(upgraded.chain(A))
        assert (await verify_published("unused://", A, store=store, consensus_digest=cp.consensus_digest))["ok"]


def test_the_first_layouts_checkpoint_still_verifies_byte_for_byte() -> None:
    from leoma.adapters.signing import read_checkpoint

    data = (V1 / "bucket" / checkpoint_key(A)).read_bytes()
    cp = read_checkpoint(data, origin=A)
    assert (cp.layout, cp.tail, cp.extra, cp.size) == (1, (), (), 12)
    with pytest.raises(Exception, match="does not verify"):
        read_checkpoint(data.replace(b'"size":12', b'"size":13'), origin=A)


# ---- the commands honour the network's consensus -------------------------------------------


def test_mirror_commands_read_the_consensus_like_serve(tmp_path: Path, logs: dict[str, EventLog]) -> None:
    import json

    import click
    from click.testing import CliRunner

    from leoma.log.consensus import load_consensus
    from leoma_cmd import events_cmds, mirror_cmds

    @click.group()
    def cli() -> None:
        """Test group."""

    mirror_cmds.register(cli)
    events_cmds.register(cli)
    text = (Path(__file__).parent.parent / "leoma" / "consensus.toml").read_text()
    custom = tmp_path / "consensus.toml"
    custom.write_text(text.replace("tasks = 100", "tasks = 50", 1))
    digest = load_consensus(custom).digest
    assert digest != DIGEST
    fill(logs["alice"], 4)
    for lg in logs.values():
        lg.close()
    bucket = (tmp_path / "alice-bucket").as_uri()
    env = {"LEOMA_CONSENSUS": str(custom), "PEER_VALIDATORS": json.dumps([{"hotkey": A, "url": bucket}])}
    runner = CliRunner()
    pushed = runner.invoke(cli, ["mirror", "push", "--db", str(tmp_path / "alice.db"), "--bucket", bucket,
                                 "--dev-key", "//Alice", "--json"], env=env)
    assert pushed.exit_code == 0, pushed.output
    cp = asyncio.run(fetch_checkpoint(DirectoryStore(tmp_path / "alice-bucket"), A))
    assert cp is not None and cp.consensus_digest == digest
    pulled = runner.invoke(cli, ["mirror", "pull", "--db", str(tmp_path / "bob.db"), "--dev-key", "//Bob", "--json"], env=env)
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout)[0]["imported"] == 4
    status = runner.invoke(cli, ["mirror", "status", "--db", str(tmp_path / "bob.db"), "--hotkey", B, "--json"], env=env)
    assert [r["problem"] for r in json.loads(status.stdout)] == ["", ""], status.output
    verified = runner.invoke(cli, ["verify", "--bucket", bucket, "--hotkey", A, "--json"], env=env)
    assert json.loads(verified.stdout)["consensus_known"] is True
    # Without the network's consensus, the peer's digest is unknown and the pull says so.
    refused = runner.invoke(cli, ["mirror", "pull", "--db", str(tmp_path / "charlie.db"), "--dev-key", "//Charlie",
                                  "--json"], env={**env, "LEOMA_CONSENSUS": ""})
    assert refused.exit_code == 1 and "unknown consensus digest" in refused.stdout
    for name in ("alice", "bob", "charlie"):
        logs[name] = EventLog(tmp_path / f"{name}.db", own={"alice": A, "bob": B, "charlie": C}[name])
