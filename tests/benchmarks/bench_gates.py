"""Video gates and copy detection for one task's outputs, and the sampler's memory with one huge reply.

    python tests/benchmarks/bench_gates.py [--outputs 64] [--frames 81] [--miners 64] [--huge-mb 500]
                                           [--only gates|rss] [--concurrency 40 --concurrency 64]

1. Gates + hashes: `leoma.adapters.gates.measure` on every output (one full decode each, every
   measurement and the perceptual hashes), the source clip's hashes and the copy check across
   the task — against decoding the same videos once (PyAV, every frame, threads as the gates
   use them, nothing else) in the same run, interleaved output by output. Target: <= 1.5x.
2. Peak RSS: one real `sample_turn` (checker, sampler, gates, judge client, buckets) over
   `--miners` miners, one of which streams `--huge-mb` MB without a content-length, at each
   `--concurrency` (default: 40, the default MAX_CONCURRENT_MINERS, and 64), each in a fresh
   process. The world (miners and the judge stand-in) runs in a child process, so the figure is
   the validator's own. Target: <= 400 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

MIX = ("faithful", "flaky", "noisy", "faithful", "frozen", "one_frame", "faithful", "corrupt_tail")
PROMPT = "The camera pans left steadily across the scene."


def _decode_only(data: bytes) -> int:
    import av

    n = 0
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for _ in container.decode(stream):
                n += 1
        except av.error.FFmpegError:
            pass
    return n


def bench_gates(n_outputs: int, frames: int) -> None:
    from leoma.adapters import gates, video
    from leoma.devnet.clips import render_source
    from leoma.devnet.world import render_reference_video
    from leoma.log.consensus import DEFAULT
    from projections.gates import CopyCandidate, copies, gate_reason

    clip = video.cut_clip(render_source(42, shots=(("left", 7.5),)).video, 2.0, 5.0)
    png = video.first_frame_png(clip)
    unique = [render_reference_video(b, PROMPT, png, frames=frames, seed=i) for i, b in enumerate(MIX)]
    outputs = [unique[i % len(unique)] for i in range(n_outputs)]
    mb = sum(map(len, outputs)) / 1e6

    # Interleaved, output by output, the order alternating: on shared cores, load that comes and
    # goes falls on both sides alike instead of on whichever ran second. Wall and CPU time both.
    decoded = 0
    decode_s = decode_cpu = gates_s = gates_cpu = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    source = gates.clip_hashes(clip)  # once per task, as the sampler does
    image = gates.conditioning_gray(png)
    gates_s, gates_cpu = time.perf_counter() - t0, time.process_time() - c0
    measured = []
    for i, v in enumerate(outputs):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0, c0 = time.perf_counter(), time.process_time()
            if side == 0:
                decoded += _decode_only(v)
                decode_s += time.perf_counter() - t0
                decode_cpu += time.process_time() - c0
            else:
                measured.append(gates.measure(v, image, hash_frames=DEFAULT.gates.hash_frames, source=source))
                gates_s += time.perf_counter() - t0
                gates_cpu += time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    reasons = [gate_reason(m, DEFAULT) for m in measured]
    found = copies([CopyCandidate(f"m{i:02d}", i, i, m.hashes) for i, m in enumerate(measured) if not reasons[i]],
                   DEFAULT.gates.copy_max_bits)
    gates_s += time.perf_counter() - t0
    gates_cpu += time.process_time() - c0

    print(f"gates: {n_outputs} outputs x {frames} frames at 832x480 ({mb:.1f} MB, {decoded} frames decoded)")
    print(f"  decode once (baseline)     {decode_s:8.3f} s  {decode_s / n_outputs * 1000:7.1f} ms/output"
          f"  cpu {decode_cpu:8.3f} s")
    print(f"  gates + hashes + copies    {gates_s:8.3f} s  {gates_s / n_outputs * 1000:7.1f} ms/output"
          f"  cpu {gates_cpu:8.3f} s")
    print(f"  ratio                      {gates_s / decode_s:8.2f} x  wall, {gates_cpu / decode_cpu:.2f} x cpu"
          "  (target <= 1.5x)")
    refused = {r: reasons.count(r) for r in sorted(set(reasons)) if r}
    print(f"  refused by gate: {refused}; copies found: {len(found)}")


# -- peak RSS of the sampler ------------------------------------------------------------------


def _hotkey(name: str) -> str:
    from leoma.adapters.signing import keypair_from_uri

    return str(keypair_from_uri(f"//bench-{name}").ss58_address)


def _world_process(names: list[tuple[str, str]], frames: int, huge: int, out: Any, stop: Any) -> None:
    from leoma.devnet.world import World

    world = World(frames=frames)
    world.oversize_bytes = huge
    for i, (name, behaviour) in enumerate(names):
        world.add_miner(behaviour, name=name, hotkey=_hotkey(name))
        world.counts[name] = i  # distinct noise per miner, so honest outputs are no copies of each other
    world.start_thread()
    out.put(world.url)
    stop.wait()
    world.stop_thread()


async def _sample_once(root: Path, names: list[tuple[str, str]], url: str, concurrency: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from leoma.adapters.chain import Chain, commitment_payload
    from leoma.adapters.directory import DirectoryStore
    from leoma.adapters.signing import keypair_from_uri
    from leoma.adapters.simchain import SimChain
    from leoma.devnet.world import World
    from leoma.log.events import decode_body
    from leoma.mirror.allowlist import publish_allowlist
    from leoma.services.checker import check_miners
    from leoma.services.sampler import sample_turn
    from tests.validator_fixtures import (
        NETUID,
        OWNER_URI,
        VALIDATOR_URIS,
        ValidatorWorld,
        small_consensus,
        source_clip,
        wallet,
    )

    ids = World()  # the same chute ids, repos and revisions the child's world serves
    for name, behaviour in names:
        ids.add_miner(behaviour, name=name, hotkey=_hotkey(name))
    world = SimpleNamespace(url=url, generate_url_template=url + "/chutes-gen/{slug}/generate", miners=ids.miners,
                            counts={})
    owner = keypair_from_uri(OWNER_URI)
    val = keypair_from_uri(VALIDATOR_URIS[0])
    sim = SimChain.create(root / "chain.jsonl", owner=owner.ss58_address, clock="manual", netuid=NETUID, tempo=360)
    sim.register(owner.ss58_address, stake=10**12, validator_permit=True)
    sim.register(val.ss58_address, stake=10**11, validator_permit=True)
    keys = {name: keypair_from_uri(f"//bench-{name}") for name, _ in names}
    uids = {name: sim.register(kp.ss58_address) for name, kp in keys.items()}
    source = DirectoryStore(root / "source")
    await source.put("2026/01/clip-0.mp4", source_clip(20, "left"), content_type="video/mp4")
    vw = ValidatorWorld(root=root, sim=sim, world=world, source=source, owner=owner, validators=[val],  # type: ignore[arg-type]
                        miners=keys, uids=uids, consensus=small_consensus(), interval=400)
    async with Chain(vw.network) as chain:
        await publish_allowlist(source, chain, wallet(owner), NETUID, [val.ss58_address], 400)
        for name, _ in names:
            m = ids.miners[name]
            await chain.set_timelocked_commitment(wallet(keys[name]), NETUID,
                                                  commitment_payload(m.repo_id, m.revision, m.chute_id))
    sim.step(3)
    # Memory is measured, not latency: on busy cores a starved world must not turn miners into
    # timeouts, which would judge fewer videos and understate the peak.
    settings = vw.settings(val, REQUEST_TIMEOUT="3600", MAX_CONCURRENT_MINERS=str(concurrency))
    async with vw.context(val, settings=settings) as ctx:
        await check_miners(ctx)
        vw.advance_to_turn(val)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        closed = await sample_turn(ctx)
        wall = time.perf_counter() - t0
        verdicts = [decode_body(r.body) for r in ctx.log.rows(kinds=["verdict_recorded"])]
    reasons: dict[str, int] = {}
    for v in verdicts:
        key = v.reason or ("judged: passed" if v.passed else "judged: failed")
        reasons[key] = reasons.get(key, 0) + 1
    return {"closed": closed, "wall": wall, "reasons": reasons, "before": before}


def bench_rss(n_miners: int, frames: int, huge_mb: int, concurrency: int) -> None:
    names = [(f"m{i:02d}", "noisy" if i else "faithful") for i in range(n_miners - 1)] + [("huge", "oversize")]
    ctx = mp.get_context("spawn")
    out, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_world_process, args=(names, frames, huge_mb * 1_000_000, out, stop), daemon=True)
    child.start()
    try:
        url = out.get(timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(_sample_once(Path(tmp), names, url, concurrency))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        stop.set()
        child.join(30)
    closed = result["closed"]
    print(f"sampler: {n_miners} miners x {frames} frames, one streaming {huge_mb} MB (cap 100 MB), "
          f"MAX_CONCURRENT_MINERS={concurrency}")
    print(f"  task closed: evaluated={closed.evaluated} passed={closed.passed} in {result['wall']:.1f} s")
    print(f"  verdicts: {result['reasons']}")
    print(f"  peak RSS before the turn   {result['before']:8.1f} MB  (imports, chain, checker, source clip)")
    print(f"  peak RSS of the sampler    {peak:8.1f} MB  (target <= 400 MB)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--outputs", type=int, default=64)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--miners", type=int, default=64)
    ap.add_argument("--miner-frames", type=int, default=33)
    ap.add_argument("--huge-mb", type=int, default=500)
    ap.add_argument("--only", choices=("gates", "rss"), default=None)
    ap.add_argument("--concurrency", type=int, action="append",
                    help="MAX_CONCURRENT_MINERS for the sampler part (repeatable; default: 40, the default, and 64)")
    args = ap.parse_args()
    levels = args.concurrency or [40, 64]
    if args.only in (None, "gates"):
        bench_gates(args.outputs, args.frames)
    if args.only == "rss":
        bench_rss(args.miners, args.miner_frames, args.huge_mb, levels[0])
    elif args.only is None:  # a fresh process per level, so neither the gates part nor another level counts
        import subprocess

        for level in levels:
            subprocess.run([sys.executable, __file__, "--only", "rss", "--miners", str(args.miners), "--miner-frames",
                            str(args.miner_frames), "--huge-mb", str(args.huge_mb), "--concurrency", str(level)],
                           check=True)


if __name__ == "__main__":
    main()
