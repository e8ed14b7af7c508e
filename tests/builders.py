"""Build event logs for tests: several origins, hash-chained, as `Row`s or in a real `EventLog`.

    b = LogBuilder()
    b.allowlist("val-A", ["val-A", "val-B"], interval=50, block=1)
    b.opened("val-A", task_id=2, block=100)
    b.verdict("val-A", task_id=2, miner="m1", passed=True, block=110)
    rows = b.rows()                 # light Rows in insertion order (seq 1, 2, ...)
    log = b.to_log(tmp_path / "l.db", own="val-A")   # the same events in a SQLite EventLog

Every helper takes `origin` (who recorded it) and `block` (the envelope's chain block); keys are
the natural ones (`verdict/<task>/<miner>`) unless given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from leoma.log.eventlog import EventLog, Row
from leoma.log.events import (
    ZERO_HASH,
    AllowlistVerified,
    Body,
    CommitmentObserved,
    EpochScored,
    Event,
    JudgeFailed,
    MetagraphObserved,
    MinerChecked,
    TaskOpened,
    VerdictRecorded,
    seal,
)

NETUID = 1


class LogBuilder:
    """Events of several origins, each origin's chain continued as they are added."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._heads: dict[str, tuple[int, str]] = {}

    def add(self, origin: str, body: Body, *, block: int, key: str | None = None) -> Event:
        """Seal `body` as `origin`'s next event at `block`."""
        seq, prev = self._heads.get(origin, (0, ZERO_HASH))
        event = seal(origin=origin, origin_seq=seq + 1, key=key or f"{body.kind_name()}/{seq + 1}",
                     block=block, body=body, prev=prev)
        self._heads[origin] = (seq + 1, event.hash)
        self.events.append(event)
        return event

    # -- the kinds the scoring reads -----------------------------------------------------

    def allowlist(self, origin: str, validators: Sequence[str], *, interval: int, block: int,
                  owner: str = "owner") -> Event:
        body = AllowlistVerified(owner_hotkey=owner, digest="d" * 64, interval=interval,
                                 validators=tuple(sorted(set(validators))))
        return self.add(origin, body, block=block, key=f"allowlist/{block}/{len(self.events)}")

    def metagraph(self, origin: str, hotkeys: Sequence[str], *, block: int, netuid: int = NETUID) -> Event:
        body = MetagraphObserved(netuid=netuid, owner_hotkey=hotkeys[0] if hotkeys else "", hotkeys=tuple(hotkeys))
        return self.add(origin, body, block=block, key=f"metagraph/{netuid}/{block}/{len(self.events)}")

    def commitment(self, origin: str, hotkey: str, *, commit_block: int, block: int, data: str = "{}",
                   count: int = 1, netuid: int = NETUID) -> Event:
        body = CommitmentObserved(netuid=netuid, hotkey=hotkey, commit_block=commit_block, commit_count=count, data=data)
        return self.add(origin, body, block=block, key=f"commitment/{hotkey}/{commit_block}/{len(self.events)}")

    def checked(self, origin: str, hotkey: str, *, uid: int, block: int, valid: bool = True, reason: str = "",
                commit_block: int = 0, model_hash: str = "") -> Event:
        body = MinerChecked(hotkey=hotkey, uid=uid, commit_block=commit_block, valid=valid,
                            invalid_reason=reason, model_hash=model_hash or f"hash-{hotkey}")
        return self.add(origin, body, block=block, key=f"miner/{hotkey}/{len(self.events)}")

    def opened(self, origin: str, task_id: int, *, block: int, interval: int = 50,
               miners: Sequence[str] = ()) -> Event:
        body = TaskOpened(task_id=task_id, interval=interval, sampler=origin, block_hash="0x" + "ab" * 32,
                          source_key="clips/source.mp4", clip_start_ms=0, clip_ms=5000, prompt="a prompt",
                          prompt_model="gemini", prompt_version="describe/v1", miners=tuple(miners))
        return self.add(origin, body, block=block, key=f"task/{task_id}")

    def verdict(self, origin: str, task_id: int, miner: str, passed: bool, *, block: int,
                key: str | None = None) -> Event:
        body = VerdictRecorded(task_id=task_id, miner=miner, passed=passed, overall=80 if passed else 40,
                               judge_model="gemini", prompt_version="evaluate/v1", reasoning="because")
        return self.add(origin, body, block=block, key=key or f"verdict/{task_id}/{miner}")

    def judge_failed(self, origin: str, task_id: int, miner: str, *, block: int) -> Event:
        body = JudgeFailed(task_id=task_id, miner=miner, judge_model="gemini", prompt_version="evaluate/v1",
                           attempts=3, reason="quota")
        return self.add(origin, body, block=block, key=f"judge/{task_id}/{miner}")

    # -- outputs ---------------------------------------------------------------------------

    def rows(self, events: Iterable[Event] | None = None) -> list[Row]:
        """Light rows (as `EventLog.rows` yields them), numbered in the given order."""
        return rows_of(self.events if events is None else events)

    def heads(self) -> dict[str, tuple[int, str]]:
        """Each origin's last `(origin_seq, hash)`: a frontier."""
        return dict(sorted(self._heads.items()))

    def to_log(self, path: str | Path, *, own: str | None = None) -> EventLog:
        """A SQLite `EventLog` at `path` holding every event (own ones included, as imports)."""
        log = EventLog(path, own=own)
        log.import_events(self.events)
        return log


def rows_of(events: Iterable[Event]) -> list[Row]:
    """`Row`s for events, local `seq` = position in `events` (1-based)."""
    return [
        Row(i, e.origin, e.origin_seq, e.key, e.kind, e.v, e.block, bytes(e.body))
        for i, e in enumerate(events, start=1)
    ]


def decided_api_log(b: LogBuilder, tmp_path: Path, epochs: range, *, own: str, length: int,
                    stored: Callable[[int, EpochScored, tuple[Any, ...]], tuple[EpochScored, tuple[Any, ...]]]
                    | None = None) -> tuple[EventLog, EpochScored]:
    """`b`'s events as `own`'s log that decides each of `epochs` (warm fold, decisions appended),
    then imported whole into the owner API's log (`tmp_path/api.db`, own `api`); with the last
    decision as the fold made it. `stored(epoch, small, parts)`, if given, returns what is
    appended instead of the decision's split form (a signer's inconsistent decision)."""
    from leoma.log import decisions
    from leoma.log.consensus import DEFAULT
    from leoma.log.eventlog import Draft
    from projections.epoch import EpochFold

    log = b.to_log(tmp_path / "v.db", own=own)
    seen, fold = 0, EpochFold(own)
    for epoch in epochs:
        fold.apply_many(log.rows(after=seen))
        seen = log.last_seq()
        decision = fold.decide(epoch, epoch * length, NETUID, DEFAULT, log.frontier(until_seq=seen))
        if stored is None:
            log.append_many(decisions.drafts(decision, block=epoch * length))
        else:
            small, parts = stored(epoch, *decisions.split(decision))
            log.append_many([*(Draft(decisions.detail_key(epoch, p.part), epoch * length, p) for p in parts),
                             Draft(decisions.scored_key(epoch), epoch * length, small)])
    api_log = EventLog(tmp_path / "api.db", own="api")
    api_log.import_events([s.event for s in log.events()])
    log.close()
    return api_log, decision
