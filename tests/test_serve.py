"""`leoma serve` / `servers validator` / `status`: supervision, stop, settings, metrics, health."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from leoma.adapters.directory import DirectoryStore
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.log.eventlog import EventLog
from leoma.log.events import ChainHeadObserved
from leoma.mirror.out import uploaded_position
from leoma.mirror.segments import fetch_checkpoint
from leoma.ops.metrics import Facts, LoopFact, health, render_prometheus
from leoma.services.serve import Loop, log_lock, metrics_url_file, parse_addr, serve_options, supervise
from leoma_cmd.serve_cmds import register


def cli() -> click.Group:
    group = click.Group("leoma")
    register(group)
    return group


# -- supervision ----------------------------------------------------------------------------


async def test_a_failing_loop_restarts_with_backoff_and_the_others_keep_running() -> None:
    stop = asyncio.Event()
    calls = {"bad": 0, "good": 0}

    async def bad() -> None:
        calls["bad"] += 1
        if calls["bad"] <= 2:
            raise RuntimeError("boom")

    async def good() -> None:
        calls["good"] += 1

    loops = [Loop("bad", bad, 0.01, max_backoff=0.02), Loop("good", good, 0.01)]
    tasks = [asyncio.create_task(supervise(lp, stop)) for lp in loops]
    while calls["bad"] < 4:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*tasks)
    assert loops[0].restarts == 2 and loops[0].failures == 0 and "boom" in loops[0].last_error
    assert loops[0].last_beat > 0 and calls["good"] >= 2 and loops[1].restarts == 0


def test_a_loop_that_stops_beating_is_stalled() -> None:
    lp = Loop("sampler", lambda: asyncio.sleep(0), 1.0, stall_after=5.0)
    lp.last_beat = time.time() - 10
    assert lp.stalled() and lp.fact().stalled
    lp.last_beat = time.time()
    assert not lp.stalled()


def test_serve_options_and_addresses() -> None:
    opts = serve_options({"LEOMA_METRICS_ADDR": "off"}, env={"LEOMA_MIRROR_INTERVAL": "2.5"}, dotenv=False)
    assert opts.metrics_addr == "off" and opts.mirror_interval == 2.5
    assert parse_addr("0.0.0.0:9108") == ("0.0.0.0", 9108)
    from leoma.errors import ConfigError

    with pytest.raises(ConfigError, match="LEOMA_METRICS_ADDR"):
        parse_addr("9108")
    with pytest.raises(ConfigError, match="LEOMA_MIRROR_INTERVAL"):
        serve_options(env={"LEOMA_MIRROR_INTERVAL": "soon"}, dotenv=False)


# -- a missing setting ----------------------------------------------------------------------

SEED_VARS = ("GEMINI_API_KEY", "LEOMA_OWN_BUCKET_URL", "R2_OWN_BUCKET", "LEOMA_SOURCE_URL", "R2_VIDEOS_READ_ACCESS_KEY")


@pytest.mark.parametrize("command", [["serve"], ["servers", "sampler"]])
@pytest.mark.parametrize(("present", "missing"), [
    ({}, "GEMINI_API_KEY"),
    ({"GEMINI_API_KEY": "k"}, "LEOMA_OWN_BUCKET_URL"),
    ({"GEMINI_API_KEY": "k", "LEOMA_OWN_BUCKET_URL": "file:///tmp/x"}, "LEOMA_SOURCE_URL"),
])
def test_missing_setting_stops_start_up_with_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            present: dict[str, str], missing: str,
                                                            command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for var in SEED_VARS:
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(cli(), [*command, "--dev-key", "//Alice", "--state-dir", str(tmp_path)], env=present)
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert f"{missing} is not set:" in lines[0] and "cannot start" in lines[0]
    assert not (tmp_path / "events.db").exists()  # nothing was started


# -- health and the Prometheus text -----------------------------------------------------------


def facts(**changes: Any) -> Facts:
    base: dict[str, Any] = dict(own="5Own", log_head=10, uploaded_head=7, log_rows=30, projection_lag=2,
                                tasks_sampled=3, judge_failures=1,
                                responses={"accepted": 5, "failed/miner": 2, "failed/infra": 0},
                                chain_head=5000, last_weights_block=4900, tempo=100,
                                loops=(LoopFact(name="sampler", running=True, last_beat=time.time()),))
    base.update(changes)
    return Facts(**base)


def test_health_fails_when_weights_are_overdue_by_more_than_three_tempos_or_a_loop_stopped() -> None:
    assert health(facts()) == (True, [])
    assert health(facts(last_weights_block=5000 - 300))[0]  # exactly 3 tempos: still ok
    ok, problems = health(facts(last_weights_block=5000 - 301))
    assert not ok and "301 blocks" in problems[0]
    ok, problems = health(facts(loops=(LoopFact(name="checker", running=False),)))
    assert not ok and problems == ["loop checker is not running"]
    # never set: counted from the start of the process
    assert not health(facts(last_weights_block=None, started_block=4000))[0]


def test_prometheus_text() -> None:
    text = render_prometheus(facts(peers=()), now=time.time())
    assert "# TYPE leoma_log_head gauge\nleoma_log_head 10.0\n" in text
    assert "leoma_mirror_lag_events 3" in text and "leoma_blocks_since_weights_set 100" in text
    assert 'leoma_miner_responses_total{status="failed/miner"} 2' in text
    assert 'leoma_loop_up{loop="sampler"} 1' in text and "leoma_healthy 1" in text


# -- a real process: servers validator on a simulated chain -------------------------------------


class Proc:
    def __init__(self, root: Path, proc: subprocess.Popen[bytes], env: dict[str, str]) -> None:
        self.root, self.proc, self.env = root, proc, env
        self.hotkey = keypair_from_uri("//Alice").ss58_address
        self.output = ""

    @property
    def db(self) -> Path:
        return self.root / "state" / "events.db"

    def url(self) -> str:
        path = metrics_url_file(self.root / "state", "validator")
        return path.read_text().strip() if path.is_file() else ""


def _wait(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def validator_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    root = tmp_path_factory.mktemp("serve")
    alice = keypair_from_uri("//Alice").ss58_address
    owner = keypair_from_uri("//Owner").ss58_address
    sim = SimChain.create(root / "chain.jsonl", owner=owner, clock="realtime", block_time=0.5, tempo=20,
                          weights_rate_limit=1)
    sim.register(owner)
    sim.register(alice, stake=10**12, validator_permit=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEOMA_", "R2_", "PEER_", "GEMINI"))}
    env.update({
        "NETWORK": f"sim:{root / 'chain.jsonl'}", "LEOMA_DEV_KEY": "//Alice", "LEOMA_STATE_DIR": str(root / "state"),
        "LEOMA_OWN_BUCKET_URL": f"file://{root / 'bucket'}", "LEOMA_METRICS_ADDR": "127.0.0.1:0",
        "LEOMA_MIRROR_INTERVAL": "3600", "LEOMA_WEIGHTS_INTERVAL": "0.5", "MINER_VALIDATION_INTERVAL": "1",
        "CHUTES_API_URL": "http://127.0.0.1:9", "LEOMA_LOG_FORMAT": "json",
    })
    (root / "state").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "leoma_cmd.serve_cmds", "servers", "validator"], env=env,
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    p = Proc(root, proc, env)
    try:
        _wait(lambda: bool(p.url()) or proc.poll() is not None)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        yield p
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_metrics_and_healthz_are_served(validator_proc: Proc) -> None:
    url = validator_proc.url()
    _wait(lambda: 'leoma_loop_last_beat_seconds{loop="weights"} -1' not in httpx.get(url + "/metrics").text)
    text = httpx.get(url + "/metrics").text
    for name in ("leoma_log_head", "leoma_mirror_uploaded_head", "leoma_projection_lag_events",
                 "leoma_blocks_since_weights_set", "leoma_tasks_sampled_total", "leoma_miner_responses_total",
                 "leoma_judge_failures_total", 'leoma_loop_up{loop="checker"} 1', 'leoma_loop_up{loop="weights"} 1',
                 'leoma_loop_up{loop="mirror-out"} 1', "leoma_chain_head_block"):
        assert name in text, name
    reply = httpx.get(url + "/healthz")
    assert reply.status_code == 200 and reply.json() == {"ok": True, "problems": []}


def test_healthz_asks_the_process_where_it_really_listens(validator_proc: Proc) -> None:
    state = str(validator_proc.root / "state")
    ok = CliRunner().invoke(cli(), ["healthz", "--process", "validator", "--state-dir", state])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == {"ok": True, "problems": []}
    # The sampler of this state directory is not running: unhealthy, not an error.
    missing = CliRunner().invoke(cli(), ["healthz", "--process", "sampler", "--state-dir", state],
                                 env={"LEOMA_METRICS_ADDR": "127.0.0.1:9"})
    assert missing.exit_code == 1 and "unreachable" in missing.output


def test_sigterm_exits_zero_having_flushed_then_status_reads_the_log(validator_proc: Proc) -> None:
    p = validator_proc

    def unpublished() -> bool:
        if not p.db.is_file():
            return False
        with EventLog(p.db, readonly=True) as log:
            return log.head(p.hotkey).origin_seq > uploaded_position(log, p.hotkey)

    # The mirror pushes once at start and then only hourly: what it has not published yet must go out on stop.
    _wait(unpublished)
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(60) == 0
    output = p.proc.stdout.read().decode() if p.proc.stdout else ""
    assert any(json.loads(line).get("message", "").startswith("flushed the own log") for line in output.splitlines()
               if line.startswith("{")), output
    with EventLog(p.db, readonly=True) as log:
        head = log.head(p.hotkey).origin_seq
        assert uploaded_position(log, p.hotkey) == head
        assert log.verify().ok

    async def published() -> int:
        cp = await fetch_checkpoint(DirectoryStore(p.root / "bucket"), p.hotkey)
        return cp.size if cp else 0

    assert asyncio.run(published()) == head

    result = CliRunner().invoke(cli(), ["status", "--db", str(p.db), "--network", p.env["NETWORK"], "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["own"] == p.hotkey and out["log_head"] == head and out["uploaded_head"] == head
    assert out["chain_head"] > 0 and out["last_scored_epoch"] is not None and out["mirror_lag"] == 0
    table = CliRunner().invoke(cli(), ["status", "--db", str(p.db), "--no-chain"])
    assert table.exit_code == 0 and "own events" in table.output and p.hotkey in table.output


# -- processes sharing one log ---------------------------------------------------------------

_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


async def test_a_role_lock_excludes_another_process_until_it_dies(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, f"{db}.sampler.lock"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        async with log_lock(db, "sampler", wait=False) as held:
            assert held is False
        async with log_lock(db, "checker", wait=False) as other:
            assert other is True  # another role's lock is free

        async def wait_for_it() -> bool:
            async with log_lock(db, "sampler") as got:
                return got

        waiter = asyncio.create_task(wait_for_it())
        await asyncio.sleep(0.3)
        assert not waiter.done()  # waiting for its turn, without blocking this loop
        os.kill(holder.pid, signal.SIGKILL)  # kill -9: the kernel releases the lock
        assert await asyncio.wait_for(waiter, 30) is True
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


_APPENDER = """
import os, sys, time
from leoma.log.events import ChainHeadObserved
from leoma.log.eventlog import Draft, EventLog
from leoma.adapters.signing import keypair_from_uri
db, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
own = keypair_from_uri("//Alice").ss58_address
with EventLog(db, own=own) as log:
    while not os.path.exists(go):  # start together
        time.sleep(0.01)
    for i in range(n):
        if i % 3 == 2:  # group commits too
            log.append_many([Draft(f"{name}/{i}/{j}", i, ChainHeadObserved(block_hash=f"{name}-{i}-{j}")) for j in range(2)])
        else:
            log.append(ChainHeadObserved(block_hash=f"{name}-{i}"), key=f"{name}/{i}", block=i)
        time.sleep(0.005)  # a service does other work between appends; SQLite's busy wait would otherwise starve the rest
