"""Mirror cost in the steady state a validator lives in: a trickle of small pushes, not a bulk sync.

Run: .venv/bin/python tests/benchmarks/bench_mirror_steady.py [--pushes 5000] [--moto-pushes 400]
     [--sample-every 100] [--segment-size 1000]

Three validators each append 1-5 events per round (verdicts, task opens and chain heads, like a
devnet's), push (`MirrorOut.push`, the production path), then pull the two others
(`MirrorIn.sync` through a counting store). First on directory buckets for `--pushes` rounds,
then on a moto S3 server for `--moto-pushes`. The plainest baseline, measured in the same run:
the same events encoded once as one zstd segment (`encode_segment`). Reported:

* bytes stored under each validator's `log/`, sampled every `--sample-every` rounds, divided by
  its own events encoded once (target <= 1.5 at every sample);
* bytes uploaded per push, and everything uploaded divided by the events encoded once;
* a peer's incremental sync: bytes read / (the new events encoded once + the checkpoint)
  (target <= 1.2) and requests / (new objects + 2) (target <= 1);
* own events appended over idle rounds where nothing happens (target 0), requests per idle sync;
* peak resident memory of a fresh process importing a hostile peer that signs a huge segment
  and serves zstd bombs (target <= 200 MB), next to the same process importing an honest peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leoma.log import events as ev  # noqa: E402
from leoma.log.consensus import DEFAULT  # noqa: E402
from leoma.log.eventlog import Draft, EventLog  # noqa: E402
from leoma.mirror.inbound import MirrorIn, Peer
from leoma.mirror.out import MirrorOut
from leoma.mirror.segments import encode_segment  # noqa: E402
from leoma.adapters.signing import keypair_from_uri  # noqa: E402
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.s3 import S3Store  # noqa: E402
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, start_moto  # noqa: E402

MINERS = [f"5Miner{i:041d}" for i in range(8)]


class Counting:
    """Counts a reader's store calls and the bytes they return."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.bytes = inner, 0, 0

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.calls += 1
        data = await self.inner.get(key, max_bytes=max_bytes)
        self.bytes += len(data)
        return bytes(data)

    async def put(self, key: str, data: bytes, **kw: Any) -> None:
        self.calls += 1
        await self.inner.put(key, data, **kw)

    async def head(self, key: str) -> Any:
        self.calls += 1
        return await self.inner.head(key)

    def list(self, prefix: str = "", **kw: Any) -> Any:
        self.calls += 1
        return self.inner.list(prefix, **kw)

    async def delete(self, key: str) -> None:
        self.calls += 1
        await self.inner.delete(key)

    async def close(self) -> None:
        await self.inner.close()


class Trickle:
    """Events like a validator's: mostly verdicts of its own tasks, some task opens (on its rotation
    turn, so peers' entitlement checks pass) and chain heads."""

    def __init__(self, me: str, validators: list[str], rng: random.Random) -> None:
        self.me, self.rng = me, rng
        self.order = sorted(validators)
        self.task = -1
        self.n = 0

    def allowlist(self) -> Draft:
        return Draft("allowlist", 1, ev.AllowlistVerified(owner_hotkey="owner", digest="d" * 64, interval=100,
                                                          validators=tuple(self.order)))

    def next_task(self) -> int:
        t = self.task + 1
        while self.order[t % len(self.order)] != self.me:
            t += 1
        return t

    def drafts(self, n: int) -> list[Draft]:
        rng, out = self.rng, []
        for _ in range(n):
            self.n += 1
            i = self.n
            roll = rng.random()
            if self.task < 0 or roll < 0.1:
                self.task = self.next_task()
                block = self.task * 100 + 1
                body: Any = ev.TaskOpened(
                    task_id=self.task, interval=100, sampler=self.me, block_hash=f"0x{rng.getrandbits(256):064x}",
                    source_key=f"clips/{self.task % 50}.mp4", clip_start_ms=1000, clip_ms=5000,
                    prompt="A slow pan across a harbour at dusk.", prompt_model="gemini",
                    prompt_version="describe/v1", miners=tuple(MINERS))
                key = f"task/{self.task}"
            elif roll < 0.75:
                miner = MINERS[i % len(MINERS)]
                block = self.task * 100 + 5
                body = ev.VerdictRecorded(task_id=self.task, miner=miner, passed=i % 3 != 0,
                                          overall=rng.randint(40, 95), confidence=80,
                                          judge_model="gemini-3.1-flash-lite", prompt_version="evaluate/v1",
                                          aspects={"motion_quality": rng.randint(50, 99)},
                                          reasoning="smooth motion, faithful first frame")
                key = f"verdict/{self.task}/{miner}/{i}"
            else:
                block = max(0, self.task) * 100 + 7
                body = ev.ChainHeadObserved(block_hash=f"0x{rng.getrandbits(256):064x}")
                key = f"head/{i}"
            out.append(Draft(key, block, body))
        return out


