"""The simulated chain, driven through the real bittensor SDK Client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import bittensor as bt
from bittensor.sp_core import Keypair  # noqa: E402

from leoma.adapters.simchain import SimChain, SimSubstrate  # noqa: E402
from leoma.errors import ConfigError  # noqa: E402

NETUID = 7
OWNER = Keypair.create_from_uri("//Alice")
VALIDATOR = Keypair.create_from_uri("//Bob")
MINER = Keypair.create_from_uri("//Charlie")
STRANGER = Keypair.create_from_uri("//Dave")


@pytest.fixture(autouse=True)
def _sdk_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "symbols.json"))
    monkeypatch.setenv("BITTENSOR_RUNTIME_CACHE_DIR", str(tmp_path / "runtime-cache"))


@pytest.fixture
def chain(tmp_path: Path) -> SimChain:
    c = SimChain.create(tmp_path / "chain.jsonl", owner=OWNER.ss58_address, clock="manual", netuid=NETUID,
                        weights_rate_limit=10, weights_version_key=3)
    c.register(OWNER.ss58_address, stake=10**12, validator_permit=True)
    c.register(VALIDATOR.ss58_address, stake=5 * 10**11, validator_permit=True)
    c.register(MINER.ss58_address)
    return c


def raw_commit(text: bytes) -> object:
    return bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": [{f"Raw{len(text)}": "0x" + text.hex()}]})


def raw_weights(dests: list[int], values: list[int], version_key: int = 3) -> object:
    return bt.calls.SubtensorModule.set_mechanism_weights(netuid=NETUID, mecid=0, dests=dests, weights=values,
                                                           version_key=version_key)


async def test_block_hashes_are_deterministic_and_steps_move_the_head(chain: SimChain) -> None:
    assert chain.head() == 1000
    assert chain.block_hash(5) == chain.block_hash(5) != chain.block_hash(6)
    assert chain.step(3) == 1003
    assert chain.advance_to(1010) == 1010
    assert chain.advance_to(1001) == 1010  # never backwards
    reopened = SimChain.open(chain.path)
    assert reopened.head() == 1010 and reopened.block_hash(5) == chain.block_hash(5)


def test_create_refuses_to_overwrite_and_open_needs_a_journal(chain: SimChain, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        SimChain.create(chain.path, owner=OWNER.ss58_address)
    with pytest.raises(ConfigError, match="no simulated chain"):
        SimChain.open(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="unknown simulated chain parameter"):
        SimChain.create(tmp_path / "x.jsonl", owner=OWNER.ss58_address, bogus=1)


def test_realtime_clock_starts_at_the_start_block(tmp_path: Path) -> None:
    c = SimChain.create(tmp_path / "rt.jsonl", owner=OWNER.ss58_address, block_time=3600.0, start_block=50)
    assert c.head() == 50  # a one-hour block cannot have passed yet
    assert c.step(2) == 52


async def test_sdk_reads_metagraph_and_plain_commitment(chain: SimChain) -> None:
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        res = await client.submit_call(raw_commit(b"hello"), MINER, signer="hotkey")
        assert res.success and res.extrinsic_id == "1001-0000"
        mg = await client.subnets.metagraph(NETUID)
        assert [n.hotkey for n in mg.neurons] == [OWNER.ss58_address, VALIDATOR.ss58_address, MINER.ss58_address]
        assert mg.owner_hotkey == OWNER.ss58_address
        assert [n.validator_permit for n in mg.neurons] == [True, True, False]
        assert mg.neurons[1].total_stake.rao == 5 * 10**11
        one = await client.identity.commitment(NETUID, MINER.ss58_address)
        assert one is not None and one.data == "hello" and one.block == 1001
        assert await client.subnets.metagraph(NETUID + 1) is None


async def test_unregistered_hotkey_cannot_commit(chain: SimChain) -> None:
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        res = await client.submit_call(raw_commit(b"x"), STRANGER, signer="hotkey")
        assert not res.success and res.error.name == "AccountNotAllowedCommit"


async def test_timelocked_commitment_reveals_after_n_blocks_and_keeps_history(chain: SimChain) -> None:
    sub = SimSubstrate(chain)
    async with bt.Client("local", substrate=sub) as client:
        commits = []
        for text, wait in ((b'{"v": 1}', 3), (b'{"v": 2}', 1)):
            encrypted, reveal = sub.seal(text, wait)
            info = {"fields": [{"TimelockEncrypted": {"encrypted": encrypted, "reveal_round": reveal}}]}
            res = await client.submit_call(bt.calls.Commitments.set_commitment(netuid=NETUID, info=info), MINER,
                                           signer="hotkey")
            assert res.success
            commit_block = int(res.extrinsic_id.split("-")[0])
            assert reveal == commit_block + wait
            commits.append((commit_block, reveal))
            before = (await client.subnets.commitments(NETUID)).get(MINER.ss58_address)
            assert before is None or all(b < commit_block for b, _ in before.revealed)  # sealed until reveal
            chain.advance_to(reveal - 1)
            sealed = (await client.subnets.commitments(NETUID))[MINER.ss58_address]
            assert sealed.status == "sealed"
            chain.advance_to(reveal)
        found = (await client.subnets.commitments(NETUID))[MINER.ss58_address]
        assert found.revealed == [(commits[0][1], '{"v": 1}'), (commits[1][1], '{"v": 2}')]
        # an earlier block still sees the first reveal only
        old = await (await client.at(commits[1][0])).subnets.commitments(NETUID)
        assert [t for _, t in old[MINER.ss58_address].revealed] == ['{"v": 1}']


async def test_a_payload_sealed_to_real_drand_stays_sealed(chain: SimChain) -> None:
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        info = {"fields": [{"TimelockEncrypted": {"encrypted": b"\x01" * 40, "reveal_round": 1002}}]}
        res = await client.submit_call(bt.calls.Commitments.set_commitment(netuid=NETUID, info=info), MINER,
                                       signer="hotkey")
        assert res.success
        chain.step(5)
        assert (await client.subnets.commitments(NETUID))[MINER.ss58_address].status == "sealed"


async def test_set_weights_lands_and_the_chain_rate_limits(chain: SimChain) -> None:
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        res = await client.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0}, version_key=3), VALIDATOR)
        assert res.success
        assert (await client.weights.weights(NETUID))[1] == {2: 1.0}
        # the SDK preflight refuses before signing ...
        with pytest.raises(bt.ChainError) as refused:
            await client.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0}, version_key=3), VALIDATOR)
        assert refused.value.code == bt.ErrorCode.RATE_LIMITED
        # ... and the chain itself refuses a raw call that skips the preflight
        res = await client.submit_call(raw_weights([2], [65535]), VALIDATOR, signer="hotkey")
        assert not res.success and res.error.name == "SettingWeightsTooFast"
        chain.step(10)
        assert (await client.submit_call(raw_weights([0], [65535]), VALIDATOR, signer="hotkey")).success
        assert (await client.weights.weights(NETUID))[1] == {0: 1.0}


@pytest.mark.parametrize(
    ("signer", "call", "error"),
    [
        (STRANGER, raw_weights([2], [65535]), "HotKeyNotRegisteredInSubNet"),
        (VALIDATOR, raw_weights([2], [65535], version_key=2), "IncorrectWeightVersionKey"),
        (MINER, raw_weights([0], [65535]), "NeuronNoValidatorPermit"),
        (VALIDATOR, raw_weights([9], [65535]), "UidVecContainInvalidOne"),
    ],
    ids=["not-registered", "version-key", "no-permit", "bad-uid"],
)
async def test_chain_errors(chain: SimChain, signer: Keypair, call: object, error: str) -> None:
    lines_before = chain.path.read_text().count("\n")
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        res = await client.submit_call(call, signer, signer="hotkey")
    assert not res.success and res.error.name == error
    assert chain.path.read_text().count("\n") == lines_before  # a refused extrinsic changes nothing


async def test_commit_reveal_path_records_the_commit(chain: SimChain) -> None:
    chain.set_param("commit_reveal", True)
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        res = await client.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0}, version_key=3), VALIDATOR)
        assert res.success and res.data.get("reveal_round")
        pending = await client.weights.timelocked_weight_commits(NETUID)
        assert [c["hotkey"] for rows in pending.values() for c in rows] == [VALIDATOR.ss58_address]
        assert await client.epochs.blocks_since_last_update(NETUID, 1) == 0


async def test_two_processes_share_one_journal(chain: SimChain) -> None:
    other = SimChain.open(chain.path)
    async with bt.Client("local", substrate=SimSubstrate(other)) as client:
        assert (await client.submit_call(raw_commit(b"from-other"), MINER, signer="hotkey")).success
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        one = await client.identity.commitment(NETUID, MINER.ss58_address)
        assert one is not None and one.data == "from-other"
    ops = [json.loads(line)["op"] for line in chain.path.read_text().splitlines()]
    assert ops == ["genesis", "register", "register", "register", "extrinsic"]


def raw_weight_commit(commit: bytes, reveal_round: int, version: int = 4) -> object:
    return bt.calls.SubtensorModule.commit_timelocked_mechanism_weights(
        netuid=NETUID, mecid=0, commit=commit, reveal_round=reveal_round, commit_reveal_version=version)


async def test_sdk_commit_is_revealed_by_the_chain_at_the_reveal_epoch(chain: SimChain) -> None:
    from leoma.adapters import beacon

    chain.set_param("commit_reveal", True)
    sub = SimSubstrate(chain)
    async with bt.Client("local", substrate=sub) as client:
        with sub.sealing():
            res = await client.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0}, version_key=3), VALIDATOR)
        assert res.success and res.data["reveal_round"] > 0
    commit_block = int(res.extrinsic_id.split("-")[0])
    reveal_epoch_start = (commit_block // 361 + 1) * 361  # tempo 360: an epoch is 361 blocks
    (pending,) = chain.state().weight_commits
    # Revealed in the reveal epoch, at the first block that has the SDK's drand round.
    reveal = pending["reveal_block"]
    assert reveal >= reveal_epoch_start and pending["reveal_round"] == res.data["reveal_round"]
    assert reveal == beacon.first_block_with_pulse(pending["reveal_round"], genesis_time=chain.genesis["genesis_time"],
                                                  start_block=1000, block_time=12.0) or reveal == reveal_epoch_start
    chain.advance_to(reveal + 5)
    before, at = chain.state(reveal - 1), chain.state(reveal)
    assert before.weights == {} and len(before.weight_commits) == 1
    assert at.weights == {1: [(2, 65535)]} and at.weight_commits == []
    assert at.last_update[1] == reveal, "the reveal stamps LastUpdate"
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        assert await client.weights.timelocked_weight_commits(NETUID) == {}
        assert (await client.weights.weights(NETUID))[1] == {2: 1.0}


async def test_a_commit_sealed_to_real_drand_is_never_revealed_here(chain: SimChain) -> None:
    chain.set_param("commit_reveal", True)
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:  # no sealing(): quicknet's key
        assert (await client.execute(bt.SetWeights(netuid=NETUID, weights={2: 1.0}, version_key=3), VALIDATOR)).success
    chain.step(3 * 361)
    state = chain.state()
    assert state.weights == {} and state.weight_commits == []


async def test_a_reveal_carrying_another_hotkey_is_dropped(chain: SimChain) -> None:
    from leoma.adapters import beacon

    chain.set_param("commit_reveal", True)
    forged = beacon.WeightsPayload(hotkey=bytes(MINER.public_key), uids=(2,), values=(65535,), version_key=3)
    reveal_round = 1
    commit = beacon.seal(chain.seed, beacon.encode_payload(forged), reveal_round)
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        assert (await client.submit_call(raw_weight_commit(commit, reveal_round), VALIDATOR, signer="hotkey")).success
    chain.step(2 * 361)
    assert chain.state().weights == {}


@pytest.mark.parametrize(
    ("setup", "call", "error"),
    [
        ({"commit_reveal": False}, lambda: raw_weight_commit(b"x", 1), "CommitRevealDisabled"),
        ({"commit_reveal": True}, lambda: raw_weight_commit(b"x", 1, version=3), "IncorrectCommitRevealVersion"),
        ({"commit_reveal": True}, lambda: raw_weights([2], [65535]), "CommitRevealEnabled"),
    ],
    ids=["disabled", "version", "plain-on-commit-reveal"],
)
async def test_commit_reveal_rules(chain: SimChain, setup: dict, call, error: str) -> None:  # type: ignore[no-untyped-def]
    for name, value in setup.items():
        chain.set_param(name, value)
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        res = await client.submit_call(call(), VALIDATOR, signer="hotkey")
    assert not res.success and res.error.name == error


async def test_commits_are_rate_limited_and_capped(chain: SimChain) -> None:
    from leoma.adapters.simchain import MAX_UNREVEALED_COMMITS

    chain.set_param("commit_reveal", True)
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        assert (await client.submit_call(raw_weight_commit(b"a", 1), VALIDATOR, signer="hotkey")).success
        fast = await client.submit_call(raw_weight_commit(b"b", 1), VALIDATOR, signer="hotkey")
        assert not fast.success and fast.error.name == "CommittingWeightsTooFast"
        chain.set_param("weights_rate_limit", 0)
        for _ in range(MAX_UNREVEALED_COMMITS - 1):
            assert (await client.submit_call(raw_weight_commit(b"c", 1), VALIDATOR, signer="hotkey")).success
        capped = await client.submit_call(raw_weight_commit(b"d", 1), VALIDATOR, signer="hotkey")
        assert not capped.success and capped.error.name == "TooManyUnrevealedCommits"


async def test_commitments_are_limited_by_space_per_epoch_not_by_block(chain: SimChain) -> None:
    """pallets/commitments: each commit uses max(100, its bytes) of 3100 per hotkey and subnet
    epoch; a `Raw` field holds at most 128 bytes; the call is free (no deposit)."""
    tempo = chain.state().tempo
    async with bt.Client("local", substrate=SimSubstrate(chain)) as client:
        start = chain.head()
        accepted = 0
        for _ in range(32):  # 31 small commits fit (31 x 100 = 3100), the 32nd does not
            res = await client.submit_call(raw_commit(b"tiny"), MINER, signer="hotkey")
            if not res.success:
                assert res.error.name == "SpaceLimitExceeded"
                break
            accepted += 1
        assert accepted == 31
        assert chain.state().epoch_index(chain.head()) == chain.state().epoch_index(start)
        one = await client.identity.commitment(NETUID, MINER.ss58_address)
        assert one is not None and one.deposit.rao == 0
        # another hotkey has its own budget
        assert (await client.submit_call(raw_commit(b"x"), VALIDATOR, signer="hotkey")).success
        # big fields count their bytes: 3 x 128 = 384 per commit
        big = bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": [{"Raw128": "0x" + "61" * 128}] * 3})
        assert (await client.submit_call(big, VALIDATOR, signer="hotkey")).success
        four = bt.calls.Commitments.set_commitment(netuid=NETUID, info={"fields": [{"Raw1": "0x61"}] * 4})
        res = await client.submit_call(four, VALIDATOR, signer="hotkey")
        assert not res.success and res.error.name == "TooManyFieldsInCommitmentInfo"
        # the next subnet epoch resets the window
        chain.advance_to((chain.state().epoch_index(chain.head()) + 1) * (tempo + 1))
        assert (await client.submit_call(raw_commit(b"tiny"), MINER, signer="hotkey")).success
