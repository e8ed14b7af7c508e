"""Benchmark: the decision and the tools that read it, at real size, on the production paths.

    python tests/benchmarks/bench_scoring.py                    # 64 validators, 256 miners, ~1M events
    python tests/benchmarks/bench_scoring.py --validators 16 --tasks 400   # a quick small run

The log (`realsize.py`, built once and cached under the system temp dir) holds ~1,000,000 events
and every epoch's real-size decision but the last. Each figure is measured in a fresh child
process (so the peak RSS is that path's own), twice, against the plainest baseline on the same
file in the same run: `SELECT body FROM events` + a msgspec decode of every body.

* cold decision: `weight_setter.decide_epoch` with no checkpoint (folds everything), plus the
  split into the events it appends;
* warm step: the same from the checkpoint stored after the previous epoch (reads what is new);
* `get-rank`, `explain`, `replay EPOCH`, `replay --all`: the `leoma` commands, in process;
* API cold start: `ApiState.refresh()` over the whole log, then its decision;
* sampler: one own task's responses and verdicts (`rows_since_key`), against reading every
  own row of those kinds as before.

Targets (issue 15): cold <= 2x plain; warm <= cold/20; get-rank/explain <= 0.2 s; replay EPOCH
<= 2x cold; replay --all <= 3x cold; API <= 2x plain; every peak RSS <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realsize  # noqa: E402

PATHS = ("plain", "cold", "warm", "get-rank", "explain", "get-rank-process", "replay", "replay-all", "api", "sampler",
         "sampler-before")


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, path: str, validators: int, miners: int, tasks: int) -> dict:
    """Run one path in this (fresh) process; returns seconds and peak RSS."""
    from leoma.log.consensus import DEFAULT

    vals, mins, own = realsize.names(validators, miners)
    epoch = realsize.last_epoch(tasks)
    epoch_block = epoch * realsize.EPOCH_LEN
    extra: dict = {}
    if name == "plain":
        import sqlite3

        import msgspec

        from leoma.log.events import Payload

        decoder = msgspec.json.Decoder(Payload)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        t = time.perf_counter()
        n = 0
        for (body,) in conn.execute("SELECT body FROM events"):
            decoder.decode(body)
            n += 1
        seconds = time.perf_counter() - t
        extra["events"] = n
    elif name in ("cold", "warm"):
        from leoma.log import decisions
        from leoma.log.eventlog import EventLog
        from leoma.services import weight_setter

        log = EventLog(path, own=own)
        saved = log.get_state(realsize.SAVED)
        if name == "cold":
            log.conn.execute("DELETE FROM state WHERE name = ?", (weight_setter.CHECKPOINT,))
        else:
            log.set_state(weight_setter.CHECKPOINT, saved)  # type: ignore[arg-type]
        t = time.perf_counter()
        decision = weight_setter.decide_epoch(log, own=own, epoch=epoch, epoch_block=epoch_block,
                                              netuid=realsize.NETUID, consensus=DEFAULT)
        drafts = decisions.drafts(decision, block=epoch_block)
        seconds = time.perf_counter() - t
        extra.update(winner_uid=decision.winner_uid, parts=len(drafts) - 1, miners=len(decision.aggregates),
                     checkpoint_kb=round(len(log.get_state(weight_setter.CHECKPOINT) or b"") / 1024))
        log.set_state(weight_setter.CHECKPOINT, saved)  # type: ignore[arg-type]
        log.close()
    elif name in ("get-rank", "explain", "replay", "replay-all"):
        from click.testing import CliRunner

        # The commands import lazily: load those modules first, so the figure is the command's
        # work on the log (interpreter start and imports are a fixed cost; see `get-rank-process`).
        import leoma.log.decisions
        import leoma.log.eventlog
        import leoma.tools.replay
        import projections.epoch
        import projections.ranking  # noqa: F401
        from leoma_cmd.main import cli

        args = {"get-rank": ["get-rank", "--json"], "explain": ["explain", mins[3], "--json"],
                "replay": ["replay", str(epoch - 1)], "replay-all": ["replay", "--all"]}[name]
        runner = CliRunner()
        t = time.perf_counter()
        result = runner.invoke(cli, [*args, "--db", path])
        seconds = time.perf_counter() - t
        if result.exit_code != 0:
            raise SystemExit(f"{args} failed ({result.exit_code}): {result.output[-2000:]}")
        extra["output_lines"] = result.output.count("\n")
    elif name == "get-rank-process":
        t = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "leoma"), "get-rank", "--json", "--db", path],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - t
    elif name == "api":
        from leoma.api.state import ApiState
        from leoma.log.eventlog import EventLog

        log = EventLog(path, readonly=True)
        t = time.perf_counter()
        state = ApiState(log, own=realsize.hotkey("api", 0), consensus=DEFAULT)
        folded = state.refresh()
        dec = state.decision(own)
        seconds = time.perf_counter() - t
        extra.update(folded=folded, reproduced=dec.reproduced if dec else None, tasks_kept=len(state.tasks))
    elif name in ("sampler", "sampler-before"):
        from leoma.log.events import decode_body
        from leoma.log.eventlog import EventLog

        log = EventLog(path, readonly=True)
        task = max(t for t in range(tasks) if t % validators == 0)
        kinds = ["miner_responded", "verdict_recorded", "judge_failed"]
        t = time.perf_counter()
        if name == "sampler":
            rows = [decode_body(r.body, r.v) for r in log.rows_since_key(own, f"task/{task}/opened", kinds)]
        else:
            rows = [decode_body(r.body, r.v) for r in log.rows(kinds=kinds, origin=own)]
        mine = [b for b in rows if b.task_id == task]  # type: ignore[attr-defined]
        seconds = time.perf_counter() - t
        extra["verdicts"] = len(mine)
    else:
        raise SystemExit(f"unknown path {name}")
    # The machine is shared: the 1-minute load average at the end of each figure, to read it by.
    return {"name": name, "seconds": seconds, "rss_mb": _rss(), "load": round(os.getloadavg()[0], 1), **extra}


def run_child(name: str, path: Path, args: argparse.Namespace) -> dict:
    return realsize.run_child(__file__, name, path, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=64)
    parser.add_argument("--miners", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=3840)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", help="comma-separated paths to measure (default: all)")
    parser.add_argument("--pairs", action="store_true",
                        help="run each path right after its own baseline (plain or cold), for a shared machine")
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.db, args.validators, args.miners, args.tasks)))
        return
    path = realsize.ensure(args.validators, args.miners, args.tasks)
    wanted = args.only.split(",") if args.only else list(PATHS)
    results: dict[str, list[dict]] = {}
    if args.pairs:
        _pairs(path, args, wanted)
        return
    for run in range(args.runs):
        for name in ["plain", *[w for w in wanted if w != "plain"]]:
            results.setdefault(name, []).append(run_child(name, path, args))
    plain = [r["seconds"] for r in results["plain"]]
    cold = [r["seconds"] for r in results.get("cold", [])]
    targets = {"cold": ("plain", 2.0), "warm": ("cold", 1 / 20), "replay": ("cold", 2.0), "replay-all": ("cold", 3.0),
               "api": ("plain", 2.0)}
    print(f"log: {path.name}, {results['plain'][0]['events']:,} events, {path.stat().st_size / 1e6:.0f} MB")
    print(f"{'path':15} {'run':>3} {'seconds':>9} {'/plain':>7} {'/cold':>7} {'RSS MB':>7}  target / notes")
    for name, runs in results.items():
        for i, r in enumerate(runs):
            ratio_p = r["seconds"] / plain[i]
            ratio_c = r["seconds"] / cold[i] if cold else float("nan")
            base, limit = targets.get(name, ("", 0.0))
            goal = f"{base} x{limit:g}" if base else ("<= 0.2 s" if name in ("get-rank", "explain") else "")
            notes = {k: v for k, v in r.items() if k not in ("name", "seconds", "rss_mb")}
            print(f"{name:15} {i + 1:>3} {r['seconds']:9.3f} {ratio_p:7.2f} {ratio_c:7.3f} {r['rss_mb']:7.0f}  "
                  f"{goal} {notes}")


BASELINE = {"cold": "plain", "api": "plain", "replay": "cold", "replay-all": "cold", "warm": "cold"}


def _pairs(path: Path, args: argparse.Namespace, wanted: list[str]) -> None:
    """Each path measured right after a fresh measure of its baseline, so both see the same load."""
    print(f"log: {path.name}, {path.stat().st_size / 1e6:.0f} MB; each path right after its baseline")
    print(f"{'path':15} {'run':>3} {'seconds':>9} {'baseline':>9} {'base s':>8} {'ratio':>7} {'RSS MB':>7} {'load':>5}")
    seen: dict[str, list[tuple[float, float]]] = {}
    for run in range(args.runs):
        for name in wanted:
            base = BASELINE.get(name)
            b = run_child(base, path, args) if base else None
            r = run_child(name, path, args)
            ratio = f"{r['seconds'] / b['seconds']:7.3f}" if b else "      -"
            print(f"{name:15} {run + 1:>3} {r['seconds']:9.3f} {base or '-':>9} "
                  f"{b['seconds'] if b else 0:8.3f} {ratio} {r['rss_mb']:7.0f} {r['load']:5.1f}", flush=True)
            if b:
                seen.setdefault(name, []).append((r["seconds"], b["seconds"]))
    # Both sides of a pair swing by half on a shared machine: the median pair, and the best run
    # of the path over the best run of its baseline (each side's least disturbed run).
    for name, pairs in seen.items():
        ratios = sorted(r / b for r, b in pairs)
        mid = len(ratios) // 2
        median = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
        best = min(r for r, _ in pairs) / min(b for _, b in pairs)
        print(f"{name}: median of {len(ratios)} pairs {median:.3f}x {BASELINE[name]}, best over best {best:.3f}x, "
              f"range {ratios[0]:.3f}-{ratios[-1]:.3f}x")


if __name__ == "__main__":
    main()
