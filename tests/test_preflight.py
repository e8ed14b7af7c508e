"""`leoma preflight` against a devnet-like subnet: it passes, and each broken setting fails its own line.

The subnet is real in every part preflight touches: a simulated chain (realtime clock) with the
SDK on top, the owner's allowlist published to a source bucket and anchored on chain, a peer
that published its log under the same consensus, and the local world serving the Gemini and
Chutes APIs (the Chutes stand-in checks its key).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from leoma.adapters.chain import Chain
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.devnet.world import World
from leoma.log.consensus import DEFAULT
from leoma.log.eventlog import EventLog
from leoma.log.events import ChainHeadObserved
from leoma.mirror.allowlist import publish_allowlist
from leoma.mirror.out import MirrorOut
from leoma.ops.config import Settings
from leoma.tools.preflight import run_preflight

NETUID = 99
CHUTES_KEY = "cpk-preflight"


def _wallet(kp: Any) -> SimpleNamespace:
    return SimpleNamespace(hotkey=kp, coldkey=kp, coldkeypub=kp)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _publish_peer(root: Path, kp: Any, digest: str) -> None:
    """A peer's log of one event, published to its bucket under consensus `digest`."""
    with EventLog(root.with_name(root.name + ".db"), own=kp.ss58_address) as log:
        log.append(ChainHeadObserved(block_hash="0x" + "00" * 32), key="head/1000", block=1000)
        store = DirectoryStore(root)
        await MirrorOut(log, store, kp, digest).push()
        await store.close()


class Subnet:
    def __init__(self, root: Path, world: World, me: Any, peer: Any) -> None:
        self.root, self.world, self.me, self.peer = root, world, me, peer

    def env(self, **changes: str) -> dict[str, str]:
        base = {
            "NETWORK": f"sim:{self.root / 'chain.jsonl'}", "NETUID": str(NETUID), "LEOMA_DEV_KEY": "//Bob",
            "GEMINI_API_KEY": "preflight-gemini", "LEOMA_GEMINI_BASE_URL": self.world.url,
            "CHUTES_API_URL": self.world.url, "CHUTES_API_KEY": CHUTES_KEY,
            "LEOMA_SOURCE_URL": (self.root / "source").as_uri(), "LEOMA_OWN_BUCKET_URL": (self.root / "own").as_uri(),
            "PEER_VALIDATORS": json.dumps([{"hotkey": self.peer.ss58_address, "url": (self.root / "peer").as_uri()}]),
            "LEOMA_DB": str(self.root / "me.db"), "LEOMA_STATE_DIR": str(self.root / "state"),
        }
        return {**base, **changes}

    def run(self, **changes: str) -> dict[str, Any]:
        checks = asyncio.run(run_preflight(Settings.load(env=self.env(**changes), dotenv=False)))
        return {c.name: c for c in checks}


@pytest.fixture(scope="module")
def subnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Subnet]:
    root = tmp_path_factory.mktemp("preflight")
    owner, me, peer = (keypair_from_uri(u) for u in ("//Alice", "//Bob", "//Charlie"))
    # realtime and fast: the chain's timestamps are this machine's clock
    sim = SimChain.create(root / "chain.jsonl", owner=owner.ss58_address, clock="realtime", block_time=0.05,
                          netuid=NETUID, tempo=360)
    sim.register(owner.ss58_address, stake=10**12, validator_permit=True)
    sim.register(me.ss58_address, stake=10**11, validator_permit=True)
    sim.register(peer.ss58_address, stake=10**11, validator_permit=True)
    sim.register(keypair_from_uri("//Dave").ss58_address)  # registered, no permit
    world = World(chutes_api_key=CHUTES_KEY)
    world.add_miner("faithful", name="faithful", hotkey=keypair_from_uri("//miner").ss58_address)
    world.start_thread()

    async def setup() -> None:
        source = DirectoryStore(root / "source")
        await source.put("2026/01/clip-0.mp4", b"\x00" * 64, content_type="video/mp4")
        async with Chain(f"sim:{root / 'chain.jsonl'}") as chain:
            await publish_allowlist(source, chain, _wallet(owner), NETUID,
                                    [me.ss58_address, peer.ss58_address, keypair_from_uri("//Dave").ss58_address], 50)
        await source.close()
        await _publish_peer(root / "peer", peer, DEFAULT.digest)
        await _publish_peer(root / "peer-other", peer, DEFAULT.digest[::-1])  # another consensus

    asyncio.run(setup())
    try:
        yield Subnet(root, world, me, peer)
    finally:
        world.stop_thread()