async def stored_bytes(store: Any, origin: str) -> int:
    return sum([info.size async for info in store.list(f"log/{origin}/")])


async def steady(kind: str, pushes: int, every: int, segment_size: int, tmp: Path, endpoint: str = "") -> dict[str, Any]:
    keys = [keypair_from_uri(u) for u in ("//Alice", "//Bob", "//Charlie")]
    logs = [EventLog(tmp / f"{kind}-{i}.db", own=k.ss58_address) for i, k in enumerate(keys)]
    if kind == "directory":
        stores: list[Any] = [DirectoryStore(tmp / f"{kind}-bucket-{i}") for i in range(3)]
    else:
        stores = [S3Store(f"leoma-steady-{i}", endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY,
                          secret_key=SECRET_KEY) for i in range(3)]
        for st in stores:
            await st.ensure_bucket()
    outs = [MirrorOut(lg, st, k, DEFAULT.digest, segment_size) for lg, st, k in zip(logs, stores, keys)]
    readers = [[Counting(stores[j]) for j in range(3)] for _ in range(3)]
    ins = [MirrorIn(logs[i], [Peer(keys[j].ss58_address, readers[i][j]) for j in range(3) if j != i], DEFAULT.digest)
           for i in range(3)]
    rng = random.Random(14)
    gens = [Trickle(k.ss58_address, [x.ss58_address for x in keys], rng) for k in keys]
    for lg, g in zip(logs, gens):
        lg.append_many([g.allowlist()])
    worst = [0.0] * 3
    samples: list[list[float]] = [[], [], []]
    uploaded = [0] * 3
    upload_max = [0] * 3
    read_bytes = read_target = 0
    read_calls = calls_target = 0
    worst_sync_bytes = 0.0
    worst_sync_calls = 0.0
    push_s = sync_s = 0.0
    for round_ in range(1, pushes + 1):
        new_once = [0] * 3
        objects_written = [0] * 3
        checkpoint_bytes = [0] * 3
        for i in range(3):
            n = rng.randint(1, 5)
            head = logs[i].head(keys[i].ss58_address).origin_seq
            logs[i].append_many(gens[i].drafts(n))
            fresh = list(logs[i].chain(keys[i].ss58_address, after=head))
            new_once[i] = len(encode_segment(fresh))
            t0 = time.perf_counter()
            report = await outs[i].push()
            push_s += time.perf_counter() - t0
            uploaded[i] += report.bytes_written
            upload_max[i] = max(upload_max[i], report.bytes_written)
            objects_written[i] = report.segments_written + report.objects_replaced
            checkpoint_bytes[i] = len(await stores[i].get(f"log/{keys[i].ss58_address}/checkpoint.json"))
        for i in range(3):
            for j in range(3):
                if j == i:
                    continue
                c = readers[i][j]
                c.calls = c.bytes = 0
            t0 = time.perf_counter()
            reports = await ins[i].sync()
            sync_s += time.perf_counter() - t0
            assert all(r.imported > 0 and not r.rejected and not r.error for r in reports), reports
            for j in range(3):
                if j == i:
                    continue
                c = readers[i][j]
                target = new_once[j] + checkpoint_bytes[j]
                read_bytes += c.bytes
                read_target += target
                read_calls += c.calls
                calls_target += objects_written[j] + 2
                worst_sync_bytes = max(worst_sync_bytes, c.bytes / target)
                worst_sync_calls = max(worst_sync_calls, c.calls / (objects_written[j] + 2))
        if round_ % every == 0 or round_ == pushes:
            for i in range(3):
                once = len(encode_segment(list(logs[i].chain(keys[i].ss58_address))))
                ratio = await stored_bytes(stores[i], keys[i].ss58_address) / once
                samples[i].append(ratio)
                worst[i] = max(worst[i], ratio)
    # Idle: nothing is observed for a while.
    before = [lg.last_seq() for lg in logs]
    own_before = [lg.count(origin=k.ss58_address) for lg, k in zip(logs, keys)]
    idle_calls = 0
    idle_rounds = 50
    for _ in range(idle_rounds):
        for i in range(3):
            await outs[i].push()
        for i in range(3):
            for j in range(3):
                readers[i][j].calls = 0
            await ins[i].sync()
            idle_calls += sum(readers[i][j].calls for j in range(3) if j != i)
    appended = sum(lg.last_seq() - b for lg, b in zip(logs, before))
    own_appended = sum(lg.count(origin=k.ss58_address) - b for lg, k, b in zip(logs, keys, own_before))
    final_once = [len(encode_segment(list(lg.chain(k.ss58_address)))) for lg, k in zip(logs, keys)]
    result = {
        "backend": kind, "pushes_each": pushes, "events_each": [lg.count(origin=k.ss58_address) for lg, k in zip(logs, keys)],
        "stored_ratio_max": [round(w, 3) for w in worst], "stored_ratio_first": [round(s[0], 3) for s in samples],
        "stored_ratio_last": [round(s[-1], 3) for s in samples], "samples_each": len(samples[0]),
        "upload_bytes_per_push": [round(u / pushes) for u in uploaded], "upload_max_push": upload_max,
        "upload_over_once": [round(u / f, 2) for u, f in zip(uploaded, final_once)],
        "once_bytes_per_event": round(sum(final_once) / sum(lg.count(origin=k.ss58_address) for lg, k in zip(logs, keys)), 1),
        "sync_bytes_ratio": round(read_bytes / read_target, 3), "sync_bytes_ratio_worst": round(worst_sync_bytes, 3),
        "sync_requests_ratio": round(read_calls / calls_target, 3), "sync_requests_ratio_worst": round(worst_sync_calls, 3),
        "idle_events_appended": appended, "idle_own_events_appended": own_appended,
        "idle_requests_per_peer_sync": idle_calls / (idle_rounds * 6),
        "push_ms": round(push_s * 1000 / (3 * pushes), 2), "sync_ms": round(sync_s * 1000 / (3 * pushes), 2),
    }
    for lg in logs:
        lg.close()
    for st in stores:
        await st.close()
    return result