"""


def test_a_log_sees_origins_another_process_added_after_it_opened(tmp_path: Path) -> None:
    """The split weight setter opened the log before the split sampler's first append (a real race)."""
    db = tmp_path / "events.db"
    alice = keypair_from_uri("//Alice").ss58_address
    with EventLog(db, own=alice) as early:
        assert early.head(alice).origin_seq == 0 and early.origins() == []
        go = tmp_path / "go"
        go.touch()
        subprocess.run([sys.executable, "-c", _APPENDER, str(db), "sampler", "3", str(go)], check=True, timeout=60)
        assert early.head(alice).origin_seq == 4 and early.origins() == [alice]
        assert early.get(alice, "sampler/0") is not None and early.count(origin=alice) == 4
        assert [e.origin_seq for e in early.chain(alice)] == [1, 2, 3, 4]
        assert len(list(early.rows(origin=alice))) == 4
        early.append(ChainHeadObserved(block_hash="0xff"), key="validator/0", block=9)  # continues the chain
        assert early.head(alice).origin_seq == 5 and early.verify().ok


def test_processes_appending_to_one_log_keep_its_chain_intact(tmp_path: Path) -> None:
    """A split validator's sampler and weight setter write one log: the chain stays one chain."""
    db = tmp_path / "events.db"
    alice = keypair_from_uri("//Alice").ss58_address
    EventLog(db, own=alice).close()  # created once, as the first process to start would
    n, names, go = 90, ("sampler", "validator", "checker"), tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(db), name, str(n), str(go)]) for name in names]
    time.sleep(1.0)  # let them open the log; then they all append at once
    go.touch()
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    per_process = n + n // 3  # every third round appends two events
    with EventLog(db, readonly=True) as log:
        report = log.verify()
        assert report.ok, report.first
        chain = list(log.chain(alice))
    assert [e.origin_seq for e in chain] == list(range(1, 3 * per_process + 1))
    assert all(b.prev == a.hash for a, b in zip(chain, chain[1:]))
    keys = [e.key for e in chain]
    assert len(set(keys)) == len(keys) == 3 * per_process
    for name in names:  # each process's own order survives
        mine = [k for k in keys if k.startswith(name + "/")]
        assert [int(k.split("/")[1]) for k in mine] == sorted(int(k.split("/")[1]) for k in mine)


