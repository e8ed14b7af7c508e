"""Rotation math (seed-spec §3.2/§3.3) and the rightful-sampler rule (fix §12.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from leoma.log.consensus import DEFAULT
from projections.rotation import (
    effective_sampler,
    failover_step,
    grace_blocks,
    grace_blocks_for,
    may_open,
    primary_sampler,
    rightful_sampler_at,
    task_id_for_block,
)

V = ["A", "B", "C", "D"]


def test_block_1000_interval_100_is_task_10_sampled_by_c() -> None:
    assert task_id_for_block(1000, 100) == 10
    assert primary_sampler(V, 10) == "C"


def test_primary_sampler_wraps_the_ring() -> None:
    assert primary_sampler(V, 13) == "B"
    assert primary_sampler([], 13) is None


@pytest.mark.parametrize(
    ("offset", "grace", "n", "step"),
    [(0, 50, 4, 0), (49, 50, 4, 0), (50, 50, 4, 1), (120, 50, 4, 2), (10000, 50, 4, 3), (100, 0, 4, 0), (100, 50, 1, 0)],
)
def test_failover_step_vectors(offset: int, grace: int, n: int, step: int) -> None:
    assert failover_step(offset, grace, n) == step


def test_grace_vectors() -> None:
    assert grace_blocks_for(100, 0) == 50
    assert grace_blocks_for(100, 30) == 30
    assert grace_blocks_for(1) == 1
    assert grace_blocks_for(3) == 1
    assert grace_blocks(100, DEFAULT) == 50


def test_block_1060_nothing_produced_fails_over_to_d() -> None:
    r = task_id_for_block(1060, 100)
    grace = grace_blocks_for(100)
    assert effective_sampler(V, r, 1060 - r * 100, grace, False) == ("D", 1)
    assert effective_sampler(V, r, 1060 - r * 100, grace, True) == ("C", 0)


def test_effective_sampler_extra_vectors() -> None:
    assert effective_sampler(["A", "B", "C"], 7, 99, 50, False) == ("C", 1)
    assert effective_sampler(["A", "B", "C"], 7, 150, 50, False) == ("A", 2)
    assert effective_sampler([], 7, 150, 50, False) == (None, 0)


def test_fix_only_rightful_sampler_may_open() -> None:
    # Task 10 (blocks 1000-1099): C until the grace, then D; nobody outside those blocks.
    assert rightful_sampler_at(V, 100, 50, 10, 1000) == "C"
    assert rightful_sampler_at(V, 100, 50, 10, 1049) == "C"
    assert rightful_sampler_at(V, 100, 50, 10, 1050) == "D"
    assert rightful_sampler_at(V, 100, 50, 10, 1099) == "D"
    assert rightful_sampler_at(V, 100, 50, 10, 999) is None
    assert rightful_sampler_at(V, 100, 50, 10, 1100) is None
    assert rightful_sampler_at([], 100, 50, 10, 1000) is None
    assert may_open(V, 100, 50, "C", 10, 1010)
    assert not may_open(V, 100, 50, "D", 10, 1010)
    assert not may_open(V, 100, 50, "A", 10, 1090)
    assert not may_open(V, 100, 50, "C", 10, 2010)


def test_second_backup_reachable_with_a_short_grace() -> None:
    assert rightful_sampler_at(V, 100, 30, 10, 1065) == "A"
    assert rightful_sampler_at(V, 100, 30, 10, 1095) == "B"


@given(
    n=st.integers(1, 8), interval=st.integers(1, 500), grace=st.integers(0, 300),
    task=st.integers(0, 10_000), offset=st.integers(0, 499),
)
def test_rightful_sampler_matches_the_seed_live_rule(n: int, interval: int, grace: int, task: int, offset: int) -> None:
    validators = [f"v{i}" for i in range(n)]
    block = task * interval + offset
    got = rightful_sampler_at(validators, interval, grace, task, block)
    if offset >= interval:
        assert got is None
    else:
        assert got == effective_sampler(validators, task, offset, grace, False)[0]
        assert sum(may_open(validators, interval, grace, v, task, block) for v in validators) == 1
