"""Canonical samplers and the settled window (seed-spec §6.3, §10; fixes §12.4, §12.5)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from projections.window import TaskClaim, canonical_tasks, settled_window

V = ["A", "B", "C", "D"]


def primary_claims(task_ids: range | list[int], interval: int = 100) -> list[TaskClaim]:
    return [TaskClaim(V[t % 4], t, t * interval + 1) for t in task_ids]


def canon(task_ids: range | list[int]) -> dict[int, str]:
    return {t: V[t % 4] for t in task_ids}


def test_each_primary_claim_is_canonical() -> None:
    got = canonical_tasks(primary_claims(range(12)), V, 100, 50)
    assert got.tasks == canon(range(12)) and got.rejected == ()


def test_backup_after_grace_is_canonical() -> None:
    assert canonical_tasks([TaskClaim("B", 0, 60), TaskClaim("B", 1, 101)], V, 100, 50).tasks == {0: "B", 1: "B"}


def test_primary_beats_a_backup_that_also_opened() -> None:
    got = canonical_tasks([TaskClaim("B", 0, 60), TaskClaim("A", 0, 5)], V, 100, 50)
    assert got.tasks == {0: "A"}
    assert [(r.origin, r.reason) for r in got.rejected] == [("B", "task already opened by A at block 5")]


def test_fix_window_stuffing_rejected() -> None:
    # The seed let any allowlisted producer be canonical (C for task 0); the schedule decides now.
    got = canonical_tasks([TaskClaim("C", 0, 60), TaskClaim("B", 0, 10), TaskClaim("Z", 1, 101)], V, 100, 50)
    assert got.tasks == {}
    assert [(r.origin, r.reason) for r in got.rejected] == [
        ("B", "not the rightful sampler at block 10 (that is A)"),
        ("C", "not the rightful sampler at block 60 (that is B)"),
        ("Z", "not allowlisted"),
    ]
    assert canonical_tasks([TaskClaim("C", 0, 60)], V, 100, 30).tasks == {0: "C"}


def test_claim_outside_the_rotation_is_rejected() -> None:
    got = canonical_tasks([TaskClaim("A", 4, 99)], V, 100, 50)
    assert got.tasks == {} and "outside the task's rotation" in got.rejected[0].reason


def test_empty_allowlist_has_no_tasks() -> None:
    assert canonical_tasks(primary_claims(range(3)), [], 100, 50).tasks == {}


def test_window_vectors() -> None:
    w = settled_window(canon(range(12)), 900, 100, 100, 2, 0)
    assert w.tasks == tuple(range(8)) and w.active == ("A", "B", "C", "D")
    w = settled_window(canon(range(50)), 10_000, 100, 10, 2, 0)
    assert len(w.tasks) == 10 and list(w.tasks) == sorted(w.tasks)
    sparse = canon([5, 7, 8, 10, 11, 12])
    assert settled_window(sparse, 1200, 100, 3, 2, 0).tasks == (7, 8, 10)
    assert settled_window(sparse, 1199, 100, 3, 2, 0).tasks == (5, 7, 8)
    assert settled_window(sparse, 1200, 100, 3, 2, 500).tasks == (7, 8, 10)
    assert settled_window({6: "C"}, 1200, 100, 3, 2, 500).tasks == ()


def test_fix_window_does_not_depend_on_read_timing() -> None:
    # Seed: [94..98] once task 100 is visible, [93..97] before. Indices, not produced tasks, settle.
    seen_all = settled_window(canon(range(90, 101)), 10_000, 100, 5, 2, 0)
    missing_newest = settled_window(canon(range(90, 100)), 10_000, 100, 5, 2, 0)
    assert seen_all.tasks == missing_newest.tasks == (94, 95, 96, 97, 98)


@given(st.sets(st.integers(0, 300)), st.integers(0, 30_000), st.integers(1, 20), st.integers(0, 4))
def test_tasks_above_the_settled_index_never_change_the_window(
    produced: set[int], epoch_block: int, n: int, margin: int
) -> None:
    top = epoch_block // 100 - margin
    settled = {t: "A" for t in produced if t <= top}
    everything = {t: "A" for t in produced}
    assert settled_window(settled, epoch_block, 100, n, margin, 0) == settled_window(everything, epoch_block, 100, n, margin, 0)
