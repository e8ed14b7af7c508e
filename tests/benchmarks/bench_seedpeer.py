"""Reading a seed-layout peer: first sync and idle sync, against the plainest baselines.

Run: .venv/bin/python tests/benchmarks/bench_seedpeer.py [--tasks 500] [--miners 16]

A peer running the first implementation holds `--tasks` tasks in a moto bucket, each with its
media (metadata, clip, first frame, one video per miner) and a signed verdict file of
`--miners` entries. Measured on the production path (`MirrorIn.sync`, which dispatches a peer
without a checkpoint to `leoma.mirror.seedpeer`):

* first sync (list, download, strict signature check, append the observations) against the
  plain baseline of listing the bucket and GETting every verdict file with no check;
* idle sync (nothing changed) against one bare listing of the bucket -- the seed's own
  discovery cost at every epoch. Target: idle <= 1.5 x the bare listing, nothing downloaded
  (one GET: the probe for a checkpoint, which a seed peer does not have).
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

from leoma.mirror import seedformat  # noqa: E402
from leoma.log.eventlog import EventLog  # noqa: E402
from leoma.mirror.inbound import MirrorIn, Peer  # noqa: E402
from leoma.adapters.signing import keypair_from_uri  # noqa: E402
from leoma.adapters.s3 import S3Store  # noqa: E402
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, start_moto  # noqa: E402


class Counting:
    """Counts GETs (and their bytes) and listings."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.gets, self.lists, self.bytes = inner, 0, 0, 0

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        self.gets += 1
        data = await self.inner.get(key, max_bytes=max_bytes)
        self.bytes += len(data)
        return bytes(data)

    async def head(self, key: str) -> Any:
        return await self.inner.head(key)

    def list(self, prefix: str = "", **kw: Any) -> Any:
        self.lists += 1
        return self.inner.list(prefix, **kw)

    async def close(self) -> None:
        await self.inner.close()


async def fill(store: S3Store, seed: Any, tasks: int, miners: list[str]) -> None:
    sem = asyncio.Semaphore(16)

    async def one(task: int) -> None:
        entries = [{"hotkey": m, "passed": (task + i) % 3 != 0, "status": "passed", "confidence": 80,
                    "reasoning": "smooth motion, faithful first frame | overall_score=81 | aspect_scores={}",
                    "latency_ms": 41000, "original_artifacts": "[]", "generated_artifacts": "{}",
                    "presentation_order": "single-video benchmark"} for i, m in enumerate(miners)]
        async with sem:
            await store.put(seedformat.metadata_key(task), b'{"task_id": %d}' % task)
            await store.put(seedformat.original_clip_key(task), b"c" * 2048)
            await store.put(seedformat.first_frame_key(task), b"p" * 512)
            for m in miners:
                await store.put(seedformat.generated_video_key(task, m), b"v" * 1024)
            await store.put(seedformat.verdict_key(task, seed.ss58_address), seedformat.sign_verdict_file(entries, seed),
                            content_type="application/json")

    await asyncio.gather(*(one(t) for t in range(1, tasks + 1)))


async def run(args: argparse.Namespace) -> None:
    seed, ours = keypair_from_uri("//Dave"), keypair_from_uri("//Alice")
    miners = [keypair_from_uri(f"//BenchMiner{i}").ss58_address for i in range(args.miners)]
    with tempfile.TemporaryDirectory() as tmp, start_moto() as endpoint:
        store = S3Store("leoma-seed-bench", endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY,
                        secret_key=SECRET_KEY)
        await store.ensure_bucket()
        t0 = time.perf_counter()
        await fill(store, seed, args.tasks, miners)
        objects = args.tasks * (4 + args.miners)
        print(f"seed bucket: {args.tasks} tasks, {objects:,} objects, written in {time.perf_counter() - t0:.1f}s")

        lists = []
        for _ in range(3):  # best of three, as the idle sync below
            t0 = time.perf_counter()
            listed = [info async for info in store.list("")]
            lists.append(time.perf_counter() - t0)
        bare_list = min(lists)
        t0 = time.perf_counter()
        keys = [i.key for i in listed if seedformat.parse_verdict_key(i.key)]
        for key in keys:
            await store.get(key)
        plain_read = bare_list + time.perf_counter() - t0
        print(f"baseline: bare listing {bare_list * 1000:.0f} ms; listing + GET every verdict file, no check "
              f"{plain_read * 1000:.0f} ms")

        log = EventLog(Path(tmp) / "ours.db", own=ours.ss58_address)
        counted = Counting(store)
        mirror_in = MirrorIn(log, [Peer(seed.ss58_address, counted)], "d" * 64)
        t0 = time.perf_counter()
        [first] = await mirror_in.sync(block=1000)
        first_s = time.perf_counter() - t0
        assert first.layout == "seed" and not first.rejected and first.imported == args.tasks * (1 + args.miners), first
        print(f"first sync: {first.imported:,} events from {args.tasks} files in {first_s * 1000:.0f} ms "
              f"({counted.gets} GETs, {counted.bytes / 1e6:.2f} MB) = {first_s / plain_read:.2f} x the plain read")

        counted.gets = counted.lists = counted.bytes = 0
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            [idle] = await mirror_in.sync(block=1001)
            runs.append(time.perf_counter() - t0)
        idle_s = min(runs)
        assert idle.imported == 0 and counted.bytes == 0, (idle, counted.bytes)  # only the checkpoint probe
        ratio = idle_s / bare_list
        print(f"idle sync: {idle_s * 1000:.0f} ms, {counted.lists // 3} listing, {counted.gets // 3} GET (the checkpoint "
              f"probe, absent), 0 bytes = "
              f"{ratio:.2f} x the bare listing ({'ok' if ratio <= 1.5 else 'OVER'} target 1.5)")
        log.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--miners", type=int, default=16)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
