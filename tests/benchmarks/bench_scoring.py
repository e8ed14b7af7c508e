"""Benchmark: scoring one epoch from a log of ~1,000,000 events.

    python tests/benchmarks/bench_scoring.py            # builds a temporary log (about a minute)
    python tests/benchmarks/bench_scoring.py --db PATH  # reuse (or build once into) PATH

The log: 64 validators and 256 miners over ~210 epochs -- mostly verdicts, plus the tasks that
produced them, the own validator's miner checks, metagraphs, allowlists and chain heads. It is
built in a child process so the peak RSS printed is the scoring's, not the builder's.

Printed: plain decode of every event (`rows()` + `decode_body`), one epoch scored cold (fold from
scratch) and warm (an `EpochFold` already at the previous epoch applies only the new rows), their
ratios against the targets (cold <= 2x decode, warm <= 1/20 cold) and the peak RSS (<= 500 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VALIDATORS = 64
MINERS = 256
INTERVAL = 10
EPOCH_LEN = 180
TASKS = 3840
TOTAL = 1_000_000
NETUID = 1


def hotkey(kind: str, i: int) -> str:
    return "5" + hashlib.sha256(f"{kind}{i}".encode()).hexdigest()[:47]


def build(path: str) -> None:
    """Write the benchmark log to `path` in chronological chunks (bounded memory)."""
    from leoma.events import (
        ZERO_HASH, AllowlistVerified, ChainHeadObserved, MetagraphObserved, MinerChecked, TaskOpened,
        VerdictRecorded, seal,
    )
    from leoma.log import EventLog

    validators = sorted(hotkey("v", i) for i in range(VALIDATORS))
    miners = [hotkey("m", i) for i in range(MINERS)]
    own = validators[0]
    log = EventLog(path, own=own)
    heads: dict[str, tuple[int, str]] = {}
    chunk: list = []
    count = 0

    def add(origin: str, key: str, block: int, body: object) -> None:
        nonlocal count
        seq, prev = heads.get(origin, (0, ZERO_HASH))
        event = seal(origin=origin, origin_seq=seq + 1, key=key, block=block, body=body, prev=prev)  # type: ignore[arg-type]
        heads[origin] = (seq + 1, event.hash)
        chunk.append(event)
        count += 1
        if len(chunk) >= 50_000:
            log.import_events(chunk)
            chunk.clear()

    aspects = {"first_frame_fidelity": 80, "prompt_adherence": 77, "motion_quality": 70,
               "temporal_consistency": 81, "visual_quality": 74, "camera_composition": 69}
    metagraph = MetagraphObserved(netuid=NETUID, owner_hotkey=hotkey("o", 0), hotkeys=(hotkey("o", 0), *miners),
                                  stakes_rao=tuple(range(MINERS + 1)))
    for task in range(TASKS):
        block = task * INTERVAL
        if block % 300 == 0:
            add(own, f"allowlist/{block}", block, AllowlistVerified(
                owner_hotkey=hotkey("o", 0), digest="d" * 64, interval=INTERVAL, validators=tuple(validators)))
        if block % EPOCH_LEN == 0:
            add(own, f"metagraph/{block}", block, metagraph)
            if (block // EPOCH_LEN) % 5 == 0:
                for uid, m in enumerate(miners, start=1):
                    add(own, f"miner/{m}/{block}", block, MinerChecked(
                        hotkey=m, uid=uid, commit_block=uid * 3, model_name=f"user/leoma-{m}", model_revision="r" * 40,
                        chute_id=f"chute-{uid}", chute_hot=True, model_hash=hashlib.sha256(m.encode()).hexdigest(),
                        valid=uid % 17 != 0, invalid_reason="" if uid % 17 else "chute_not_running", heartbeat=True))
        sampler = validators[task % VALIDATORS]
        add(sampler, f"task/{task}", block + 1, TaskOpened(
            task_id=task, interval=INTERVAL, sampler=sampler, block_hash="0x" + "ab" * 32, source_key=f"src/{task}.mp4",
            clip_start_ms=1000, clip_ms=5000, prompt="A slow pan over a harbour at dusk. " * 4, prompt_model="gemini",
            prompt_version="describe/v1", miners=tuple(miners)))
        for i, m in enumerate(miners):
            score = (task * 7 + i * 13) % 100
            add(sampler, f"verdict/{task}/{m}", block + 5, VerdictRecorded(
                task_id=task, miner=m, passed=score >= 40 + i % 30, overall=score, confidence=80, aspects=aspects,
                judge_model="gemini-3.1-flash-lite", prompt_version="evaluate/v1",
                reasoning="Motion is coherent; the first frame matches; minor flicker near the end. " * 2))
    block = TASKS * INTERVAL
    while count < TOTAL:
        block += 1
        add(own, f"head/{block}", block, ChainHeadObserved(block_hash=hashlib.sha256(str(block).encode()).hexdigest()))
    if chunk:
        log.import_events(chunk)
    log.close()


def measure(path: str) -> None:
    from leoma.consensus import DEFAULT
    from leoma.events import decode_body
    from leoma.log import EventLog
    from projections.epoch import KINDS, EpochFold, score_epoch

    validators = sorted(hotkey("v", i) for i in range(VALIDATORS))
    own = validators[0]
    log = EventLog(path, own=own, readonly=True)
    total = log.count()
    epoch = (TASKS * INTERVAL) // EPOCH_LEN
    epoch_block, prev_block = epoch * EPOCH_LEN, (epoch - 1) * EPOCH_LEN

    t = time.perf_counter()
    n = 0
    for row in log.rows():
        decode_body(row.body, row.v)
        n += 1
    decode_s = time.perf_counter() - t

    frontier = log.frontier()
    t = time.perf_counter()
    cold = score_epoch(log.rows(), own=own, epoch=epoch, epoch_block=epoch_block, netuid=NETUID,
                       consensus=DEFAULT, frontier=frontier)
    cold_s = time.perf_counter() - t
    # The same with the kinds filtered in SQL (pays off when other kinds dominate the log).
    t = time.perf_counter()
    cold_kinds = score_epoch(log.rows(kinds=KINDS), own=own, epoch=epoch, epoch_block=epoch_block, netuid=NETUID,
                             consensus=DEFAULT, frontier=frontier)
    cold_kinds_s = time.perf_counter() - t
    assert cold_kinds == cold

    # Warm: a fold that already holds everything up to the previous epoch's rows.
    boundary = max((r.seq for r in log.rows(kinds=KINDS, until_block=prev_block, descending=True, limit=1)), default=0)
    fold = EpochFold(own).apply_many(log.rows(kinds=KINDS, until_seq=boundary))
    fold.decide(epoch - 1, prev_block, NETUID, DEFAULT, frontier)
    t = time.perf_counter()
    fold.apply_many(log.rows(after=boundary))  # a seq range: the kind index would scan every row
    warm = fold.decide(epoch, epoch_block, NETUID, DEFAULT, frontier)
    warm_s = time.perf_counter() - t
    assert warm == cold, "incremental fold disagrees with score_epoch"
    log.close()

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"events            {total:,} (decoded {n:,})")
    print(f"epoch             {epoch} at block {epoch_block}: winner uid {cold.winner_uid} "
          f"({cold.burn_reason or 'paid'}), window {len(cold.window)} tasks, {len(cold.aggregates)} miners")
    print(f"decode            {decode_s:8.2f} s")
    print(f"score cold        {cold_s:8.2f} s   cold/decode = {cold_s / decode_s:5.2f}  (target <= 2)")
    print(f"  rows(kinds=...) {cold_kinds_s:8.2f} s   ratio       = {cold_kinds_s / decode_s:5.2f}")
    print(f"score warm        {warm_s:8.3f} s   warm/cold   = {warm_s / cold_s:6.4f} (target <= 0.05)")
    print(f"peak RSS          {rss_mb:8.0f} MB  (target <= 500)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="log to reuse (built there if missing)")
    parser.add_argument("--build", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(args.build)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or str(Path(tmp) / "bench.db")
        if not Path(path).exists():
            t = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--build", path], check=True)
            print(f"built             {time.perf_counter() - t:8.1f} s")
        measure(path)


if __name__ == "__main__":
    main()