def _published_then_lost(tmp_path: Path) -> tuple[Path, list[str]]:
    """An own bucket holding 5 published events of //Alice whose local log is gone."""
    from leoma.log.consensus import DEFAULT
    from leoma.mirror.out import MirrorOut

    alice = keypair_from_uri("//Alice")
    bucket = tmp_path / "bucket"
    with EventLog(tmp_path / "lost.db", own=alice.ss58_address) as lost:
        for i in range(5):
            lost.append(ChainHeadObserved(block_hash=f"0x{i:02x}"), key=f"head/{i}", block=i)
        published = [e.hash for e in lost.chain(alice.ss58_address)]
        asyncio.run(MirrorOut(lost, DirectoryStore(bucket), alice, DEFAULT.digest).push())
    return bucket, published


def test_mirror_pull_restores_the_published_tail_before_it_records_anything(tmp_path: Path) -> None:
    from leoma_cmd.mirror_cmds import register as register_mirror_cmds

    bucket, published = _published_then_lost(tmp_path)
    group = click.Group("leoma")
    register_mirror_cmds(group)
    fresh = tmp_path / "fresh.db"  # the log came back from a backup older than the bucket: empty here
    EventLog(fresh, own=keypair_from_uri("//Alice").ss58_address).close()
    result = CliRunner().invoke(group, ["mirror", "pull", "--db", str(fresh), "--dev-key", "//Alice", "--peers", "[]",
                                        "--bucket", f"file://{bucket}", "--json"])
    assert result.exit_code == 0, result.output
    with EventLog(fresh, readonly=True) as log:
        assert [e.hash for e in log.chain(keypair_from_uri("//Alice").ss58_address)] == published


