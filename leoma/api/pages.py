"""What the dashboard's task, miner and agreement views read, built from `ApiState`.

These add to `views` (the seed's response shapes) without changing them:

* `task_page`: one task as a person looks at it — the conditioning frame, the original clip and
  every miner's video, and under each video every validator's verdict (aspect scores,
  reasoning, issues) and whatever the video checks measured;
* `miner_history`: a miner's verdicts per validator over time (the miner page's chart);
* `agreement_strip`: per epoch, whether the validators' decisions agreed, one held, or differed.

Measurements are shown generically, because the video checks grow: the fields of a miner's
`miner_responded` beyond its outcome (size, frames, and whatever newer versions record), and
every other event of the sampler that names the task and the miner (`judge_failed`, the video
gates' events) — collected by `TaskExtras`, an incremental fold of its own over the log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from leoma.api.state import ApiState, Decision
from leoma.api.views import iso, rate
from leoma.log.eventlog import EventLog
from leoma.log.events import EpochScored
from leoma.mirror.seedformat import first_frame_key, original_clip_key

__all__ = ["TaskExtras", "agreement_strip", "epoch_status", "miner_history", "task_page"]

Media = Callable[[str, str], Awaitable[str | None]]
"""`media(validator, key)` -> a URL the browser can load, or None."""

# Kinds `ApiState` folds itself or that never name a miner's video: not measurements.
_NOT_EXTRAS = frozenset({
    "task_opened", "miner_responded", "verdict_recorded", "task_closed", "chain_head_observed",
    "metagraph_observed", "commitment_observed", "allowlist_verified", "allowlist_rejected", "miner_checked",
    "peer_segment_imported", "peer_segment_rejected", "epoch_scored", "weights_submitted", "weights_confirmed",
    "weights_refused", "conflict_recorded", "admin_acted", "miner_report_received", "epoch_detail",
    "consensus_recorded",
})
# A response's outcome fields; the rest of a `miner_responded` body is what was measured.
_RESPONSE_OUTCOME = frozenset({"task_id", "miner", "status", "failure_class", "detail", "latency_ms", "object_key",
                               "sha256", "kind"})
_VERDICT_SHOWN = frozenset({"task_id", "miner", "passed", "overall", "confidence", "aspects", "judge_model",
                            "prompt_version", "reasoning", "major_issues", "kind"})
MAX_EXTRAS_PER_MINER = 16
HISTORY_TASKS = 500


def _present(values: dict[str, Any], drop: frozenset[str], prefix: str = "") -> dict[str, Any]:
    """The fields of a body not in `drop` that hold something (zero, empty and false are 'not measured').

    A nested object (the video gates' measurements) is flattened to `name.field` entries.
    """
    out: dict[str, Any] = {}
    for k, v in sorted(values.items()):
        if k in drop or v in (0, "", None, [], {}, False):
            continue
        if isinstance(v, dict):
            out.update(_present(v, frozenset(), f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


class TaskExtras:
    """Every event naming a task and a miner that `ApiState` does not fold, per (task, origin, miner)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.last_seq = 0
        self.by_task: dict[int, dict[str, dict[str, list[dict[str, Any]]]]] = {}

    def refresh(self) -> None:
        """Read the rows appended since the last call."""
        for row in self.log.rows(after=self.last_seq):
            self.last_seq = row.seq
            if row.kind in _NOT_EXTRAS:
                continue
            try:
                body = msgspec.json.decode(row.body)
            except msgspec.DecodeError:
                continue
            if not isinstance(body, dict):
                continue
            task, miner = body.get("task_id"), body.get("miner")
            if not isinstance(task, int) or isinstance(task, bool) or not isinstance(miner, str):
                continue
            items = self.by_task.setdefault(task, {}).setdefault(row.origin, {}).setdefault(miner, [])
            if len(items) < MAX_EXTRAS_PER_MINER:
                items.append({"kind": row.kind, "block": row.block,
                              "fields": _present(body, frozenset({"task_id", "miner", "kind"}))})

    def of(self, task_id: int, origin: str, miner: str) -> list[dict[str, Any]]:
        return list(self.by_task.get(task_id, {}).get(origin, {}).get(miner, []))


def _verdict(origin: str, held: tuple[Any, int, int, int]) -> dict[str, Any]:
    v, at, _, _ = held
    raw = msgspec.to_builtins(v)
    return {"validator_hotkey": origin, "passed": v.passed, "overall_score": v.overall, "confidence": v.confidence,
            "aspect_scores": dict(sorted(v.aspects.items())), "reasoning": v.reasoning or None,
            "major_issues": list(v.major_issues), "judge_model": v.judge_model, "prompt_version": v.prompt_version,
            "evaluated_at": iso(at), "other": _present(raw, _VERDICT_SHOWN)}


async def task_page(state: ApiState, extras: TaskExtras, task_id: int, media: Media) -> dict[str, Any] | None:
    """A task with its media and, per miner, the video, every verdict and every measurement."""
    from leoma.api.views import task_record

    rec = task_record(state, task_id)
    if rec is None:
        return None
    sampler = rec.origin
    # The sampler's own verdict first, then any other validator's (a failover's) by hotkey.
    records = sorted(state.tasks.get(task_id, {}).values(), key=lambda r: (r.origin != sampler, r.origin))
    opened = rec.opened
    miners = sorted(set(rec.responses) | set(opened.miners if opened else ())
                    | {m for r in records for m in r.verdicts})
    entries: list[dict[str, Any]] = []
    for m in miners:
        resp = rec.responses.get(m)
        verdicts = [_verdict(r.origin, r.verdicts[m]) for r in records if m in r.verdicts]
        video = None
        if resp is not None and resp[0].status == "accepted" and resp[0].object_key:
            video = await media(sampler, resp[0].object_key)
        own = rec.verdicts.get(m)
        entries.append({
            "miner_hotkey": m,
            "status": resp[0].status if resp else "no response",
            "failure_class": (resp[0].failure_class or None) if resp else None,
            "detail": (resp[0].detail or None) if resp else None,
            "latency_ms": (resp[0].latency_ms or None) if resp else None,
            "video_url": video,
            "passed": own[0].passed if own else None,
            "overall_score": own[0].overall if own else None,
            "verdicts": verdicts,
            "measurements": _present(msgspec.to_builtins(resp[0]), _RESPONSE_OUTCOME) if resp else {},
            "checks": [x for r in records for x in extras.of(task_id, r.origin, m)],
        })
    # Videos first (best verdict first), then the miners that returned nothing.
    entries.sort(key=lambda e: (e["video_url"] is None, e["passed"] is not True, -(e["overall_score"] or 0),
                                e["miner_hotkey"]))
    return {
        "task_id": task_id, "description": opened.prompt if opened else None, "sampler_hotkey": sampler,
        "opened_block": rec.opened_block or None, "opened_at": iso(rec.opened_at),
        "interval": opened.interval if opened else None, "clip_ms": opened.clip_ms if opened else None,
        "source_key": opened.source_key if opened else None,
        "first_frame_url": await media(sampler, first_frame_key(task_id)),
        "original_clip_url": await media(sampler, original_clip_key(task_id)),
        "miners": entries, "miner_count": len(entries),
        "previous_task_id": max((t for t in state.tasks if t < task_id), default=None),
        "next_task_id": min((t for t in state.tasks if t > task_id), default=None),
    }


def miner_history(state: ApiState, miner: str, dec: Decision | None, limit: int = HISTORY_TASKS) -> dict[str, Any]:
    """Each validator's verdicts on `miner`, oldest task first, over the newest `limit` tasks."""
    series: dict[str, list[dict[str, Any]]] = {}
    for task_id in sorted(state.tasks)[-limit:]:
        for origin, rec in sorted(state.tasks[task_id].items()):
            held = rec.verdicts.get(miner)
            if held is None:
                continue
            v, at, _, _ = held
            series.setdefault(origin, []).append({
                "task_id": task_id, "block": rec.opened_block or None, "evaluated_at": iso(at),
                "passed": v.passed, "overall_score": v.overall, "confidence": v.confidence})
    agg = next((a for a in (dec.decision.aggregates if dec else ()) if a.hotkey == miner), None)
    return {
        "miner_hotkey": miner,
        "validators": [{"validator_hotkey": o, "points": pts, "passed": sum(p["passed"] for p in pts),
                        "evaluated": len(pts)} for o, pts in sorted(series.items())],
        "rank": (agg.rank or None) if agg else None, "eligible": agg.eligible if agg else None,
        "reason": (agg.reason or None) if agg else None, "pass_rate": rate(agg.avg_rate) if agg else None,
        "epoch": dec.epoch if dec else None, "winner": (dec.decision.winner == miner) if dec else False,
    }


def _held(d: EpochScored) -> bool:
    # A validator without the data to decide holds instead of guessing: it keeps an earlier
    # epoch's weights (`keeps_epoch`, the fail-closed rule) or says so in its reason.
    if getattr(d, "keeps_epoch", -1) >= 0 or getattr(d, "held", False):
        return True
    reason = d.burn_reason.lower()
    return "hold" in reason or "held" in reason or "withheld" in reason


def epoch_status(decisions: dict[str, EpochScored]) -> str:
    """`agreed`, `held` (someone held, the others agree) or `differed` for one epoch's decisions."""
    views = {(d.winner, tuple((w.uid, w.weight) for w in d.weights)) for d in decisions.values() if not _held(d)}
    if len(views) > 1:
        return "differed"
    if any(_held(d) for d in decisions.values()):
        return "held"
    return "agreed"


def _anchor_view(state: ApiState, origin: str, epoch: int) -> dict[str, Any] | None:
    a = state.anchors.get(origin, {}).get(epoch)
    return None if a is None else {"size": a.size, "head": a.head, "block": a.commit_block}


def agreement_strip(state: ApiState, limit: int = 60) -> dict[str, Any]:
    """Per epoch (newest `limit`), every validator's newest decision and whether they agreed.

    Under the anchored rule a validator that cannot read what the anchors cover records
    `epoch_held` instead of a decision: it is shown as held, with the peer and the reason; each
    validator also shows the anchor it committed for the epoch (size, head, block), if any.
    """
    per_epoch: dict[int, dict[str, EpochScored]] = {}
    for origin, items in sorted(state.decisions.items()):
        for _, oseq, _, d in sorted(items, key=lambda x: x[1]):
            per_epoch.setdefault(d.epoch, {})[origin] = d  # the latest in the origin's chain wins
    expected = sorted(set(state.validators()) | set(state.decisions))
    epochs = []
    for epoch in sorted(set(per_epoch) | set(state.holds))[-limit:]:
        got = per_epoch.get(epoch, {})
        holds = {o: h for o, h in state.holds.get(epoch, {}).items() if o not in got}
        status = epoch_status(got) if got else "held"
        if holds and status == "agreed":
            status = "held"
        rows: list[dict[str, Any]] = [{"validator_hotkey": o, "winner": d.winner or None, "winner_uid": d.winner_uid,
                 "burn_reason": d.burn_reason or None, "held": _held(d), "held_reason": None, "held_peer": None,
                 "anchor": _anchor_view(state, o, epoch)} for o, d in got.items()]
        rows += [{"validator_hotkey": o, "winner": None, "winner_uid": None, "burn_reason": None, "held": True,
                  "held_reason": h.reason, "held_peer": h.peer, "anchor": _anchor_view(state, o, epoch)}
                 for o, h in holds.items()]
        epochs.append({"epoch": epoch, "status": status, "decided": len(got), "expected": len(expected),
                       "validators": sorted(rows, key=lambda r: r["validator_hotkey"])})
    counts = {s: sum(1 for e in epochs if e["status"] == s) for s in ("agreed", "held", "differed")}
    return {"epochs": epochs, "validators": expected, **counts}
