"""A devnet with commit-reveal on: the validators agree, and every decision is committed, revealed
by the chain an epoch later, and confirmed by read-back."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from leoma.devnet.config import DevnetConfig
from leoma.devnet.network import Devnet
from leoma.log.eventlog import EventLog
from leoma.log.events import decode_body

pytestmark = pytest.mark.slow


def _landing(net: Devnet, node) -> dict[int, list[str]]:  # type: ignore[no-untyped-def]
    """Epoch -> the node's own weights event kinds, in order (a refusal as `weights_refused:<reason>`)."""
    path = net.db_path(node)
    if not path.is_file():
        return {}
    out: dict[int, list[str]] = {}
    with EventLog(path, readonly=True) as log:
        for row in log.rows(origin=node.hotkey):
            if row.kind.startswith("weights_"):
                kind = row.kind
                if kind == "weights_refused":
                    kind += ":" + decode_body(row.body, row.v).reason
                out.setdefault(int(row.key.split("/")[1]), []).append(kind)
    return out


# Known leak: the in-process devnet leaves an SDK event loop and its sockets to the garbage
# collector; they are collected here so their warnings do not land on whichever test runs next.
@pytest.fixture(autouse=True)
def _collect_leaks():  # type: ignore[no-untyped-def]
    yield
    gc.collect()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_commit_reveal_devnet_agrees_and_confirms_every_epoch(tmp_path: Path) -> None:
    net = Devnet.create(tmp_path / "net", DevnetConfig(validators=2, commit_reveal=True))
    assert net.sim.state().params["commit_reveal"] is True
    with net.running(processes=False, api=False):
        assert net.wait(2), "the validators did not decide the target epoch"
        target = net.target_epoch(2)

        def all_landed() -> bool:
            # every epoch each validator decided up to the target, not only the target itself
            return all("weights_confirmed" in _landing(net, n).get(e, [])
                       for n in net.validators for e in net.decisions(n) if e <= target)

        # a commit is revealed at the next chain epoch: give it two epochs' time
        assert net.wait_for(all_landed, timeout=2 * net.config.epoch_length * net.config.block_time + 60), \
            {n.name: _landing(net, n) for n in net.validators}
        summary = net.summary()
    assert all(e["agreed"] for e in summary["epochs"]) and summary["agreed"], summary["epochs"]
    for node in net.validators:
        landing = _landing(net, node)
        decided = [e for e in net.decisions(node) if e <= target]
        assert decided and set(decided) <= set(landing), (node.name, landing)
        for epoch in decided:
            kinds = landing[epoch]
            # The chain's rate limit may hold the first submission back a few blocks when the
            # previous epoch's commit revealed at this epoch's start (a late first decision); that
            # wait is the only refusal allowed, and only before the submission.
            waits = kinds[:kinds.index("weights_submitted")] if "weights_submitted" in kinds else kinds
            assert all(k.startswith("weights_refused:") and "TooFast" in k for k in waits), (node.name, epoch, kinds)
            kinds = kinds[len(waits):]
            assert kinds[:2] == ["weights_submitted", "weights_committed"], (node.name, epoch, kinds)
            assert not any(k.startswith("weights_refused") for k in kinds), (node.name, epoch, kinds)
            assert kinds.index("weights_revealed") < kinds.index("weights_confirmed"), (node.name, epoch, kinds)
            assert "weights_not_landed" not in kinds, (node.name, epoch, kinds)


# Last in the file: its teardown collects again what the in-process devnet above leaked late.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_chain_epochs_of_a_commit_reveal_devnet_tile_the_validators_epochs(tmp_path: Path) -> None:
    """A commit made at any block of a validator epoch reveals within that epoch or at its end, so
    no two epochs' commits share a reveal block (where the later would overwrite the earlier)."""
    net = Devnet.create(tmp_path / "net", DevnetConfig(validators=1, commit_reveal=True))
    state = net.sim.state()
    length, period = net.config.epoch_length, state.tempo + 1
    assert length % period == 0 and period < length, (length, period)
    epoch = state.block // length + 1
    for block in range(epoch * length, (epoch + 1) * length):
        reveal = (state.epoch_index(block) + state.params["reveal_period_epochs"]) * period
        assert block < reveal <= (epoch + 1) * length, (block, reveal)
    assert net.sim.head() // length == 100 and net.config.start_block % length == 0  # starts at an epoch boundary
