"""Benchmark: the dashboard's own reads and its media route against the plainest paths, in one run.

    .venv/bin/python tests/benchmarks/bench_dashboard.py [--seconds 4] [--concurrency 8] [--tasks 200]

Builds the API log of `bench_api` (4 validators, 24 miners, `--tasks` judged tasks) and a
directory bucket per validator holding a 4 MiB miner video for the newest tasks, serves it with
uvicorn in a subprocess (the feeder knows the buckets, as `leoma api` over a devnet does), and
drives each route for `--seconds`:

* `/media/...` with a 1 MiB range request, against the same file from a plain `StaticFiles`
  mount on the same server (the plainest file serving there is);
* the task page's `/tasks/T/view` against the seed's `/tasks/T`;
* the miner page's `/miners/M/history` against the seed's `/miners/M/tasks`.

Prints requests/s, p50/p99 and each ratio to its baseline, and the cold first `/tasks/T/view`
(it folds the whole log into `TaskExtras` once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_api import API_ID, drive, p  # noqa: E402

VIDEO_BYTES = 4 * 2**20
RANGE = "bytes=0-1048575"


def build(path: Path, tasks: int) -> None:
    """`bench_api`'s log, with each accepted response naming its object, as the sampler records it."""
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
            b.add(sampler, MinerResponded(task_id=t, miner=m, status="accepted", latency_ms=900 + i,
                                          object_key=f"{t}/generated_videos/{m}.mp4", width=832, height=480, frames=81),
                  block=t * interval + 2, key=f"response/{t}/{m}")
            b.verdict(sampler, t, m, (t * 7 + i * 3) % 10 < 10 - i % 7, block=t * interval + 3)
    epoch_block = ((tasks + 3) * interval // DEFAULT.epoch.length) * DEFAULT.epoch.length
    epoch = epoch_block // DEFAULT.epoch.length
    rows = b.rows()
    for v in validators:
        decided = score_epoch(rows, own=v, epoch=epoch, epoch_block=epoch_block, netuid=NETUID, consensus=DEFAULT)
        b.add(v, decided, block=epoch_block, key=f"epoch/{epoch}/scored")
    b.to_log(path, own=API_ID).close()


def media(db: Path, buckets: Path, tasks: int) -> dict[str, str]:
    """Write a video per miner of the newest tasks into its sampler's bucket; the buckets by validator."""
    from leoma.api.state import ApiState
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import EventLog

    data = os.urandom(VIDEO_BYTES)
    stores: dict[str, str] = {}
    with EventLog(db, own=API_ID) as log:
        state = ApiState(log, own=API_ID, consensus=DEFAULT)
        state.refresh()
        for t in range(max(1, tasks - 3), tasks + 1):
            for origin, rec in state.tasks[t].items():
                root = buckets / origin[:8]
                stores[origin] = str(root)
                for m in rec.responses:
                    path = root / f"{t}/generated_videos/{m}.mp4"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
    return stores


def serve(db: str, stores_json: str, port: int) -> None:
    """Serve the log with the buckets (the subprocess side)."""
    import uvicorn
    from starlette.staticfiles import StaticFiles

    from leoma.adapters.directory import DirectoryStore
    from leoma.api.app import create_app
    from leoma.api.feed import Feeder
    from leoma.api.service import ApiService
    from leoma.api.settings import ApiSettings
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import EventLog

    stores = {h: DirectoryStore(root) for h, root in json.loads(stores_json).items()}
    settings = ApiSettings.load({}, db=db, api_id=API_ID)
    service = ApiService(settings, DEFAULT, log_=EventLog(db, own=API_ID))
    service.feeder = Feeder(service.log, [], DEFAULT, stores=stores)
    app = create_app(service)
    for hotkey, store in stores.items():
        app.mount(f"/plain/{hotkey}", StaticFiles(directory=store.root))  # the baseline
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def drive_range(url: str, seconds: float, concurrency: int) -> tuple[int, list[float], int]:
    """As `drive`, but every request asks for the first MiB and must get exactly it (206)."""
    latencies: list[float] = []
    failures = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.get(url, headers={"Range": RANGE})
                if r.status_code != 206 or len(r.content) != 2**20:
                    failures += 1
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--serve", nargs=3, metavar=("DB", "STORES", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "api.db"
        t0 = time.perf_counter()
        build(db, args.tasks)
        stores = media(db, Path(tmp) / "buckets", args.tasks)
        print(f"built API log: {args.tasks} tasks x 24 miners, {len(stores)} buckets, "
              f"in {time.perf_counter() - t0:.1f} s")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(db), json.dumps(stores), str(port)], cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the API did not start")
                time.sleep(0.1)
            task = args.tasks
            cold = time.perf_counter()
            view = httpx.get(f"{base}/tasks/{task}/view", timeout=60).json()
            print(f"first /tasks/{task}/view (folds the log into TaskExtras): {(time.perf_counter() - cold) * 1000:.0f} ms, "
                  f"{view['miner_count']} miners")
            sampler, miner = view["sampler_hotkey"], view["miners"][0]["miner_hotkey"]
            video = view["miners"][0]["video_url"]
            assert video and video.startswith(f"{base}/media/"), video
            key = video.split(f"/media/{sampler}/", 1)[1]
            pairs = [
                ("media", drive_range, f"{base}/plain/{sampler}/{key}", video),
                ("task page", drive, f"{base}/tasks/{task}", f"{base}/tasks/{task}/view"),
                ("miner page", drive, f"{base}/miners/{miner}/tasks", f"{base}/miners/{miner}/history"),
            ]
            for name, fn, plain, ours in pairs:
                got = {}
                for label, url in (("baseline", plain), ("dashboard", ours)):
                    n, lat, failed = asyncio.run(fn(url, args.seconds, args.concurrency))
                    got[label] = (n / args.seconds, p(lat, 99))
                    path = url.removeprefix(base)
                    print(f"{name:10s} {label:9s} {path[:70]:70s} {n / args.seconds:8.1f} req/s  p50 {p(lat, 50):7.1f} ms"
                          f"  p99 {p(lat, 99):7.1f} ms  failures {failed}")
                (b_rps, b_p99), (d_rps, d_p99) = got["baseline"], got["dashboard"]
                extra = f", {d_rps:.0f} MiB/s" if name == "media" else ""
                print(f"{name:10s} dashboard / baseline: throughput {d_rps / b_rps:.2f}x, p99 {d_p99 / b_p99:.2f}x{extra}")
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
