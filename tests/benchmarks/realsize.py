"""A real-size validator log for the benchmarks, built once and cached under the system temp dir.

64 validators (or 16), 256 miners, a task every rotation (interval 10 blocks, epoch 180 blocks),
each task opened by its rightful sampler with one verdict per miner; the own validator's
allowlists, metagraphs and heartbeat miner checks; and every epoch's decision taken by the real
weight setter path (`weight_setter.decide_epoch`, from its checkpoint) and appended as
`leoma.log.decisions.drafts` -- except the last epoch, left undecided for the cold and warm runs.
The checkpoint as it stood before the last epoch is kept under `bench/checkpoint`.

The cache path names every parameter and the packaged consensus's digest, so a change of shape
or of the default consensus (which the decisions are stamped with) builds a new file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

INTERVAL = 10
EPOCH_LEN = 180
NETUID = 1
SAVED = "bench/checkpoint"


def hotkey(kind: str, i: int) -> str:
    return "5" + hashlib.sha256(f"{kind}{i}".encode()).hexdigest()[:47]


def cache_path(validators: int, miners: int, tasks: int) -> Path:
    folder = Path(os.environ.get("LEOMA_BENCH_CACHE", Path(tempfile.gettempdir()) / "leoma-bench"))
    folder.mkdir(parents=True, exist_ok=True)
    from leoma.log.consensus import DEFAULT

    return folder / f"realsize-v2-{validators}v-{miners}m-{tasks}t-{DEFAULT.digest[:8]}.db"


def names(validators: int, miners: int) -> tuple[list[str], list[str], str]:
    vals = sorted(hotkey("v", i) for i in range(validators))
    return vals, [hotkey("m", i) for i in range(miners)], vals[0]


def last_epoch(tasks: int) -> int:
    return (tasks * INTERVAL) // EPOCH_LEN


def ensure(validators: int = 64, miners: int = 256, tasks: int = 3840) -> Path:
    """The cached fixture's path, building it first if it is missing."""
    path = cache_path(validators, miners, tasks)
    if not path.exists():
        partial = path.with_suffix(".building")
        for leftover in partial.parent.glob(partial.name + "*"):
            leftover.unlink()
        t = time.perf_counter()
        build(str(partial), validators, miners, tasks)
        partial.rename(path)
        print(f"built {path.name} in {time.perf_counter() - t:.0f} s")
    return path


def build(path: str, validators: int, miners: int, tasks: int) -> None:
    from leoma.log import decisions
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import Draft, EventLog
    from leoma.log.events import (
        ZERO_HASH,
        AllowlistVerified,
        MetagraphObserved,
        MinerChecked,
        TaskOpened,
        VerdictRecorded,
        seal,
    )
    from leoma.services import weight_setter

    vals, mins, own = names(validators, miners)
    log = EventLog(path, own=own)
    heads: dict[str, tuple[int, str]] = {}
    chunk: list = []
    own_drafts: list = []

    def flush() -> None:
        if chunk:
            log.import_events(chunk)
            chunk.clear()
        if own_drafts:
            log.append_many(own_drafts)
            own_drafts.clear()

    def add(origin: str, key: str, block: int, body: object) -> None:
        if origin == own:
            own_drafts.append(Draft(key, block, body))  # type: ignore[arg-type]
            return
        seq, prev = heads.get(origin, (0, ZERO_HASH))
        event = seal(origin=origin, origin_seq=seq + 1, key=key, block=block, body=body, prev=prev)  # type: ignore[arg-type]
        heads[origin] = (seq + 1, event.hash)
        chunk.append(event)
        if len(chunk) >= 50_000:
            flush()

    aspects = {"first_frame_fidelity": 80, "prompt_adherence": 77, "motion_quality": 70,
               "temporal_consistency": 81, "visual_quality": 74, "camera_composition": 69}
    metagraph = MetagraphObserved(netuid=NETUID, owner_hotkey=hotkey("o", 0), hotkeys=(hotkey("o", 0), *mins),
                                  stakes_rao=tuple(range(miners + 1)))
    final = last_epoch(tasks)
    for task in range(tasks):
        block = task * INTERVAL
        if block % EPOCH_LEN == 0 and 0 < block // EPOCH_LEN < final:
            epoch = block // EPOCH_LEN
            flush()
            decision = weight_setter.decide_epoch(log, own=own, epoch=epoch, epoch_block=block, netuid=NETUID,
                                                  consensus=DEFAULT)
            log.append_many(decisions.drafts(decision, block=block))
        if block % 300 == 0:
            add(own, f"allowlist/{block}", block, AllowlistVerified(
                owner_hotkey=hotkey("o", 0), digest="d" * 64, interval=INTERVAL, validators=tuple(vals)))
        if block % EPOCH_LEN == 0:
            add(own, f"metagraph/{block}", block, metagraph)
            if (block // EPOCH_LEN) % 5 == 0:
                for uid, m in enumerate(mins, start=1):
                    add(own, f"miner/{m}/{block}", block, MinerChecked(
                        hotkey=m, uid=uid, commit_block=uid * 3, model_name=f"user/leoma-{m}", model_revision="r" * 40,
                        chute_id=f"chute-{uid}", chute_hot=True, model_hash=hashlib.sha256(m.encode()).hexdigest(),
                        valid=uid % 17 != 0, invalid_reason="" if uid % 17 else "chute_not_running", heartbeat=True))
        sampler = vals[task % validators]
        add(sampler, f"task/{task}/opened", block + 1, TaskOpened(
            task_id=task, interval=INTERVAL, sampler=sampler, block_hash="0x" + "ab" * 32, source_key=f"src/{task}.mp4",
            clip_start_ms=1000, clip_ms=5000, prompt="A slow pan over a harbour at dusk. " * 4, prompt_model="gemini",
            prompt_version="describe/v1", miners=tuple(mins)))
        for i, m in enumerate(mins):
            score = (task * 7 + i * 13) % 100
            add(sampler, f"verdict/{task}/{m}", block + 5, VerdictRecorded(
                task_id=task, miner=m, passed=score >= 40 + i % 30, overall=score, confidence=80, aspects=aspects,
                judge_model="gemini-3.1-flash-lite", prompt_version="evaluate/v1",
                reasoning="Motion is coherent; the first frame matches; minor flicker near the end. " * 2))
    flush()
    saved = log.get_state(weight_setter.CHECKPOINT)
    assert saved is not None
    log.set_state(SAVED, saved)
    log.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()


def run_child(script: str, name: str, path: Path, args: object) -> dict:
    """Run one measured path of `script` in a fresh process (so its peak RSS is its own); its
    last line of output is the JSON figure."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, script, "--child", name, "--db", str(path), "--validators", str(args.validators),  # type: ignore[attr-defined]
         "--miners", str(args.miners), "--tasks", str(args.tasks)],  # type: ignore[attr-defined]
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
