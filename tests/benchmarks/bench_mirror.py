"""Mirror cost: an incremental sync of a big peer, and import throughput against local appends.

Run: .venv/bin/python tests/benchmarks/bench_mirror.py [--events 200000] [--segment-size 1000] [--new 1000]

A peer ("alice") appends `--events` events (timed: the plain local `append_many` rate, in
batches of one segment) and publishes them to a moto bucket in segments. A second validator
("bob") imports them all (timed: the import rate with every check, download included). Then
alice appends `--new` events and publishes; bob's incremental sync is measured through a
counting wrapper (store calls and bytes) and a pass-through proxy (HTTP requests).

Targets: store requests <= new segments + 2; bytes <= 1.2 x the new segments; import rate
>= 1/2 of the local append rate. The steady trickle a validator lives in (many small pushes) is
measured by `bench_mirror_steady.py`.
"""

from __future__ import annotations

import argparse
import asyncio
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
from leoma.mirror.segments import covering, fetch_checkpoint, segment_key  # noqa: E402
from leoma.adapters.signing import keypair_from_uri  # noqa: E402
from leoma.adapters.s3 import S3Store  # noqa: E402
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, start_moto  # noqa: E402


class Counting:
    """Counts store calls and the bytes they return."""

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

    async def close(self) -> None:
        await self.inner.close()


def drafts(start: int, n: int) -> list[Draft]:
    return [Draft(f"verdict/{i // 16}/5Miner{i % 16:041d}", 5_000_000 + i // 50,
                  ev.VerdictRecorded(task_id=i // 16, miner=f"5Miner{i % 16:041d}", passed=i % 3 != 0,
                                     overall=60 + i % 40, confidence=80, judge_model="gemini-3.1-flash-lite",
                                     prompt_version="evaluate/v1", aspects={"motion_quality": 70 + i % 30},
                                     reasoning="smooth motion, faithful first frame"))
            for i in range(start, start + n)]


async def run(args: argparse.Namespace) -> None:
    alice_key, bob_key = keypair_from_uri("//Alice"), keypair_from_uri("//Bob")
    with tempfile.TemporaryDirectory() as tmp, start_moto() as endpoint:
        alice = EventLog(Path(tmp) / "alice.db", own=alice_key.ss58_address)
        bob = EventLog(Path(tmp) / "bob.db", own=bob_key.ss58_address)
        t0 = time.perf_counter()
        for start in range(0, args.events, args.segment_size):
            alice.append_many(drafts(start, min(args.segment_size, args.events - start)))
        append_s = time.perf_counter() - t0
        append_rate = args.events / append_s
        print(f"local append_many: {args.events:,} events in {append_s:.2f}s = {append_rate:,.0f} ev/s")

        store = S3Store("leoma-bench", endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY,
                        secret_key=SECRET_KEY)
        await store.ensure_bucket()
        out = MirrorOut(alice, store, alice_key, DEFAULT.digest, args.segment_size)
        t0 = time.perf_counter()
        pushed = await out.push()
        print(f"push: {pushed.segments_written} segments, {pushed.bytes_written / 1e6:.1f} MB in "
              f"{time.perf_counter() - t0:.2f}s ({pushed.bytes_written / args.events:.0f} B/event compressed)")

        mirror_in = MirrorIn(bob, [Peer(alice_key.ss58_address, store)], DEFAULT.digest)
        t0 = time.perf_counter()
        [sync] = await mirror_in.sync()
        import_s = time.perf_counter() - t0
        import_rate = sync.imported / import_s
        assert sync.imported == args.events and not sync.rejected, sync
        print(f"import (download + decode + verify + import): {sync.imported:,} events in {import_s:.2f}s = "
              f"{import_rate:,.0f} ev/s; ratio to local append = {import_rate / append_rate:.2f} (target >= 0.50)")

        alice.append_many(drafts(args.events, args.new))
        await out.push()
        cp = await fetch_checkpoint(store, alice_key.ss58_address)
        assert cp is not None
        new_keys = [segment_key(alice_key.ss58_address, a, b) for a, b in covering(cp, args.events)]
        new_bytes = 0
        for key in new_keys:
            info = await store.head(key)
            assert info is not None
            new_bytes += info.size

        with FaultProxy(endpoint) as proxy:
            async with S3Store("leoma-bench", endpoint_url=proxy.endpoint, region=REGION, access_key=ACCESS_KEY,
                               secret_key=SECRET_KEY) as via_proxy:
                counted = Counting(via_proxy)
                incremental = MirrorIn(bob, [Peer(alice_key.ss58_address, counted)], DEFAULT.digest)
                t0 = time.perf_counter()
                [sync] = await incremental.sync()
                inc_s = time.perf_counter() - t0
            http = len(proxy.seen)
            heads = sum(1 for method, _, _ in proxy.seen if method == "HEAD")
        assert sync.imported == args.new, sync
        print(f"incremental sync of {args.new} new events ({len(new_keys)} new segment(s), {new_bytes:,} B) "
              f"in {inc_s * 1000:.0f} ms:")
        print(f"  store requests: {counted.calls} (target <= {len(new_keys) + 2}) "
              f"{'OK' if counted.calls <= len(new_keys) + 2 else 'OVER'}")
        print(f"  HTTP requests:  {http} ({heads} of them HEADs made by S3Store.get's size check before each GET)")
        print(f"  bytes read:     {counted.bytes:,} = {counted.bytes / new_bytes:.3f} x the new segments "
              f"(target <= 1.2) {'OK' if counted.bytes <= 1.2 * new_bytes else 'OVER'}")
        print(f"  import ratio:   {import_rate / append_rate:.2f} of the local append rate "
              f"{'OK' if import_rate >= append_rate / 2 else 'UNDER'}")
        await store.close()
        alice.close()
        bob.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--segment-size", type=int, default=1000)
    parser.add_argument("--new", type=int, default=1000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
