"""Seed-layout peers' tasks and verdicts, as scoring sees them (pure).

A peer running the first implementation has no log of its own; the observing validator
records what it read of that peer's bucket as its own `seed_task_observed` and
`seed_verdict_observed` events (`leoma.mirror.seedpeer`). Here those observations become the peer's
task claims and verdicts, so the window, the averages and replay treat them like anyone's:

* Only the own origin's observations count for the own decision (a validator's view of a
  seed peer is its own, like its view of the miners); other validators' observations are kept
  for audit, and anyone can re-verify their signatures.
* Per `(peer, task)` the latest observed file (highest own `origin_seq`) is the one read,
  as the seed reads whatever the bucket holds when it scores.
* A seed file carries no block. For the epoch at `epoch_block` it counts when its task's
  rotation has begun (`task * interval <= epoch_block`, the seed's anchor `r <= epoch_rid`).
  For the rightful-sampler rule it is placed at the first block its producer could have
  opened it: `task * interval + step * grace`, where `step` is the producer's distance from
  the primary in the ring. A producer more steps away than a rotation allows is outside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from leoma.log.events import SeedTaskObserved, SeedVerdictObserved
from projections.scores import Verdict
from projections.window import TaskClaim

KINDS = ("seed_task_observed", "seed_verdict_observed")


class SeedState(msgspec.Struct, kw_only=True):
    """The own observations of seed-layout peers (checkpointable)."""

    files: dict[str, list[tuple[int, str]]] = {}
    """`"<peer>/<task>"` -> `[(own origin_seq, file_sha256)]` of every observed file."""
    entries: dict[str, list[tuple[int, str, bool]]] = {}
    """`"<peer>/<task>/<sha>"` -> `[(index, miner, passed)]`."""


def apply(state: SeedState, origin_seq: int, body: Any, *, floor: int = 0) -> None:
    """Take one own seed observation into account (tasks below `floor` were pruned: skipped)."""
    if getattr(body, "task_id", floor) < floor:
        return
    if isinstance(body, SeedTaskObserved):
        state.files.setdefault(f"{body.peer}/{body.task_id}", []).append((origin_seq, body.file_sha256))
    elif isinstance(body, SeedVerdictObserved):
        state.entries.setdefault(f"{body.peer}/{body.task_id}/{body.file_sha256}", []).append(
            (body.index, body.miner, body.passed))


def latest_files(state: SeedState) -> dict[tuple[str, int], str]:
    """`(peer, task) -> file_sha256` of the latest observed file of each seed task."""
    out: dict[tuple[str, int], str] = {}
    for name, seen in state.files.items():
        peer, _, task = name.rpartition("/")
        out[(peer, int(task))] = max(seen)[1]
    return out


def claims(state: SeedState, epoch_block: int, validators: Sequence[str], interval: int,
           grace: int) -> list[TaskClaim]:
    """Each observed seed task whose rotation began by `epoch_block`, as a claim (module doc)."""
    ring = sorted(set(validators))
    n = len(ring)
    step_len = max(1, interval)
    out = []
    for (peer, task), _sha in sorted(latest_files(state).items()):
        start = task * step_len
        if start > epoch_block:
            continue
        step = (ring.index(peer) - task) % n if peer in ring else 0
        out.append(TaskClaim(peer, task, start + step * max(1, grace) if step else start))
    return out


def verdicts(state: SeedState, tasks: Iterable[int]) -> list[Verdict]:
    """The verdicts of the latest observed file of every seed task in `tasks`, in file order.

    Entries without a miner hotkey are skipped (the seed kept only truthy hotkeys); a miner
    listed twice in one file keeps its last entry (tally keeps the last one given).
    """
    wanted = set(tasks)
    out: list[Verdict] = []
    for (peer, task), sha in sorted(latest_files(state).items()):
        if task not in wanted:
            continue
        for _index, miner, passed in sorted(state.entries.get(f"{peer}/{task}/{sha}", ())):
            if miner:
                out.append(Verdict(peer, task, miner, passed))
    return out


def resolved(state: SeedState, tasks: Iterable[int], samplers: Mapping[int, str]) -> dict[int, list[tuple[str, bool]]]:
    """Per window task sampled by a seed-layout peer: `(miner, passed)` of its latest file.

    A miner listed twice keeps its last entry (the seed's dict assignment); entries without a
    miner are skipped. Tasks whose sampler has no observed file are absent.
    """
    files = latest_files(state)
    out: dict[int, list[tuple[str, bool]]] = {}
    for task in sorted(set(tasks)):
        sampler = samplers.get(task)
        sha = files.get((sampler, task)) if sampler is not None else None
        if sha is None:
            continue
        last: dict[str, bool] = {}
        for _index, miner, passed in sorted(state.entries.get(f"{sampler}/{task}/{sha}", ())):
            if miner:
                last[miner] = passed
        out[task] = list(last.items())
    return out


def prune(state: SeedState, floor: int) -> None:
    """Forget observations of tasks below `floor` (no later decision can read them)."""
    for name in [n for n in state.files if int(n.rpartition("/")[2]) < floor]:
        del state.files[name]
    for name in [n for n in state.entries if int(n.split("/")[1]) < floor]:
        del state.entries[name]
