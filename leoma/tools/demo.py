"""A short, real tour of the event log for the README's first command (before the devnet).

Two validators record a rotation each in their own logs, one imports the other's chain with
its original hashes, both chains verify, and the result is exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from leoma.adapters.signing import keypair_from_uri
from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import Draft, EventLog
from leoma.log.events import AllowlistVerified, TaskClosed, TaskOpened, VerdictRecorded
from leoma.log.export import export

MINERS = ("5FaithfulMinerHotkeyxxxxxxxxxxxxxxxxxxxxxxxxx", "5StaticMinerHotkeyxxxxxxxxxxxxxxxxxxxxxxxxxxx")


def _rotation(log: EventLog, validators: tuple[str, ...], task_id: int, interval: int) -> int:
    block = task_id * interval + 1
    me = log.own or ""
    drafts = [
        Draft("allowlist/v1", block, AllowlistVerified(owner_hotkey=validators[0], digest="0" * 64,
                                                       interval=interval, validators=validators)),
        Draft(f"task/{task_id}/opened", block, TaskOpened(
            task_id=task_id, interval=interval, sampler=me, block_hash="ab" * 32, source_key="2026/11/demo.mp4",
            clip_start_ms=2000, clip_ms=5000, prompt="The camera pans left across a harbour.",
            prompt_model=DEFAULT.judge.description_model, prompt_version=DEFAULT.judge.describe_prompt,
            miners=MINERS)),
    ]
    for miner, overall in zip(MINERS, (88, 41)):
        drafts.append(Draft(f"verdict/{task_id}/{miner}", block + 3, VerdictRecorded(
            task_id=task_id, miner=miner, passed=overall >= DEFAULT.judge.pass_threshold, overall=overall,
            confidence=80, judge_model=DEFAULT.judge.evaluation_model, prompt_version=DEFAULT.judge.evaluate_prompt)))
    drafts.append(Draft(f"task/{task_id}/closed", block + 4, TaskClosed(task_id=task_id, evaluated=2, passed=1)))
    return len(log.append_many(drafts).events)


def run_demo(directory: Path) -> Iterator[str]:
    """Run the tour in `directory`, yielding one line per step."""
    directory.mkdir(parents=True, exist_ok=True)
    alice, bob = keypair_from_uri("//Alice").ss58_address, keypair_from_uri("//Bob").ss58_address
    validators = tuple(sorted((alice, bob)))
    interval = DEFAULT.rotation.interval
    with EventLog(directory / "alice.db", own=alice) as a, EventLog(directory / "bob.db", own=bob) as b:
        yield f"alice ({alice[:10]}…) recorded {_rotation(a, validators, 100, interval)} events in {directory / 'alice.db'}"
        yield f"bob   ({bob[:10]}…) recorded {_rotation(b, validators, 101, interval)} events in {directory / 'bob.db'}"
        again = _rotation(a, validators, 100, interval)
        yield f"alice recorded the same rotation again: still {a.count()} events (appends are idempotent; {again} matched)"
        imported = a.import_events(list(b.chain(bob)))
        yield f"alice imported {imported} of bob's events with their original hashes"
        report = a.verify()
        yield f"verify: {'ok' if report.ok else 'BROKEN'} — {report.checked} events in {report.origins} chains"
        for origin, head in a.frontier().items():
            yield f"  {origin[:10]}… head #{head.origin_seq} {head.hash[:16]}"
        out = directory / "events.jsonl"
        n = export(a, str(out), "jsonl")
        yield f"exported {n} events to {out}; try: leoma events tail --db {directory / 'alice.db'}"
