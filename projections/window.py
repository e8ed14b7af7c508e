"""The scoring window: which opened tasks count, who sampled each, and which are settled.

Two fixes of the seed on purpose:

* Only the rightful sampler may produce a task (seed-spec §12.5). A `task_opened` claim counts
  only if its origin is the validator the failover schedule allows at the claim's block; every
  other claim is reported in `rejected` with its reason. When two rightful claims exist (the
  primary opened late-ish and a backup also opened after the grace), the one with the lower
  failover step wins, then the earlier block, then the lower hotkey.
* The settle margin counts rotation indices, not produced tasks (§12.4): the window's newest
  task is at most `epoch_block // interval - settle_margin`, whether or not the tasks above it
  were produced. Two validators reading at different moments agree once they hold the same
  settled tasks. When every rotation was produced this equals the seed's window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from projections.rotation import failover_step_at, rightful_sampler_at


class TaskClaim(NamedTuple):
    """One validator claiming task `task_id` with a `task_opened` recorded at chain `block`."""

    origin: str
    task_id: int
    block: int


class RejectedClaim(msgspec.Struct, frozen=True, kw_only=True):
    """A claim that does not count, and why."""

    origin: str
    task_id: int
    block: int
    reason: str


class CanonicalTasks(msgspec.Struct, frozen=True, kw_only=True):
    """Each produced task's canonical sampler (`tasks`), and the claims that did not count."""

    tasks: dict[int, str]
    rejected: tuple[RejectedClaim, ...] = ()


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """The settled window: task ids ascending, and the validators that sampled them, sorted."""

    tasks: tuple[int, ...]
    active: tuple[str, ...]
    samplers: dict[int, str] = {}


def canonical_tasks(
    claims: Iterable[TaskClaim], validators: Sequence[str], interval: int, grace: int
) -> CanonicalTasks:
    """Keep, per task, the claim of the rightful sampler at its block; report every other claim."""
    ring = sorted(set(validators))
    allowed = set(ring)
    best: dict[int, tuple[int, int, str]] = {}
    rejected: list[RejectedClaim] = []
    # Sorting first makes both the choice and the report independent of arrival order.
    unique = sorted(set(claims), key=lambda c: (c.task_id, c.block, c.origin))
    for c in unique:
        if c.origin not in allowed:
            rejected.append(RejectedClaim(origin=c.origin, task_id=c.task_id, block=c.block, reason="not allowlisted"))
            continue
        rightful = rightful_sampler_at(ring, interval, grace, c.task_id, c.block)
        if rightful != c.origin:
            reason = (
                f"opened at block {c.block}, outside the task's rotation"
                if rightful is None
                else f"not the rightful sampler at block {c.block} (that is {rightful})"
            )
            rejected.append(RejectedClaim(origin=c.origin, task_id=c.task_id, block=c.block, reason=reason))
            continue
        rank = (failover_step_at(ring, interval, grace, c.task_id, c.block), c.block, c.origin)
        held = best.get(c.task_id)
        if held is None or rank < held:
            if held is not None:
                rejected.append(RejectedClaim(origin=held[2], task_id=c.task_id, block=held[1],
                                              reason=f"task already opened by {c.origin} at block {c.block}"))
            best[c.task_id] = rank
        elif held[2] != c.origin:
            rejected.append(RejectedClaim(origin=c.origin, task_id=c.task_id, block=c.block,
                                          reason=f"task already opened by {held[2]} at block {held[1]}"))
    rejected.sort(key=lambda r: (r.task_id, r.block, r.origin, r.reason))
    return CanonicalTasks(tasks={t: best[t][2] for t in sorted(best)}, rejected=tuple(rejected))


def canonical_in_ring_order(claims: Iterable[TaskClaim], validators: Sequence[str]) -> CanonicalTasks:
    """The seed's rule (migration profile): per task, the first producer in failover order.

    Walking `V[(task + step) % n]` for `step = 0 .. n-1`, the first validator that produced the
    task is its sampler, whatever the block (seed-spec §6.3, `resolve_canonical_samplers`).
    """
    ring = sorted(set(validators))
    allowed = set(ring)
    producers: dict[int, set[str]] = {}
    rejected: list[RejectedClaim] = []
    for c in sorted(set(claims), key=lambda c: (c.task_id, c.block, c.origin)):
        if c.origin not in allowed:
            rejected.append(RejectedClaim(origin=c.origin, task_id=c.task_id, block=c.block, reason="not allowlisted"))
        else:
            producers.setdefault(c.task_id, set()).add(c.origin)
    tasks: dict[int, str] = {}
    for task_id in sorted(producers):
        for step in range(len(ring)):
            candidate = ring[(task_id + step) % len(ring)]
            if candidate in producers[task_id]:
                tasks[task_id] = candidate
                break
    return CanonicalTasks(tasks=tasks, rejected=tuple(rejected))


def newest_settled_index(epoch_block: int, interval: int, settle_margin: int) -> int:
    """The highest task id a window for `epoch_block` may hold."""
    return epoch_block // max(1, interval) - max(0, settle_margin)


def lookback_floor(epoch_block: int, interval: int, max_lookback: int) -> int | None:
    """The lowest task id a window may hold (None when the lookback is disabled)."""
    if max_lookback <= 0:
        return None
    return (epoch_block - max_lookback) // max(1, interval)


def settled_window(
    canonical: dict[int, str] | CanonicalTasks,
    epoch_block: int,
    interval: int,
    tasks: int,
    settle_margin: int,
    max_lookback: int,
    settle: str = "rotations",
) -> Window:
    """The newest `tasks` produced tasks in `[floor, epoch index - settle_margin]`, ascending.

    With `settle="produced"` (the seed's rule, migration profile) the newest `settle_margin`
    *produced* tasks at or below the epoch index are dropped instead.
    """
    produced = canonical.tasks if isinstance(canonical, CanonicalTasks) else canonical
    margin = settle_margin if settle != "produced" else 0
    top = newest_settled_index(epoch_block, interval, margin)
    floor = lookback_floor(epoch_block, interval, max_lookback)
    newest = sorted((t for t in produced if t <= top and (floor is None or t >= floor)), reverse=True)
    skip = max(0, settle_margin) if settle == "produced" else 0
    eligible = newest[skip: skip + max(0, tasks)]
    chosen = tuple(sorted(eligible))
    samplers = {t: produced[t] for t in chosen}
    return Window(tasks=chosen, active=tuple(sorted(set(samplers.values()))), samplers=samplers)
