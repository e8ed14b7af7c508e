"""Fan one task out to 64 reference miners through the real adapters and time it.

    python tests/benchmarks/bench_fanout.py [--miners 64] [--frames 33]

Reports the task's wall time (describe, fan-out, judging) and the validator-side cost per
miner — validation (`video.probe`) plus the judge call minus the stand-in's own measuring time —
against decoding the same videos alone in the same run (target: <= 2x decode-only).
The miners render on this machine too, so the fan-out time is mostly their rendering.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from leoma.adapters import video
from leoma.adapters.chutes import ChutesClient
from leoma.adapters.judge import Judge, Verdict
from leoma.devnet.clips import render_source
from leoma.devnet.world import World

MIX = ("faithful", "static", "noisy", "flaky", "faithful", "wrong_resolution", "garbage", "faithful")


async def main(n_miners: int, frames: int) -> None:
    world = World(frames=frames)
    for i in range(n_miners):
        world.add_miner(MIX[i % len(MIX)], name=f"m{i:02d}")
    await world.start()
    try:
        clip = render_source(42, shots=(("left", 5.0),)).video
        png = video.first_frame_png(clip)
        async with ChutesClient(world.url, "", world.generate_url_template, retry_base_delay=0.01) as chutes, \
                Judge("bench", base_url=world.url, retry_sleep=0.0) as judge:
            t0 = time.perf_counter()
            prompt = await judge.describe(clip)
            t1 = time.perf_counter()
            infos = await asyncio.gather(*(chutes.chute_info(m.chute_id) for m in world.miners.values()))
            replies = await asyncio.gather(*(chutes.generate(i, prompt, png, timeout=300) for i in infos))
            t2 = time.perf_counter()
            ok = [r for r in replies if r.status == "ok"]
            busy0 = world.judge_busy_seconds
            j0 = time.perf_counter()
            verdicts = [await judge.evaluate(png, prompt, r.video) for r in ok]  # sequential, as the seed
            j1 = time.perf_counter()
            standin = world.judge_busy_seconds - busy0
        wall = j1 - t0

        videos = [r.video for r in ok]
        d0 = time.perf_counter()
        for v in videos:
            video.decode_frames(v)
        decode = time.perf_counter() - d0
        p0 = time.perf_counter()
        for v in videos:
            video.probe(v)
        probe = time.perf_counter() - p0
        judge_client = (j1 - j0) - standin
        n = len(videos)
        failed = [r for r in replies if r.status != "ok"]
        print(f"miners {n_miners}, frames/video {frames}, accepted {n}, failed {len(failed)} "
              f"({sum(r.failure == 'miner' for r in failed)} miner, {sum(r.failure == 'infra' for r in failed)} infra)")
        print(f"verdicts {sum(isinstance(v, Verdict) for v in verdicts)}, passed "
              f"{sum(isinstance(v, Verdict) and v.passed for v in verdicts)}")
        print(f"task wall time        {wall:7.2f} s  (describe {t1 - t0:.2f}, fan-out {t2 - t1:.2f}, judging {j1 - j0:.2f})")
        print(f"decode-only           {decode:7.3f} s  {1000 * decode / n:7.1f} ms/miner")
        print(f"validation (probe)    {probe:7.3f} s  {1000 * probe / n:7.1f} ms/miner")
        print(f"judge call, client    {judge_client:7.3f} s  {1000 * judge_client / n:7.1f} ms/miner "
              f"(stand-in measuring {standin:.2f} s excluded)")
        print(f"validator cost / decode-only = {(probe + judge_client) / decode:.2f}x (target <= 2x)")
    finally:
        await world.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--miners", type=int, default=64)
    parser.add_argument("--frames", type=int, default=33)
    args = parser.parse_args()
    asyncio.run(main(args.miners, args.frames))
