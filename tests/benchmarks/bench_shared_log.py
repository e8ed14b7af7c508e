"""Split processes on one log: what sharing it costs against one process appending alone.

Run: .venv/bin/python tests/benchmarks/bench_shared_log.py [--events 3000] [--gap-ms 0]

Baseline: one process appends `--events` own events one by one (`EventLog.append`, the path
the sampler and the weight setter take, each a `BEGIN IMMEDIATE` transaction with
`synchronous=FULL`). Shared: two processes (a split sampler and weight setter) append
`--events / 2` each into the same log at the same time. Printed: events/s of each, the ratio to
the baseline, whether the chain verified, and how many times the writers alternated.

Then the lock a split role's round takes (`leoma.services.serve.log_lock`, an flock beside the log):
microseconds per uncontended acquire + release, against an empty `async with` of the same shape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from leoma.log.eventlog import EventLog  # noqa: E402
from leoma.services.serve import log_lock  # noqa: E402
from leoma.adapters.signing import keypair_from_uri  # noqa: E402

WRITER = """
import os, sys, time
from leoma.log.events import ChainHeadObserved
from leoma.log.eventlog import EventLog
from leoma.adapters.signing import keypair_from_uri
db, name, n, go, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
with EventLog(db, own=keypair_from_uri("//Alice").ss58_address) as log:
    while not os.path.exists(go):
        time.sleep(0.005)
    for i in range(n):
        log.append(ChainHeadObserved(block_hash=f"{name}-{i}"), key=f"{name}/{i}", block=i)
        if gap:
            time.sleep(gap)
"""


def appenders(root: Path, names: list[str], each: int, gap: float) -> tuple[float, bool, int]:
    db = root / f"{'-'.join(names)}.db"
    alice = keypair_from_uri("//Alice").ss58_address
    EventLog(db, own=alice).close()
    go = root / f"go-{'-'.join(names)}"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), n, str(each), str(go), str(gap)])
             for n in names]
    time.sleep(1.5)  # interpreters up, logs open
    start = time.perf_counter()
    go.touch()
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    assert codes == [0] * len(names), codes
    with EventLog(db, readonly=True) as log:
        ok = log.verify().ok
        keys = [e.key.split("/")[0] for e in log.chain(alice)]
    switches = sum(1 for a, b in zip(keys, keys[1:]) if a != b)
    return len(keys) / elapsed, ok, switches


async def lock_cost(root: Path, rounds: int) -> tuple[float, float]:
    db = root / "lock.db"
    start = time.perf_counter()
    for _ in range(rounds):
        async with log_lock(db, "checker", wait=False):
            pass
    locked = (time.perf_counter() - start) / rounds

    @contextlib.asynccontextmanager
    async def bare():  # type: ignore[no-untyped-def]
        yield True

    start = time.perf_counter()
    for _ in range(rounds):
        async with bare():
            pass
    plain = (time.perf_counter() - start) / rounds
    return locked * 1e6, plain * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--gap-ms", type=float, default=0.0, help="work between two appends of one writer")
    args = parser.parse_args()
    gap = args.gap_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        alone, ok1, _ = appenders(root, ["serve"], args.events, gap)
        shared, ok2, switches = appenders(root, ["sampler", "validator"], args.events // 2, gap)
        locked, plain = asyncio.run(lock_cost(root, 2000))
    print(f"one process appending alone:     {alone:9.0f} events/s  chain ok={ok1}  (baseline)")
    print(f"two processes on one log:        {shared:9.0f} events/s  chain ok={ok2}  "
          f"ratio {shared / alone:.2f}x  writers alternated {switches} times")
    print(f"role lock acquire+release:       {locked:9.1f} us/round  vs {plain:.1f} us bare "
          f"(ratio {locked / plain:.0f}x; a checker round is seconds)")


if __name__ == "__main__":
    main()
