"""Benchmark: the event log against raw SQLite and plain msgspec, measured in the same run.

    .venv/bin/python tests/benchmarks/bench_log.py [--events 1000000]

Prints events/s and the ratios the project holds itself to (issue 3):
  append            >= 1/3 of raw sqlite3.executemany of the same rows in one transaction
  read+decode+fold  >= 1/2 of a plain SELECT + msgspec decode + fold
  database size     <= 600 bytes per event
  `leoma --help`    <= 3x `python -c "import click"`
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import msgspec

from leoma.log import events as ev
from leoma.log.eventlog import _INSERT, _SCHEMA, Draft, EventLog

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def ss58(r: random.Random) -> str:
    return "5" + "".join(r.choice(B58) for _ in range(47))


def realistic(n: int, seed: int = 7) -> list[tuple[str, list[Draft]]]:
    """Batches of ~300-byte bodies from 16 validators about 256 miners (80% verdicts)."""
    r = random.Random(seed)
    validators = [ss58(r) for _ in range(16)]
    miners = [ss58(r) for _ in range(256)]
    out: list[tuple[str, list[Draft]]] = []
    i = 0
    while i < n:
        origin = validators[r.randrange(16)]
        batch = []
        for _ in range(min(1000, n - i)):
            task = i // 256
            miner = miners[i % 256]
            x = r.random()
            if x < 0.8:
                score = r.randrange(101)
                body: ev.Body = ev.VerdictRecorded(
                    task_id=task, miner=miner, passed=score >= 75, overall=score, confidence=r.randrange(101),
                    aspects={"first_frame_fidelity": r.randrange(101), "prompt_adherence": r.randrange(101),
                             "temporal_consistency": r.randrange(101)},
                    judge_model="gemini-3.1-flash-lite", prompt_version="evaluate/v1",
                )
                key = f"verdict/{task}/{miner}/{i}"
            elif x < 0.95:
                body = ev.MinerResponded(task_id=task, miner=miner, status="accepted", latency_ms=r.randrange(90000),
                                         object_key=f"{task}/generated_videos/{miner}.mp4", sha256=r.randbytes(32).hex(),
                                         width=832, height=480, frames=81)
                key = f"response/{task}/{miner}/{i}"
            else:
                body = ev.MinerChecked(hotkey=miner, uid=i % 256, commit_block=4_000_000, model_name="org/leoma-" + miner[:8],
                                       model_revision=r.randbytes(20).hex(), chute_id=r.randbytes(8).hex(),
                                       valid=r.random() < 0.9, invalid_reason="")
                key = f"checked/{miner}/{i}"
            batch.append(Draft(key, 4_000_000 + i // 50, body))
            i += 1
        out.append((origin, batch))
    return out


def bench_append(batches: list[tuple[str, list[Draft]]], tmp: Path) -> tuple[float, float, int, int]:
    # Ours: append_many per batch, switching the writing origin as 16 validators would.
    path = tmp / "ours.db"
    log = EventLog(path, own="x")
    rows_for_raw = []
    t0 = time.perf_counter()
    for origin, batch in batches:
        log.own = origin
        log._own_head = None
        log.append_many(batch, at=1_795_000_000)
    ours = time.perf_counter() - t0
    log.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    n = log.count()
    for seq, oid, oseq, key, kh, kind, v, block, at, body, digest in log.conn.execute(
        "SELECT seq, origin_id, origin_seq, key, key_hash, kind, v, block, at, body, hash FROM events ORDER BY seq"
    ):
        rows_for_raw.append((oid, oseq, key, kh, kind, v, block, at, body, digest))
    log.close()
    size = path.stat().st_size
    # Raw: the same rows, same schema and indexes, one executemany in one transaction.
    raw_path = tmp / "raw.db"
    conn = sqlite3.connect(raw_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.executescript(_SCHEMA)
    conn.executemany("INSERT INTO origins (id, hotkey) VALUES (?, ?)", [(i, f"o{i}") for i in range(1, 17)])
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(_INSERT, rows_for_raw)
    conn.execute("COMMIT")
    raw = time.perf_counter() - t0
    conn.close()
    return n / ours, n / raw, size, n


def fold_ours(path: Path) -> tuple[float, Counter]:
    log = EventLog(path, readonly=True)
    t0 = time.perf_counter()
    passes: Counter = Counter()
    decode = ev.decode_body
    for row in log.rows(kinds=["verdict_recorded"]):
        body = decode(row.body, row.v)
        if body.passed:  # type: ignore[attr-defined]
            passes[(row.origin, body.miner)] += 1  # type: ignore[attr-defined]
    dt = time.perf_counter() - t0
    log.close()
    return dt, passes


def fold_plain(path: Path) -> tuple[float, Counter]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    names = dict(conn.execute("SELECT id, hotkey FROM origins"))
    dec = msgspec.json.Decoder(ev.VerdictRecorded)
    t0 = time.perf_counter()
    passes: Counter = Counter()
    for oid, body in conn.execute("SELECT origin_id, body FROM events WHERE kind = 'verdict_recorded' ORDER BY seq"):
        b = dec.decode(body)
        if b.passed:
            passes[(names[oid], b.miner)] += 1
    dt = time.perf_counter() - t0
    conn.close()
    return dt, passes


def cli_times(rounds: int = 7) -> tuple[float, float]:
    leoma = Path(sys.executable).parent / "leoma"
    ours, base = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run([str(leoma), "--help"], check=True, capture_output=True)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import click"], check=True, capture_output=True)
        base.append(time.perf_counter() - t0)
    return statistics.median(ours), statistics.median(base)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        batches = realistic(args.events)
        print(f"built {args.events:,} events in {time.perf_counter() - t0:.1f}s")
        ours_rate, raw_rate, size, n = bench_append(batches, tmp)
        del batches
        body_mean = sum(len(b) for (b,) in sqlite3.connect(tmp / "ours.db").execute("SELECT body FROM events")) / n
        print(f"append: leoma {ours_rate:,.0f} ev/s, raw executemany {raw_rate:,.0f} ev/s, "
              f"ratio {ours_rate / raw_rate:.2f} (target >= 0.33)")
        print(f"size: {size / n:.0f} bytes/event in SQLite (mean body {body_mean:.0f} B) (target <= 600)")
        folds_ours, folds_plain = [], []
        for _ in range(3):
            t, a = fold_ours(tmp / "ours.db")
            folds_ours.append(t)
            t, b = fold_plain(tmp / "ours.db")
            folds_plain.append(t)
            assert a == b, "the two folds disagree"
        verdicts = sum(1 for _ in sqlite3.connect(tmp / "ours.db").execute("SELECT 1 FROM events WHERE kind='verdict_recorded'"))
        to, tp = statistics.median(folds_ours), statistics.median(folds_plain)
        print(f"read+decode+fold ({verdicts:,} verdicts): leoma {verdicts / to:,.0f} ev/s, plain {verdicts / tp:,.0f} ev/s, "
              f"ratio {tp / to:.2f} (target >= 0.5)")
        t0 = time.perf_counter()
        log = EventLog(tmp / "ours.db", readonly=True)
        report = log.verify()
        print(f"verify: {report.checked:,} events in {time.perf_counter() - t0:.1f}s, ok={report.ok}")
        log.close()
    ours, base = cli_times()
    print(f"`leoma --help`: {ours * 1000:.0f} ms, `python -c 'import click'`: {base * 1000:.0f} ms, "
          f"ratio {ours / base:.2f} (target <= 3)")
    print(f"peak RSS {__import__('resource').getrusage(__import__('resource').RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; pid {os.getpid()}")


if __name__ == "__main__":
    main()
