"""`leoma validator publish|list` and `leoma miner commit`, in-process and as separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import bittensor as bt

from leoma.adapters.simchain import SimChain  # noqa: E402
from leoma_cmd.chain_cmds import register  # noqa: E402

NETUID = 99
SHA = "0123456789abcdef0123456789abcdef01234567"
# Separate processes get the commands the same way `leoma` will once chain_cmds is registered.
CLI = "import click, leoma.adapters.simchain; from leoma_cmd.chain_cmds import register; g = click.Group('leoma'); register(g); g()"


def make_wallet(root: Path, name: str) -> object:
    w = bt.Wallet(name=name, hotkey="default", path=str(root))
    w.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
    w.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    return w


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(BTCLI_TOKEN_SYMBOLS_CACHE=str(tmp_path / "symbols.json"),
             BITTENSOR_RUNTIME_CACHE_DIR=str(tmp_path / "runtime-cache"),
             BT_WALLET_PATH=str(tmp_path / "wallets"), NETUID=str(NETUID))
    for k in ("WALLET_NAME", "HOTKEY_NAME", "NETWORK", "LEOMA_SOURCE_URL"):
        e.pop(k, None)
    return e


@pytest.fixture
def devnet(tmp_path: Path, env: dict[str, str]) -> dict:
    wallets = tmp_path / "wallets"
    owner, validator, miner = (make_wallet(wallets, n) for n in ("owner", "validator", "miner"))
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner.hotkey.ss58_address, clock="manual", netuid=NETUID,
                          weights_rate_limit=20)
    sim.register(owner.hotkey.ss58_address, owner.coldkeypub.ss58_address, stake=10**12, validator_permit=True)
    sim.register(validator.hotkey.ss58_address, validator.coldkeypub.ss58_address, stake=10**11, validator_permit=True)
    sim.register(miner.hotkey.ss58_address, miner.coldkeypub.ss58_address)
    env["NETWORK"] = f"sim:{sim.path}"
    env["LEOMA_SOURCE_URL"] = (tmp_path / "source").as_uri()
    return {"sim": sim, "owner": owner, "validator": validator, "miner": miner, "env": env}


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("leoma")
    register(group)
    return group


def invoke(cli: click.Group, env: dict[str, str], *args: str) -> object:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_register_reuses_existing_groups() -> None:
    group = click.Group("leoma")
    existing = click.Group("miner")
    group.add_command(existing)
    register(group)
    assert group.commands["miner"] is existing and "commit" in existing.commands
    assert set(group.commands["validator"].commands) == {"publish", "list"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "revision", "message"),
    [
        ("user/model-{hk}", SHA, "must start with 'leoma'"),
        ("user/leoma-model", SHA, "must end with your hotkey"),
        ("user/leoma-{hk}", "main", "full 40-character"),
        ("user/leoma-{hk}", SHA[:12], "full 40-character"),
        ("user/leoma-{hk}", SHA.upper(), "full 40-character"),
    ],
)
def test_miner_commit_refuses_locally(cli: click.Group, devnet: dict, name: str, revision: str, message: str) -> None:
    hk = devnet["miner"].hotkey.ss58_address
    lines = devnet["sim"].path.read_text().count("\n")
    result = invoke(cli, devnet["env"], "miner", "commit", "--wallet-name", "miner", "--model-name", name.format(hk=hk),
                    "--model-revision", revision, "--chute-id", "c1")
    assert result.exit_code != 0 and message in result.output
    assert devnet["sim"].path.read_text().count("\n") == lines


def test_missing_wallet_is_a_clear_error(cli: click.Group, devnet: dict) -> None:
    result = invoke(cli, devnet["env"], "miner", "commit", "--wallet-name", "nobody", "--model-name", "u/leoma-x",
                    "--model-revision", SHA, "--chute-id", "c1")
    assert result.exit_code != 0
    assert "wallet 'nobody' hotkey 'default' not found" in result.output and "btcli wallet new-hotkey" in result.output


def test_miner_commit_accepts_a_case_insensitive_hotkey_suffix(cli: click.Group, devnet: dict) -> None:
    hk = devnet["miner"].hotkey.ss58_address
    result = invoke(cli, devnet["env"], "miner", "commit", "--wallet-name", "miner", "--model-name",
                    f"User/LEOMA-{hk.upper()}", "--model-revision", SHA, "--chute-id", "c1")
    assert result.exit_code == 0, result.output
    assert "committed" in result.output


def test_unregistered_miner_commit_reports_the_refusal(cli: click.Group, devnet: dict, tmp_path: Path) -> None:
    stranger = make_wallet(tmp_path / "wallets", "stranger")
    hk = stranger.hotkey.ss58_address
    result = invoke(cli, devnet["env"], "miner", "commit", "--wallet-name", "stranger", "--model-name",
                    f"u/leoma-{hk}", "--model-revision", SHA, "--chute-id", "c1")
    assert result.exit_code != 0 and "AccountNotAllowedCommit" in result.output and "committed" not in result.output


def test_publish_only_from_the_owner_and_with_valid_input(cli: click.Group, devnet: dict) -> None:
    v = devnet["validator"].hotkey.ss58_address
    result = invoke(cli, devnet["env"], "validator", "publish", "--wallet-name", "validator", "--validators", v)
    assert result.exit_code != 0 and "not the owner" in result.output
    result = invoke(cli, devnet["env"], "validator", "publish", "--wallet-name", "owner", "--validators", "nope")
    assert result.exit_code != 0 and "not an SS58 address" in result.output
    result = invoke(cli, devnet["env"], "validator", "publish", "--wallet-name", "owner")
    assert result.exit_code != 0 and "exactly one of" in result.output
    result = invoke(cli, devnet["env"], "validator", "list")
    assert result.exit_code != 0 and "has not committed an allowlist" in result.output


def test_publish_from_file_and_list_table(cli: click.Group, devnet: dict, tmp_path: Path) -> None:
    owner, v = devnet["owner"].hotkey.ss58_address, devnet["validator"].hotkey.ss58_address
    listing = tmp_path / "validators.txt"
    listing.write_text(f"# allowlist\n{v}\n{owner}  # the owner validates too\n\n")
    result = invoke(cli, devnet["env"], "validator", "publish", "--wallet-name", "owner", "--from-file", str(listing),
                    "--interval", "50")
    assert result.exit_code == 0, result.output
    table = invoke(cli, devnet["env"], "validator", "list")
    assert table.exit_code == 0 and v in table.output and owner in table.output and "interval 50" in table.output
    as_json = json.loads(invoke(cli, devnet["env"], "validator", "list", "--json").output)
    assert as_json["validators"] == sorted([v, owner]) and as_json["interval"] == 50


VALIDATOR_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import leoma.adapters.simchain  # plugs `sim:` into the chain, as the `leoma` command does
    from leoma.mirror.allowlist import read_allowlist
    from leoma.adapters.chain import Chain
    from leoma.errors import ChainRefused
    from leoma.adapters.storage import open_store
    from leoma.adapters.wallets import load_wallet

    async def main():
        network, source, netuid = sys.argv[1], sys.argv[2], int(sys.argv[3])
        wallet = load_wallet("validator")
        async with Chain(network) as chain:
            allowlist = await read_allowlist(chain, open_store(source), netuid)
            history = await chain.commitments(netuid)
            mg = await chain.metagraph(netuid)
            miner_uid = 2
            first = await chain.set_weights(wallet, netuid, [miner_uid], [1.0])
            back = await chain.weights(netuid, mg.hotkeys.index(wallet.hotkey.ss58_address))
            try:
                await chain.set_weights(wallet, netuid, [miner_uid], [1.0])
                second = "accepted"
            except ChainRefused as exc:
                second = exc.reason
            print(json.dumps({
                "validators": list(allowlist.validators), "interval": allowlist.interval,
                "commitments": {hk: [[e.block, e.text] for e in h.entries] for hk, h in history.items()},
                "commit_block": {hk: h.commit_block for hk, h in history.items()},
                "first": first.extrinsic_id, "read_back": back, "second": second,
            }))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_done_when_three_processes_share_one_chain(devnet: dict, tmp_path: Path) -> None:
    env, sim = devnet["env"], devnet["sim"]
    owner, v, miner = (devnet[k].hotkey.ss58_address for k in ("owner", "validator", "miner"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)

    published = run("-c", CLI, "validator", "publish", "--wallet-name", "owner", "--validators", f"{v},{owner}")
    assert published.returncode == 0, published.stderr
    model = f"someone/leoma-{miner}"
    committed = run("-c", CLI, "miner", "commit", "--wallet-name", "miner", "--model-name", model,
                    "--model-revision", SHA, "--chute-id", "chute-abc")
    assert committed.returncode == 0, committed.stderr
    reveal = int(committed.stdout.rsplit("reveal round", 1)[1])
    sim.advance_to(reveal)  # the chain reveals the miner's commitment at that block

    script = tmp_path / "validator.py"
    script.write_text(VALIDATOR_SCRIPT)
    seen = run(str(script), env["NETWORK"], env["LEOMA_SOURCE_URL"], str(NETUID))
    assert seen.returncode == 0, seen.stderr
    out = json.loads(seen.stdout)
    assert out["validators"] == sorted([v, owner]) and out["interval"] == 100
    payload = json.dumps({"model_name": model, "model_revision": SHA, "chute_id": "chute-abc"})
    assert out["commitments"][miner] == [[reveal, payload]]
    assert out["commit_block"][miner] == reveal
    assert out["read_back"] == [[2, 65535]]
    assert out["second"] == "SettingWeightsTooFast"