def test_a_good_configuration_passes_every_line(subnet: Subnet) -> None:
    checks = subnet.run()
    assert [n for n, c in checks.items() if not c.ok] == []
    assert list(checks) == ["wallet", "chain", "registered", "validator permit", "clock", "own bucket",
                            "source bucket", "allowlist", f"peer {subnet.peer.ss58_address[:12]}", "judge", "chutes"]
    assert "wrote, read back and deleted preflight/" in checks["own bucket"].detail
    assert not any((subnet.root / "own").rglob("*.txt")), "the probe object was deleted"
    assert "the key is accepted" in checks["chutes"].detail


@pytest.mark.parametrize(
    ("changes", "line", "says"),
    [
        ({"CHUTES_API_KEY": "cpk-wrong"}, "chutes", "refused the key"),
        ({"LEOMA_DEV_KEY": "//Eve"}, "registered", "is not registered on subnet 99"),
        ({"LEOMA_DEV_KEY": "//Dave"}, "validator permit", "has no validator permit"),
        ({"PEER_VALIDATORS": "peer-file"}, "peer", "no checkpoint published"),
        ({"PEER_VALIDATORS": "peer-other"}, "peer", "under consensus digest"),
        ({"LEOMA_GEMINI_BASE_URL": "dead"}, "judge", "connect"),
        ({"LEOMA_OWN_BUCKET_URL": "file-as-bucket"}, "own bucket", ""),
    ],
    ids=["wrong-chutes-key", "unregistered-hotkey", "no-permit", "unreadable-peer", "other-digest", "dead-judge",
         "unwritable-own-bucket"],
)
def test_each_broken_setting_fails_its_own_line(subnet: Subnet, changes: dict[str, str], line: str, says: str) -> None:
    peer = subnet.peer.ss58_address
    if changes.get("PEER_VALIDATORS") == "peer-file":
        blocker = subnet.root / "not-a-bucket"
        blocker.write_text("a file where the bucket should be\n")
        changes = {"PEER_VALIDATORS": json.dumps([{"hotkey": peer, "url": (blocker / "inner").as_uri()}])}
    elif changes.get("PEER_VALIDATORS") == "peer-other":
        changes = {"PEER_VALIDATORS": json.dumps([{"hotkey": peer, "url": (subnet.root / "peer-other").as_uri()}])}
    elif changes.get("LEOMA_GEMINI_BASE_URL") == "dead":
        changes = {"LEOMA_GEMINI_BASE_URL": f"http://127.0.0.1:{_closed_port()}"}
    elif changes.get("LEOMA_OWN_BUCKET_URL") == "file-as-bucket":
        blocker = subnet.root / "own-file"
        blocker.write_text("not a directory\n")
        changes = {"LEOMA_OWN_BUCKET_URL": (blocker / "inner").as_uri()}
    checks = subnet.run(**changes)
    failed = [name for name, c in checks.items() if not c.ok]
    name = line if line != "peer" else f"peer {peer[:12]}"
    assert failed and failed[0] == name, failed
    assert says.lower() in checks[name].detail.lower(), checks[name].detail
    assert checks[name].fix, "a failing line says how to fix it"
    if line == "registered":
        assert checks["validator permit"].detail.startswith("skipped: needs a registered hotkey")


def test_the_command_prints_one_line_per_check_and_exits_1_on_failure(subnet: Subnet) -> None:
    from leoma_cmd.main import cli

    ok = CliRunner().invoke(cli, ["preflight"], env=subnet.env())
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[-1] == "all checks passed" and len(ok.output.splitlines()) == 12
    bad = CliRunner().invoke(cli, ["preflight", "--json"], env=subnet.env(CHUTES_API_KEY="cpk-wrong"))
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["chutes"]
    people = CliRunner().invoke(cli, ["preflight"], env=subnet.env(LEOMA_DEV_KEY="//Eve"))
    assert people.exit_code == 1 and "FAIL  registered" in people.output and "-> fix: register the hotkey" in people.output
