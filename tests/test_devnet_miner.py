"""Done-when of the miner's path on a devnet: push, commit, checked, sampled, ranked, explained.

A new miner joins a running devnet (registered on the simulated chain; its Hugging Face repo
and chute exist in the world, as a deploy would leave them). It runs the real commands:
`leoma miner push` (with a stand-in `chutes` executable on PATH that records its arguments),
then the `leoma miner commit` line push printed, with a bittensor wallet, against the devnet's
`sim:` chain. The validators' own checker finds it valid, a task samples it (a response and a
verdict in a validator's log), a later `epoch_scored` ranks it, and `leoma miner status`
explains each of those steps from that validator's log, the chain and the Chutes API.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from leoma.devnet.config import DevnetConfig
from leoma.devnet.network import Devnet
from leoma.errors import LogError
from leoma.log import decisions
from leoma.log.eventlog import EventLog
from leoma.log.events import decode_body
from tests.test_miner import STANDIN

pytestmark = pytest.mark.slow

CONFIG = DevnetConfig(validators=2, miners=("faithful", "static"))


class Joined:
    def __init__(self, net: Devnet, hotkey: str, miner: Any, env: dict[str, str], record: Path) -> None:
        self.net, self.hotkey, self.miner, self.env, self.record = net, hotkey, miner, env, record
        self.push_output = ""
        self.commit_output = ""


def cli() -> click.Group:
    from leoma_cmd.chain_cmds import register as register_chain
    from leoma_cmd.miner_cmds import register as register_miner

    group = click.Group("leoma")
    register_chain(group)
    register_miner(group)
    return group


def run(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli(), args, env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Joined]:
    import bittensor as bt
    tmp = tmp_path_factory.mktemp("devnet-miner")
    net = Devnet.create(tmp / "net", CONFIG)
    net.start(api=False)
    try:
        wallets = tmp / "wallets"
        wallet = bt.Wallet(name="newcomer", hotkey="default", path=str(wallets))
        wallet.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
        wallet.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
        hotkey = wallet.hotkey.ss58_address
        miner = net.add_miner("newcomer", hotkey, coldkey=wallet.coldkeypub.ss58_address)
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        exe = bin_dir / "chutes"
        exe.write_text(STANDIN.format(python=sys.executable))
        exe.chmod(0o755)
        record = tmp / "record.json"
        env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "LEOMA_STANDIN_RECORD": str(record),
               "LEOMA_STANDIN_MODE": "ok", "CHUTES_API_KEY": "devnet", "CHUTE_USER": "newcomer",
               "CHUTES_API_URL": net.world.url, "HF_ENDPOINT": net.world.url, "BT_WALLET_PATH": str(wallets),
               "WALLET_NAME": "newcomer", "NETWORK": f"sim:{net.chain_path}", "NETUID": str(CONFIG.netuid)}
        j = Joined(net, hotkey, miner, env, record)
        pushed = run(["miner", "push", "--model-name", miner.repo_id, "--model-revision", miner.revision], env)
        assert pushed.exit_code == 0, pushed.output
        j.push_output = pushed.output
        commit_line = next(ln.strip() for ln in pushed.output.splitlines() if ln.strip().startswith("leoma miner"))
        committed = run(commit_line.split()[1:], env)
        assert committed.exit_code == 0, committed.output
        j.commit_output = committed.output
        assert net.wait_for(lambda: status_source(net, hotkey) is not None or bool(net.dead()), timeout=300, poll=1.0)
        assert not net.dead(), net.dead()
        yield j
    finally:
        net.stop()


def own_bodies(net: Devnet, name: str, kind: str) -> list[Any]:
    node = net.node(name)
    if not net.db_path(node).is_file():
        return []
    try:
        log = EventLog(net.db_path(node), readonly=True)
    except LogError:  # the process has created the file but not its tables yet
        return []
    with log:
        return [decode_body(r.body, r.v) for r in log.rows(kinds=[kind], origin=node.hotkey)]


def ranked_in(net: Devnet, hotkey: str, *, only: str | None = None) -> tuple[str, Any] | None:
    """(validator name, epoch decision) of the first validator whose decision ranks `hotkey` on verdicts.

    A valid miner is listed as soon as it is checked ("no verdicts in the window"); ranked means
    its verdicts were counted.
    """
    for node in net.validators:
        if (only is not None and node.name != only) or not net.db_path(node).is_file():
            continue
        try:
            log = EventLog(net.db_path(node), readonly=True)
        except LogError:  # the process has created the file but not its tables yet
            continue
        with log:
            # A decision keeps its per-miner aggregates in detail parts: read it joined.
            for found in decisions.recorded(log, origin=node.hotkey):
                scored = found.body
                if any(a.hotkey == hotkey and a.evaluated > 0 for a in scored.aggregates):
                    return node.name, scored
    return None


def status_source(net: Devnet, hotkey: str) -> tuple[str, Any] | None:
    """(validator name, epoch decision) to ask `leoma miner status --validator` about: a validator
    whose decision ranks `hotkey` on verdicts and whose own log holds a verdict it gave `hotkey`.

    A decision counts every allowlisted validator's verdicts (a peer's, imported, too), while
    `miner status --validator V` lists the tasks V sampled: the first validator whose decision
    ranks the miner may have counted only a peer's verdict, its own task for the miner still
    unjudged.
    """
    for node in net.validators:
        if not any(v.miner == hotkey for v in own_bodies(net, node.name, "verdict_recorded")):
            continue
        found = ranked_in(net, hotkey, only=node.name)
        if found is not None:
            return found
    return None


def test_push_ran_the_chutes_cli_and_printed_the_commit_line(joined: Joined) -> None:
    record = json.loads(joined.record.read_text())
    assert record["argv"] == ["deploy", "leoma_chute:chute", "--accept-fee"]
    assert f"MODEL_NAME = {joined.miner.repo_id!r}" in record["source"]
    assert f"as chute {joined.miner.chute_id}" in joined.push_output
    assert f"from {joined.hotkey}" in joined.commit_output


def test_the_validators_checker_sampler_and_scorer_took_it_in(joined: Joined) -> None:
    net, hotkey = joined.net, joined.hotkey
    found = ranked_in(net, hotkey)
    assert found is not None
    name, scored = found
    checks = [c for c in own_bodies(net, name, "miner_checked") if c.hotkey == hotkey]
    assert checks and checks[-1].valid and checks[-1].chute_id == joined.miner.chute_id  # the real checker
    responded = {b.task_id for n in net.validators for b in own_bodies(net, n.name, "miner_responded")
                 if b.miner == hotkey}
    verdicts = [b for n in net.validators for b in own_bodies(net, n.name, "verdict_recorded") if b.miner == hotkey]
    assert responded and verdicts and {v.task_id for v in verdicts} <= responded
    aggregate = next(a for a in scored.aggregates if a.hotkey == hotkey)
    assert aggregate.evaluated >= 1 and aggregate.uid == net.state.uids["newcomer"]
    assert scored.winner == net.state.miners["faithful"]  # a copy of the faithful model, committed later


def test_miner_status_explains_each_step(joined: Joined) -> None:
    net, hotkey = joined.net, joined.hotkey
    name, scored = status_source(net, hotkey) or ("", None)
    judged = {v.task_id for v in own_bodies(net, name, "verdict_recorded") if v.miner == hotkey}
    args = ["miner", "status", "--hotkey", hotkey, "--db", str(net.db_path(name)), "--validator",
            net.node(name).hotkey, "--network", f"sim:{net.chain_path}", "--netuid", str(CONFIG.netuid),
            "--chutes-api-url", net.world.url, "--tasks", "50"]
    env = {**joined.env, "LEOMA_CONSENSUS": str(net.consensus_path)}  # the devnet's dominance threshold
    as_json = run([*args, "--json"], env)
    assert as_json.exit_code == 0, as_json.output
    s = json.loads(as_json.output)
    assert s["unavailable"] == {}
    c = s["commitment"]
    assert (c["model_name"], c["model_revision"], c["chute_id"]) == (joined.miner.repo_id, joined.miner.revision,
                                                                    joined.miner.chute_id)
    assert c["block"] > 0 and c["problem"] == ""
    assert s["check"]["valid"] is True and s["check"]["commit_block"] == c["block"]
    assert {"chute_hot", "hf_revision"} <= {st["name"] for st in s["check"]["steps"]}
    assert s["chute"]["hot"] is True
    # the verdicts this validator gave on its own tasks for the miner (the status lists its newest 50)
    assert any(t["verdict"] in ("passed", "failed") and t["task_id"] in judged
               for t in s["tasks"]), (judged, s["tasks"])
    assert s["rank"] is not None and s["rank"]["epoch"] >= scored.epoch
    table = run(args, env)
    assert table.exit_code == 0, table.output
    out = table.output
    assert f"commitment   block {c['block']}" in out and "last check   block" in out and ": valid" in out
    assert f"chute        {joined.miner.chute_id}  hot" in out and "last tasks" in out
    assert f"epoch {s['rank']['epoch']}" in out and "next:" in out
