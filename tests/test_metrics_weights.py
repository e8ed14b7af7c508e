"""The weights-overdue gauge and `/healthz` degraded when no decision has landed for N epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leoma.log.eventlog import EventLog
from leoma.log.events import WeightsConfirmed, WeightsSubmitted
from leoma.ops.metrics import Facts, collect_facts, health, render_prometheus

OWN = "5Own"
LENGTH = 100


def facts(**changes: Any) -> Facts:
    base: dict[str, Any] = dict(own=OWN, log_head=1, uploaded_head=1, log_rows=1, projection_lag=0, tasks_sampled=0,
                                judge_failures=0, responses={}, chain_head=50 * LENGTH + 10, tempo=10**6,
                                last_weights_block=50 * LENGTH, last_weights_epoch=50, epoch_length=LENGTH,
                                overdue_epochs=3)
    base.update(changes)
    return Facts(**base)


def test_overdue_after_the_configured_number_of_epochs_without_a_landed_decision() -> None:
    assert facts().epochs_without_weights == 0 and health(facts()) == (True, [])
    assert health(facts(last_weights_epoch=47))[0], "3 epochs: still within the limit"
    ok, problems = health(facts(last_weights_epoch=46))
    assert not ok and problems[0].startswith("weights overdue: no decision has landed on chain for 4 epochs")
    assert "LEOMA_WEIGHTS_OVERDUE_EPOCHS" in problems[0]
    assert health(facts(last_weights_epoch=46, overdue_epochs=4))[0], "the limit is configurable"
    # never landed: counted from the epoch the process started in
    assert not health(facts(last_weights_epoch=None, last_weights_block=None, started_block=45 * LENGTH))[0]
    assert facts(epoch_length=0).epochs_without_weights is None and health(facts(epoch_length=0))[0]


def test_the_gauges() -> None:
    text = render_prometheus(facts(last_weights_epoch=40))
    assert "leoma_weights_epochs_since_landed 10.0\n" in text and "leoma_weights_overdue 1.0\n" in text
    assert "leoma_healthy 0.0\n" in text
    assert "leoma_weights_overdue 0.0\n" in render_prometheus(facts())


def test_only_a_confirmed_decision_counts_as_landed(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.db", own=OWN)
    try:
        log.append(WeightsConfirmed(epoch=40, uids=(3,), weights=(65535,)), key="weights/40/confirmed", block=4005)
        log.append(WeightsSubmitted(epoch=45, uids=(3,), weights=(65535,)), key="weights/45/submitted", block=4505)
        got = collect_facts(log, OWN, chain_head=45 * LENGTH + 50, epoch_length=LENGTH, overdue_epochs=3)
        assert got.last_weights_epoch == 40 and got.epochs_without_weights == 5 and got.weights_overdue
    finally:
        log.close()