HOSTILE_CHILD = r"""
import asyncio, json, resource, sys, zstandard
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from leoma.log import events as ev
from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import Draft, EventLog
from leoma.mirror.inbound import MirrorIn, Peer
from leoma.mirror.out import MirrorOut
from leoma.mirror.segments import MAX_EVENTS_PER_OBJECT, checkpoint_key, segment_key
from leoma.adapters.signing import Checkpoint, keypair_from_uri, sign_checkpoint
from leoma.adapters.directory import DirectoryStore

tmp, mode = Path(sys.argv[2]), sys.argv[3]
alice, bob = keypair_from_uri("//Alice"), keypair_from_uri("//Bob")
A = alice.ss58_address
store = DirectoryStore(tmp / ("bucket-" + mode))
log_a = EventLog(tmp / ("a-" + mode + ".db"), own=A)
log_a.append_many([Draft(f"h/{i}", i, ev.ChainHeadObserved(block_hash=f"0x{i:064x}")) for i in range(3000)])

async def main():
    await MirrorOut(log_a, store, alice, DEFAULT.digest, 1000).push()
    if mode == "hostile":
        head = log_a.head(A).hash
        def sign(**kw):
            return sign_checkpoint(alice, Checkpoint(origin=A, consensus_digest=DEFAULT.digest, head=head, **kw))
        # 1) a signed segment of a million events, 2) 1 GiB of newlines, 3) 600 MB of well-formed lines.
        cobj, nl = zstandard.ZstdCompressor(level=1).compressobj(), b"\n" * (1 << 20)
        newline_bomb = b"".join([cobj.compress(nl) for _ in range(1024)] + [cobj.flush()])
        cobj = zstandard.ZstdCompressor(level=3).compressobj()
        parts = []
        for seq in range(1, MAX_EVENTS_PER_OBJECT + 1):
            parts.append(cobj.compress(b'{"origin":"' + A.encode() + b'","origin_seq":' + str(seq).encode()
                         + b',"key":"k","v":1,"block":1,"body":{"kind":"chain_head_observed","block_hash":"'
                         + b"a" * 60000 + b'"},"prev":"' + b"0" * 64 + b'","hash":"' + b"0" * 64 + b'"}\n'))
        line_bomb = b"".join(parts + [cobj.flush()])
        del parts
        cases = [(1_000_000, newline_bomb), (MAX_EVENTS_PER_OBJECT, newline_bomb), (MAX_EVENTS_PER_OBJECT, line_bomb)]
        log_b = EventLog(tmp / "b-hostile.db", own=bob.ss58_address)
        reasons = []
        for segment_size, bomb in cases:
            key = segment_key(A, 1, segment_size)
            await store.delete(key)
            await store.put(key, bomb)
            await store.put(checkpoint_key(A), sign(size=segment_size, segment_size=segment_size))
            [sync] = await MirrorIn(log_b, [Peer(A, store)], DEFAULT.digest).sync()
            reasons.append(sync.rejected[:70])
        del newline_bomb, line_bomb
    else:
        log_b = EventLog(tmp / "b-honest.db", own=bob.ss58_address)
        [sync] = await MirrorIn(log_b, [Peer(A, store)], DEFAULT.digest).sync()
        reasons = [f"imported {sync.imported}"]
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "results": reasons}))

asyncio.run(main())
"""


