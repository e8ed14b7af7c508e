"""Whose turn it is: task ids, the primary sampler, failover, and who may open a task when.

The validators are the owner's allowlist, sorted by code point (the seed's order). Task `r`
(the rotation index `block // interval`) belongs to `V[r % n]`; when the primary has not produced
it `grace` blocks into the rotation, the next validator in the ring may, then the next, never
wrapping back to the primary (the seed's `failover_step`).

The seed only applied this schedule when *choosing* to sample; anyone could be counted as the
producer afterwards (seed-spec §12.5). `rightful_sampler_at` and `may_open` are the schedule as
a rule: at a given block exactly one validator may open a given task.
"""

from __future__ import annotations

from collections.abc import Sequence

from leoma.log.consensus import Consensus


def task_id_for_block(block: int, interval: int) -> int:
    """The rotation index (= task id) a chain block falls in."""
    return block // max(1, interval)


def primary_sampler(validators: Sequence[str], task_id: int) -> str | None:
    """The validator whose turn task `task_id` is (None when the allowlist is empty)."""
    if not validators:
        return None
    return validators[task_id % len(validators)]


def failover_step(offset: int, grace: int, n: int) -> int:
    """How many validators past the primary may sample, `offset` blocks into a rotation.

    Every `grace` blocks the turn passes to the next validator, capped at `n - 1` so the ring
    never wraps back to the primary.
    """
    if grace <= 0 or n <= 1 or offset < grace:
        return 0
    return min(offset // grace, n - 1)


def grace_blocks_for(interval: int, configured: int = 0) -> int:
    """The seed's grace: `configured` if set, else half the interval (at least 1)."""
    return configured if configured > 0 else max(1, interval // 2)


def grace_blocks(interval: int, consensus: Consensus) -> int:
    """The grace for `interval` under the pinned consensus config."""
    return consensus.grace_blocks(interval)


def effective_sampler(
    validators: Sequence[str], task_id: int, offset: int, grace: int, produced: bool
) -> tuple[str | None, int]:
    """The seed's live rule: `(sampler, step)` for a rotation, given whether the primary produced it."""
    if produced or not validators:
        return primary_sampler(validators, task_id), 0
    step = failover_step(offset, grace, len(validators))
    return validators[(task_id + step) % len(validators)], step


def rotation_window(task_id: int, interval: int) -> range:
    """The blocks of task `task_id`'s rotation: `[task_id * interval, (task_id + 1) * interval)`."""
    step = max(1, interval)
    return range(task_id * step, (task_id + 1) * step)


def rightful_sampler_at(
    validators: Sequence[str], interval: int, grace: int, task_id: int, block: int
) -> str | None:
    """The one validator the failover schedule allows to open task `task_id` at `block`.

    None when the allowlist is empty or `block` lies outside the task's rotation (a task opened
    early or late belongs to nobody). `validators` must be the allowlist's sorted order.
    """
    if not validators or task_id < 0 or block not in rotation_window(task_id, interval):
        return None
    step = failover_step(block - task_id * max(1, interval), grace, len(validators))
    return validators[(task_id + step) % len(validators)]


def failover_step_at(validators: Sequence[str], interval: int, grace: int, task_id: int, block: int) -> int:
    """The failover step in force at `block` of task `task_id`'s rotation (-1 when outside it)."""
    if not validators or task_id < 0 or block not in rotation_window(task_id, interval):
        return -1
    return failover_step(block - task_id * max(1, interval), grace, len(validators))


def may_open(
    validators: Sequence[str], interval: int, grace: int, sampler: str, task_id: int, block: int
) -> bool:
    """Whether `sampler` is the rightful sampler of task `task_id` at chain block `block`."""
    return rightful_sampler_at(validators, interval, grace, task_id, block) == sampler
