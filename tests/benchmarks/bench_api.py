"""Benchmark: the owner API's leaderboard route against a static file, on loopback, in one run.

    .venv/bin/python tests/benchmarks/bench_api.py [--seconds 6] [--concurrency 16] [--tasks 200]

Builds an API log (4 validators, 24 miners, `--tasks` tasks with responses and verdicts, each
validator's epoch decision), serves it with uvicorn in a subprocess, and drives `/scores/rank`
and `/static/dashboard.html` with httpx async clients for `--seconds` each. Prints requests/s
and p50/p99 latency of both and their ratio. Bounded: well under 30 s with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

API_ID = "owner-api"


def build(path: Path, tasks: int) -> None:
    """Write the benchmark's API log to `path`."""
    from leoma.adapters.signing import keypair_from_uri
    from leoma.log.consensus import DEFAULT
    from leoma.log.events import MinerResponded
    from projections.epoch import score_epoch
    from tests.builders import NETUID, LogBuilder

    interval = 20
    validators = sorted(keypair_from_uri(f"//Val{i}").ss58_address for i in range(4))
    miners = [keypair_from_uri(f"//Miner{i}").ss58_address for i in range(24)]
    b = LogBuilder()
    for v in validators:
        b.allowlist(v, validators, interval=interval, block=1)
        b.metagraph(v, ["owner", *miners], block=1)
        for uid, m in enumerate(miners, start=1):
            b.checked(v, m, uid=uid, block=2, commit_block=10 + uid)
    for t in range(1, tasks + 1):
        sampler = validators[t % len(validators)]
        b.opened(sampler, t, block=t * interval + 1, interval=interval, miners=miners)
        for i, m in enumerate(miners):
            b.add(sampler, MinerResponded(task_id=t, miner=m, status="accepted", latency_ms=900 + i),
                  block=t * interval + 2, key=f"response/{t}/{m}")
            b.verdict(sampler, t, m, (t * 7 + i * 3) % 10 < 10 - i % 7, block=t * interval + 3)
    epoch_block = ((tasks + 3) * interval // DEFAULT.epoch.length) * DEFAULT.epoch.length
    epoch = epoch_block // DEFAULT.epoch.length
    rows = b.rows()
    for v in validators:
        decided = score_epoch(rows, own=v, epoch=epoch, epoch_block=epoch_block, netuid=NETUID, consensus=DEFAULT)
        b.add(v, decided, block=epoch_block, key=f"epoch/{epoch}/scored")
    b.to_log(path, own=API_ID).close()


def serve(path: str, port: int) -> None:
    """Serve the log at `path` on 127.0.0.1:`port` (the subprocess side)."""
    import uvicorn

    from leoma.api.app import create_app
    from leoma.api.service import ApiService
    from leoma.api.settings import ApiSettings
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import EventLog

    settings = ApiSettings.load({}, db=path, api_id=API_ID)
    service = ApiService(settings, DEFAULT, log_=EventLog(path, own=API_ID))
    uvicorn.run(create_app(service), host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def drive(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    """Requests completed, their latencies, and failures, for `seconds` with `concurrency` workers."""
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0) as client:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.get(url)
                if r.status_code != 200:
                    failures += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, failures


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if len(values) > 1 else values[0] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--serve", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "api.db"
        t0 = time.perf_counter()
        build(db, args.tasks)
        print(f"built API log: {args.tasks} tasks x 24 miners in {time.perf_counter() - t0:.1f} s")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(db), str(port)], cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the API did not start")
                time.sleep(0.1)
            first = time.perf_counter()
            ranks = httpx.get(base + "/scores/rank", timeout=30).json()
            print(f"first /scores/rank (folds the log, decides): {(time.perf_counter() - first) * 1000:.0f} ms, "
                  f"{len(ranks['ranks'])} miners, winner {str(ranks['winner'])[:12]}…")
            results = {}
            for name, path in (("static /static/dashboard.html", "/static/dashboard.html"),
                               ("leaderboard /scores/rank", "/scores/rank")):
                n, lat, failed = asyncio.run(drive(base + path, args.seconds, args.concurrency))
                results[name] = (n / args.seconds, p(lat, 50), p(lat, 99))
                print(f"{name:32s} {n / args.seconds:8.0f} req/s  p50 {p(lat, 50):6.1f} ms  "
                      f"p99 {p(lat, 99):6.1f} ms  failures {failed}")
            (s_rps, _, s_p99), (l_rps, _, l_p99) = results.values()
            print(f"leaderboard / static: throughput {l_rps / s_rps:.2f}x, p99 {l_p99 / s_p99:.2f}x")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
