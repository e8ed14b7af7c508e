"""`leoma.adapters.chain.Chain` over the real SDK Client on the simulated chain (and, optionally, a live node)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bittensor.sp_core import Keypair  # noqa: E402

from leoma.adapters.chain import Chain, commitment_payload  # noqa: E402
from leoma.adapters.simchain import SimChain  # noqa: E402
from leoma.errors import ChainError, ChainRefused, ConfigError  # noqa: E402

NETUID = 99
OWNER = Keypair.create_from_uri("//Alice")
VALIDATOR = Keypair.create_from_uri("//Bob")
MINER = Keypair.create_from_uri("//Charlie")
STRANGER = Keypair.create_from_uri("//Dave")


def wallet(kp: Keypair) -> SimpleNamespace:
    return SimpleNamespace(coldkey=kp, coldkeypub=kp, hotkey=kp)


@pytest.fixture(autouse=True)
def _sdk_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "symbols.json"))
    monkeypatch.setenv("BITTENSOR_RUNTIME_CACHE_DIR", str(tmp_path / "runtime-cache"))


@pytest.fixture
def sim(tmp_path: Path) -> SimChain:
    c = SimChain.create(tmp_path / "chain.jsonl", owner=OWNER.ss58_address, clock="manual", netuid=NETUID,
                        tempo=360, weights_rate_limit=50, weights_version_key=7)
    c.register(OWNER.ss58_address, "5Owner-cold", stake=10**12, validator_permit=True)
    c.register(VALIDATOR.ss58_address, "5Val-cold", stake=3 * 10**11, validator_permit=True)
    c.register(MINER.ss58_address, "5Miner-cold")
    return c


@pytest.fixture
async def chain(sim: SimChain):
    async with Chain(f"sim:{sim.path}") as c:
        yield c


def test_unknown_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown network"):
        Chain("mainnet")


async def test_a_network_scheme_is_opened_by_the_adapter_that_registered_it(sim: SimChain) -> None:
    from leoma.adapters.chain import register_scheme, registered_schemes
    from leoma.adapters.simchain import open_backend

    opened: list[str] = []

    def factory(rest: str) -> Any:
        opened.append(rest)
        return open_backend(rest)

    register_scheme("simcopy", factory)
    assert {"sim", "simcopy"} <= set(registered_schemes())
    async with Chain(f"simcopy:{sim.path}") as c:
        assert (await c.head())[0] == 1000
    assert opened == [str(sim.path)]


async def test_an_unregistered_scheme_says_who_registers_schemes() -> None:
    with pytest.raises(ConfigError, match="no adapter registered the scheme 'nosuch'.*registered: .*sim"):
        async with Chain("nosuch:/x") as c:
            await c.head()


async def test_head_and_block_hash(chain: Chain, sim: SimChain) -> None:
    block, block_hash = await chain.head()
    assert block == 1000 and block_hash == sim.block_hash(1000) == await chain.block_hash(1000)


async def test_metagraph(chain: Chain) -> None:
    mg = await chain.metagraph(NETUID)
    assert mg.uids == (0, 1, 2)
    assert mg.hotkeys == (OWNER.ss58_address, VALIDATOR.ss58_address, MINER.ss58_address)
    assert mg.coldkeys == ("5Owner-cold", "5Val-cold", "5Miner-cold")
    assert mg.stakes == (10**12, 3 * 10**11, 0)
    assert mg.validator_permit == (True, True, False)
    assert mg.owner_hotkey == OWNER.ss58_address and mg.block == 1000
    with pytest.raises(ChainError, match="subnet 5 does not exist"):
        await chain.metagraph(5)


async def test_commitments_history_commit_block_and_count(chain: Chain, sim: SimChain) -> None:
    first = commitment_payload("u/leoma-a", "a" * 40, "chute-1")
    second = commitment_payload("u/leoma-b", "b" * 40, "chute-2")
    r1 = await chain.set_timelocked_commitment(wallet(MINER), NETUID, first, blocks_until_reveal=2)
    assert MINER.ss58_address not in await chain.commitments(NETUID)  # sealed
    sim.advance_to(r1)
    r2 = await chain.set_timelocked_commitment(wallet(MINER), NETUID, second)
    sim.advance_to(r2)
    history = (await chain.commitments(NETUID))[MINER.ss58_address]
    assert [e.text for e in history.entries] == [first, second]
    assert history.count == 2 and history.commit_block == r2 == history.latest.block
    assert json.loads(history.latest.text)["chute_id"] == "chute-2"


async def test_plain_commitment(chain: Chain) -> None:
    assert await chain.plain_commitment(NETUID, OWNER.ss58_address) is None
    block = await chain.set_commitment(wallet(OWNER), NETUID, "leoma:allowlist:v1:" + "0" * 64)
    assert block == 1001
    assert await chain.plain_commitment(NETUID, OWNER.ss58_address) == "leoma:allowlist:v1:" + "0" * 64
    history = (await chain.commitments(NETUID))[OWNER.ss58_address]
    assert history.count == 1 and history.commit_block == 1001
    assert await chain.owner_hotkey(NETUID) == OWNER.ss58_address


async def test_long_plain_commitment_spans_fields(chain: Chain) -> None:
    text = "x" * 300
    await chain.set_commitment(wallet(OWNER), NETUID, text)
    assert await chain.plain_commitment(NETUID, OWNER.ss58_address) == text


async def test_unregistered_commitment_is_refused(chain: Chain) -> None:
    with pytest.raises(ChainRefused) as refused:
        await chain.set_commitment(wallet(STRANGER), NETUID, "hi")
    assert refused.value.reason == "AccountNotAllowedCommit"


async def test_hyperparameters(chain: Chain) -> None:
    assert await chain.weights_rate_limit(NETUID) == 50
    assert await chain.tempo(NETUID) == 360
    assert await chain.blocks_since_last_update(NETUID, 1) is None


async def test_set_weights_lands_then_rate_limit_refuses_without_submitting(chain: Chain, sim: SimChain) -> None:
    result = await chain.set_weights(wallet(VALIDATOR), NETUID, [2, 0], [0.75, 0.25])
    assert result.version_key == 7 and not result.committed  # the key came from the chain
    assert sorted(await chain.weights(NETUID, 1)) == [(0, 21845), (2, 65535)]
    assert await chain.blocks_since_last_update(NETUID, 1) == 0
    lines = sim.path.read_text().count("\n")
    with pytest.raises(ChainRefused) as refused:
        await chain.set_weights(wallet(VALIDATOR), NETUID, [2], [1.0])
    assert refused.value.reason == "SettingWeightsTooFast" and "SettingWeightsTooFast" in str(refused.value)
    assert sim.path.read_text().count("\n") == lines  # nothing was submitted
    sim.step(50)
    await chain.set_weights(wallet(VALIDATOR), NETUID, [2], [1.0])
    assert await chain.weights(NETUID, 1) == [(2, 65535)]


async def test_set_weights_refusals_carry_the_chain_reason(chain: Chain) -> None:
    with pytest.raises(ChainRefused) as not_registered:
        await chain.set_weights(wallet(STRANGER), NETUID, [0], [1.0])
    assert not_registered.value.reason == "HotKeyNotRegisteredInSubNet"
    with pytest.raises(ChainRefused) as no_permit:
        await chain.set_weights(wallet(MINER), NETUID, [0], [1.0])
    assert no_permit.value.reason == "NeuronNoValidatorPermit"
    assert await chain.weights(NETUID, 2) == []


async def test_commit_reveal_is_chosen_from_chain_state(chain: Chain, sim: SimChain) -> None:
    sim.set_param("commit_reveal", True)
    result = await chain.set_weights(wallet(VALIDATOR), NETUID, [2], [1.0])
    assert result.committed and result.reveal_round
    assert await chain.weights(NETUID, 1) == []  # hidden until the reveal


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_node_is_a_chain_error() -> None:
    async with Chain(f"ws://127.0.0.1:{_closed_port()}", timeout=10) as chain:
        with pytest.raises(ChainError, match="cannot connect|failed twice|no answer"):
            await chain.head()


@pytest.mark.skipif(not os.environ.get("LEOMA_E2E_ENDPOINT"), reason="LEOMA_E2E_ENDPOINT is not set")
async def test_live_node_reads() -> None:
    async with Chain(os.environ["LEOMA_E2E_ENDPOINT"]) as chain:
        block, block_hash = await chain.head()
        assert block > 0 and block_hash.startswith("0x")
        netuid = int(os.environ.get("LEOMA_E2E_NETUID", "1"))
        mg = await chain.metagraph(netuid)
        assert len(mg.hotkeys) == len(mg.uids)
        await chain.commitments(netuid)