def test_check_miners_restores_the_published_tail_before_it_appends(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that lost its log must not reuse a seq the bucket already published (a fork)."""
    from leoma_cmd.validator_cmds import register as register_validator_cmds

    alice = keypair_from_uri("//Alice")
    owner = keypair_from_uri("//Owner").ss58_address
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner, clock="manual", tempo=20)
    sim.register(owner)
    sim.register(alice.ss58_address, stake=10**12, validator_permit=True)
    bucket, published = _published_then_lost(tmp_path)
    monkeypatch.chdir(tmp_path)  # no stray .env
    for var in [v for v in os.environ if v.startswith(("LEOMA_", "R2_", "PEER_", "GEMINI", "API_URL"))]:
        monkeypatch.delenv(var)
    group = click.Group("leoma")
    register_validator_cmds(group)
    fresh = tmp_path / "fresh.db"  # the machine's disk was lost: an empty log
    result = CliRunner().invoke(group, ["check-miners", "--json", "--network", f"sim:{tmp_path / 'chain.jsonl'}",
                                        "--dev-key", "//Alice", "--db", str(fresh)],
                                env={"LEOMA_OWN_BUCKET_URL": f"file://{bucket}", "LEOMA_STATE_DIR": str(tmp_path),
                                     "CHUTES_API_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 0, result.output
    with EventLog(fresh, readonly=True) as log:
        assert log.verify().ok
        chain = list(log.chain(alice.ss58_address))
    assert [e.hash for e in chain[:5]] == published  # the bucket's events first, with their hashes
    assert [e.kind for e in chain[5:]][:1] == ["metagraph_observed"] and chain[5].origin_seq == 6