def hostile_rss(tmp: Path) -> dict[str, Any]:
    root = str(Path(__file__).resolve().parents[2])
    out = {}
    for mode in ("honest", "hostile"):
        proc = subprocess.run([sys.executable, "-c", HOSTILE_CHILD, root, str(tmp), mode], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def show(result: dict[str, Any]) -> None:
    print(f"\n== steady state on {result['backend']} buckets: 3 validators x {result['pushes_each']} pushes "
          f"of 1-5 events (events each: {result['events_each']}) ==")
    print(f"baseline: the same events encoded once as one zstd segment, {result['once_bytes_per_event']} B/event")
    ok = all(r <= 1.5 for r in result["stored_ratio_max"])
    print(f"log/ stored / encoded once, max over {result['samples_each']} samples each: {result['stored_ratio_max']} "
          f"(first sample {result['stored_ratio_first']}, last {result['stored_ratio_last']}; target <= 1.5) "
          f"{'OK' if ok else 'OVER'}")
    print(f"uploaded per push: {result['upload_bytes_per_push']} B on average, at most {result['upload_max_push']} B; "
          f"all uploads / encoded once = {result['upload_over_once']}")
    print(f"peer incremental sync: bytes read / (new events encoded once + checkpoint) = {result['sync_bytes_ratio']} "
          f"overall, worst single sync {result['sync_bytes_ratio_worst']} (target <= 1.2) "
          f"{'OK' if result['sync_bytes_ratio_worst'] <= 1.2 else 'OVER'}")
    print(f"                       requests / (new objects + 2) = {result['sync_requests_ratio']} overall, worst "
          f"{result['sync_requests_ratio_worst']} (target <= 1) {'OK' if result['sync_requests_ratio_worst'] <= 1 else 'OVER'}")
    print(f"idle (50 rounds, nothing observed): {result['idle_events_appended']} events appended, "
          f"{result['idle_own_events_appended']} own (target 0); {result['idle_requests_per_peer_sync']} requests per "
          f"peer sync")
    print(f"time: push {result['push_ms']} ms, sync of two peers {result['sync_ms']} ms")


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = [await steady("directory", args.pushes, args.sample_every, args.segment_size, Path(tmp))]
        if args.moto_pushes:
            with start_moto() as endpoint:
                results.append(await steady("moto", args.moto_pushes, max(1, args.sample_every // 2),
                                            args.segment_size, Path(tmp), endpoint))
        for r in results:
            show(r)
        rss = hostile_rss(Path(tmp))
        print(f"\npeak RSS of a fresh validator process importing an honest peer (3000 events): "
              f"{rss['honest']['peak_rss_mb']:.0f} MB")
        print(f"peak RSS importing a hostile peer (signed segment_size 1e6; 1 GiB newline bomb; 600 MB of "
              f"well-formed lines in {''}few MB): {rss['hostile']['peak_rss_mb']:.0f} MB (target <= 200) "
              f"{'OK' if rss['hostile']['peak_rss_mb'] <= 200 else 'OVER'}; refusals: {rss['hostile']['results']}")
        print(json.dumps({"steady": results, "rss": rss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--moto-pushes", type=int, default=400)
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--segment-size", type=int, default=1000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
