"""The adversarial devnet (`leoma.devnet.chaos`): agree or hold, every epoch, under bad timing and bad actors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from leoma.devnet.chaos import run_chaos


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    import asyncio

    root = tmp_path_factory.mktemp("chaos")
    return asyncio.run(run_chaos(root, epochs=12, seed=7))


def test_every_epoch_all_who_decide_agree_and_the_others_hold_with_a_reason(chaos) -> None:  # type: ignore[no-untyped-def]
    assert chaos.ok, chaos.problems
    assert len(chaos.epochs) >= 10
    for e in chaos.epochs:
        assert len(set(e.decided.values())) <= 1, e
        assert set(e.decided) | set(e.held) == set(chaos.validators), e
    assert sum(1 for e in chaos.epochs if len(e.decided) == len(chaos.validators)) >= 8


def test_the_faults_happened_and_were_held_on_or_refused(chaos) -> None:  # type: ignore[no-untyped-def]
    by_fault = {f.split(" ", 1)[1]: e for e in chaos.epochs for f in e.faults}
    down = by_fault["bucket unreadable"]
    slow = next(v for v in chaos.validators if down.faults[0].startswith(v[:10]))
    assert slow in down.decided and down.held and all(f"behind {slow[:10]}" in r for r in down.held.values())
    lie = by_fault["anchors a head its bucket does not serve"]
    liar = next(v for v in chaos.validators if lie.faults[0].startswith(v[:10]))
    assert not lie.decided and all(r == f"head_mismatch {liar[:10]}" for r in lie.held.values())
    assert len(lie.held) == len(chaos.validators)
    # the backdated task counts for no one, and is reported where it is within reach
    assert all(chaos.backdated_task not in e.window for e in chaos.epochs)
    assert any(chaos.backdated_task in e.late for e in chaos.epochs)
    restarted = by_fault["restarted mid-epoch"]
    assert len(restarted.decided) == len(chaos.validators)


def test_replay_from_the_mirrors_and_the_chain_alone_reproduces_every_decision(chaos) -> None:  # type: ignore[no-untyped-def]
    from leoma_cmd.main import cli

    runner = CliRunner()
    for hk in chaos.validators:
        peers = json.dumps([{"hotkey": p, "url": u} for p, u in chaos.buckets.items() if p != hk])
        out = runner.invoke(cli, ["replay", "--all", "--from-bucket", chaos.buckets[hk], "--hotkey", hk,
                                  "--peers", peers, "--network", chaos.chain, "--json"])
        assert out.exit_code == 0, out.output[-2000:]
        data = json.loads(out.output)
        decided = sum(1 for e in chaos.epochs if hk in e.decided)
        assert data["ok"] and len(data["epochs"]) >= decided >= 8
