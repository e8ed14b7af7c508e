"""A validator split into `leoma servers sampler` + `leoma servers validator` is as safe as `serve`.

One devnet (module-scoped): validator1 is one `leoma serve` process; validator2 runs as two
processes sharing its state directory and event log. The split sampler is killed with SIGKILL
in the middle of a task and restarted, then the split weight setter is killed the same way
after its first decision and restarted. Then: the two validators agree epoch by epoch, SIGTERM
makes each split process flush the mirror and exit 0, nothing was lost or duplicated, the one
log's chain is intact, and replay reproduces every decision in it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from leoma.adapters.directory import DirectoryStore
from leoma.devnet.config import DevnetConfig
from leoma.devnet.network import Devnet
from leoma.errors import LogError
from leoma.log.eventlog import EventLog
from leoma.log.events import decode_body
from leoma.mirror.out import uploaded_position
from leoma.mirror.segments import fetch_checkpoint
from leoma.services.serve import metrics_url_file

pytestmark = pytest.mark.slow

SPLIT = "validator2"


class Split:
    """The two processes of one validator, started like `leoma servers sampler|validator`."""

    def __init__(self, net: Devnet) -> None:
        self.net = net
        self.node = net.node(SPLIT)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.codes: dict[str, int] = {}

    def log_path(self, process: str) -> Path:
        return self.net.node_dir(self.node) / f"{process}.log"

    def start(self, process: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEOMA_", "R2_", "PEER_"))}
        env.update(self.net.env(self.node))
        env["PYTHONUNBUFFERED"] = "1"
        self.net.node_dir(self.node).mkdir(parents=True, exist_ok=True)
        with open(self.log_path(process), "ab") as out:
            self.procs[process] = subprocess.Popen(
                [sys.executable, "-m", "leoma_cmd.serve_cmds", "servers", process], env=env,
                cwd=self.net.node_dir(self.node), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, process: str) -> None:
        proc = self.procs.pop(process)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def terminate(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            try:
                self.codes[name] = proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                self.codes[name] = -9
        self.procs.clear()


class Run:
    def __init__(self, net: Devnet, split: Split) -> None:
        self.net, self.split = net, split
        self.killed_task: int | None = None
        self.killed_after_epoch: int | None = None
        self.alive_until_stop = False
        self.finished = False
        self.health: dict[str, tuple[int, str]] = {}
        self.metrics: dict[str, str] = {}
        self.codes: dict[str, int | None] = {}
        self.summary: dict[str, Any] = {}


def _log(net: Devnet, name: str) -> EventLog:
    return EventLog(net.db_path(name), readonly=True)


def _tasks(net: Devnet, kind: str) -> list[int]:
    try:
        log = _log(net, SPLIT)
    except LogError:  # not there yet, or its processes are still creating its tables
        return []
    with log:
        return [decode_body(r.body).task_id  # type: ignore[attr-defined]
                for r in log.rows(kinds=[kind], origin=net.node(SPLIT).hotkey)]


def _open_task(net: Devnet) -> int | None:
    return min(set(_tasks(net, "task_opened")) - set(_tasks(net, "task_closed")), default=None)


def _ask(split: Split, process: str, path: str) -> tuple[int, str]:
    url = metrics_url_file(split.net.node_dir(split.node), process).read_text().strip()
    reply = httpx.get(url + path, timeout=10)
    return reply.status_code, reply.text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("split")
    net = Devnet.create(root / "net", DevnetConfig(validators=2, miners=("faithful", "static", "noisy")))
    split = Split(net)
    r = Run(net, split)
    net.start(processes=True, only=["validator1"], api=False)
    split.start("sampler")
    split.start("validator")
    try:
        # kill -9 the split sampler while one of its tasks is open, then start it again
        assert net.wait_for(lambda: _open_task(net) is not None, timeout=180, poll=0.1), "no task opened"
        split.kill("sampler")
        r.killed_task = _open_task(net)
        split.start("sampler")
        # kill -9 the split weight setter once it decided an epoch, then start it again
        assert net.wait_for(lambda: bool(net.decisions(split.node)), timeout=300, poll=0.2), "no decision"
        r.killed_after_epoch = max(net.decisions(split.node))
        split.kill("validator")
        split.start("validator")
        r.finished = net.wait(3)
        r.alive_until_stop = split.alive()
        for process in ("sampler", "validator"):
            r.health[process] = _ask(split, process, "/healthz")
            r.metrics[process] = _ask(split, process, "/metrics")[1]
    finally:
        split.terminate()
        r.codes = net.stop()
    r.summary = net.summary()
    yield r


def test_the_split_validator_agrees_with_the_single_serve_one(run: Run) -> None:
    s = run.summary
    assert run.finished, s
    epochs = [(e["epoch"], e["agreed"], e["winner_name"], e["burn_reason"]) for e in s["epochs"]]
    # Every epoch both decided agrees, bit for bit (winner and weight vector), burns included...
    assert len(epochs) >= 3 and [e for e in s["epochs"] if not e["agreed"]] == [], epochs
    # ...and at least one, decided after both split processes were killed and restarted, has the winner.
    assert s["agreed"] and s["winner"] == "faithful", epochs
    assert run.killed_after_epoch is not None
    assert any(e["winner_name"] == "faithful" and e["epoch"] > run.killed_after_epoch for e in s["epochs"]), epochs
    assert run.codes == {"validator1": 0}


def test_each_split_process_is_serve_with_its_roles(run: Run) -> None:
    assert run.alive_until_stop
    assert run.health["sampler"][0] == 200 and run.health["validator"][0] == 200, run.health
    sampler, validator = run.metrics["sampler"], run.metrics["validator"]
    for role in ("sampler", "checker", "mirror-out"):
        assert f'leoma_loop_up{{loop="{role}"}} 1' in sampler, role
    assert 'loop="weights"' not in sampler and 'loop="mirror-in"' not in sampler
    for role in ("weights", "checker", "mirror-in", "mirror-out"):
        assert f'leoma_loop_up{{loop="{role}"}} 1' in validator, role
    assert 'loop="sampler"' not in validator


def test_sigterm_flushes_the_mirror_and_exits_zero(run: Run) -> None:
    assert run.split.codes == {"sampler": 0, "validator": 0}
    for process in ("sampler", "validator"):
        text = run.split.log_path(process).read_text()
        assert "flushed the own log" in text.rsplit("received SIGTERM", 1)[-1], process
    net, me = run.net, run.split.node
    with _log(net, SPLIT) as log:
        head = log.head(me.hotkey)
        assert uploaded_position(log, me.hotkey) == head.origin_seq
    cp = asyncio.run(fetch_checkpoint(DirectoryStore(net.bucket_path(me)), me.hotkey))
    assert cp is not None and (cp.size, cp.head) == (head.origin_seq, head.hash)


def test_kill_9_then_restart_lost_and_duplicated_nothing(run: Run) -> None:
    net, me = run.net, run.split.node
    assert run.killed_task is not None and run.killed_after_epoch is not None
    opened, closed = _tasks(net, "task_opened"), _tasks(net, "task_closed")
    assert run.killed_task in closed  # the restarted sampler resumed it and closed it
    assert len(set(closed)) == len(closed) and len(set(opened)) == len(opened)
    assert set(opened) - set(closed) <= {max(opened)}  # only a task the final stop interrupted
    decisions = net.decisions(me)
    assert max(decisions) > run.killed_after_epoch  # the restarted weight setter went on deciding
    with _log(net, SPLIT) as log:
        report = log.verify()
        assert report.ok, report.first  # two writers, one chain
        assert log.count(kind="conflict_recorded", origin=me.hotkey) == 0  # they never raced on a key
        kinds = {r.kind for r in log.rows(origin=me.hotkey)}
        mine = {e.origin_seq: e.hash for e in log.chain(me.hotkey)}
    assert {"task_opened", "task_closed", "miner_responded", "epoch_scored", "miner_checked"} <= kinds  # both roles wrote
    with _log(net, "validator1") as peer:
        theirs = {e.origin_seq: e.hash for e in peer.chain(me.hotkey)}
    assert theirs and all(mine[s] == h for s, h in theirs.items())  # the peer imported the same chain


def test_replay_reproduces_every_decision_of_the_split_log(run: Run) -> None:
    from leoma_cmd.scoring_cmds import register

    group = click.Group("leoma")
    register(group)
    result = CliRunner().invoke(group, ["replay", "--all", "--db", str(run.net.db_path(SPLIT)),
                                        "--consensus", str(run.net.consensus_path)])
    assert result.exit_code == 0, result.output
    assert "DIFFERS" not in result.output and "reproduced" in result.output
