"""Chain commands: the owner publishes the validator allowlist, miners commit their model.

    leoma validator publish   (owner)  put allowlist/v1.json in the source bucket, commit its digest
    leoma validator list               the verified on-chain allowlist
    leoma miner commit        (miner)  timelocked commitment of model name, revision and chute id

Library code lives in `leoma.mirror.allowlist`, `leoma.adapters.chain` and `leoma.adapters.wallets`; this is the click layer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from leoma.adapters.wallets import load_wallet, wallet_options
from leoma.errors import LeomaError

from .output import json_option, output_format, print_json, print_table, subgroup

F = TypeVar("F", bound=Callable[..., Any])
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def chain_options(fn: F) -> F:
    """`--network` and `--netuid`, read from NETWORK / NETUID when not given."""
    fn = click.option("--netuid", envvar="NETUID", type=int, default=99, show_default=True,
                      help="Subnet id (env NETUID).")(fn)
    fn = click.option("--network", envvar="NETWORK", default="finney", show_default=True,
                      help="finney, test, local, ws://..., wss://... or sim:PATH (env NETWORK).")(fn)
    return fn


def source_option(fn: F) -> F:
    return click.option("--source", "source_url", envvar="LEOMA_SOURCE_URL", required=True,
                        help="Source bucket URL holding allowlist/v1.json: file:///path or s3://bucket?... "
                        "(env LEOMA_SOURCE_URL).")(fn)


T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; Leoma's errors become click errors with the same message."""
    try:
        return asyncio.run(coro)
    except LeomaError as exc:
        raise click.ClickException(str(exc)) from exc




def default_interval(consensus: Any = None) -> int:
    """The rotation interval an allowlist gets when the owner names none: the consensus's
    `rotation.interval` (LEOMA_CONSENSUS through the settings reader, else the packaged one)."""
    if consensus is None:
        from leoma.ops.config import Settings

        consensus = Settings.load().consensus()
    return int(consensus.rotation.interval)


def check_model(model_name: str, model_revision: str, hotkey: str) -> None:
    """Refuse locally what every validator would reject (seed-spec §2.4)."""
    repo = model_name.strip().rsplit("/", 1)[-1].strip().lower()
    if not repo.startswith("leoma"):
        raise click.BadParameter(f"the repository name {repo!r} must start with 'leoma'", param_hint="--model-name")
    if not repo.endswith(hotkey.strip().lower()):
        raise click.BadParameter(
            f"the repository name {repo!r} must end with your hotkey {hotkey} (case-insensitive)",
            param_hint="--model-name",
        )
    if not FULL_SHA.match(model_revision.strip()):
        raise click.BadParameter(
            f"{model_revision!r} is not a full 40-character commit SHA: use the SHA Hugging Face shows for the revision",
            param_hint="--model-revision",
        )


def register(cli: click.Group) -> None:
    """Add `validator publish`, `validator list` and `miner commit` to the `leoma` command."""
    validator = subgroup(cli, "validator", "Validator allowlist and validator tools.")
    miner = subgroup(cli, "miner", "Miner tools.")

    @validator.command("publish")
    @click.option("--validators", default=None, help="Comma-separated validator hotkeys (SS58).")
    @click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  default=None, help="File with one validator hotkey per line ('#' comments allowed).")
    @click.option("--interval", type=int, default=None,
                  help="Rotation interval in blocks (default: the consensus's rotation.interval, 100 packaged).")
    @source_option
    @chain_options
    @wallet_options
    def publish(validators: str | None, from_file: Path | None, interval: int | None, source_url: str, network: str,
                netuid: int, wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """(Owner) Publish the validator allowlist: put it in the source bucket, commit its digest."""
        if (validators is None) == (from_file is None):
            raise click.UsageError("give exactly one of --validators or --from-file")
        if from_file is not None:
            lines = from_file.read_text(encoding="utf-8").splitlines()
            hotkeys = [ln.split("#", 1)[0].strip() for ln in lines]
        else:
            hotkeys = [v.strip() for v in (validators or "").split(",")]
        hotkeys = [h for h in hotkeys if h]
        if interval is None:
            interval = default_interval()
        if interval <= 0:
            raise click.BadParameter(f"must be a positive number of blocks, not {interval}", param_hint="--interval")
        if not hotkeys:
            raise click.UsageError("the allowlist is empty: name at least one validator hotkey")
        from bittensor_core import ss58_decode

        for h in hotkeys:
            try:
                ss58_decode(h)
            except Exception:  # the Rust binding raises ValueError-like errors for bad addresses
                raise click.BadParameter(f"{h!r} is not an SS58 address", param_hint="--validators") from None

        async def go() -> str:
            from leoma.adapters.chain import Chain
            from leoma.adapters.storage import open_store
            from leoma.mirror.allowlist import publish_allowlist

            wallet = load_wallet(wallet_name, wallet_hotkey, wallet_path)
            store = open_store(source_url)
            async with Chain(network) as chain:
                owner = await chain.owner_hotkey(netuid)
                if owner != wallet.hotkey.ss58_address:
                    raise click.ClickException(
                        f"hotkey {wallet.hotkey.ss58_address} is not the owner of subnet {netuid} "
                        f"(the owner is {owner}): use the owner's wallet"
                    )
                return await publish_allowlist(store, chain, wallet, netuid, hotkeys, interval)

        value = _run(go())
        click.echo(f"published {len(set(hotkeys))} validators, interval {interval}, digest {value}")

    @validator.command("list")
    @json_option
    @click.option("--api", "api_url", default=None, help="List the owner API's registry (GET /validators) instead.")
    @click.option("--source", "source_url", envvar="LEOMA_SOURCE_URL", default=None,
                  help="Source bucket URL holding allowlist/v1.json (env LEOMA_SOURCE_URL).")
    @chain_options
    def list_validators(as_json: bool, api_url: str | None, source_url: str | None, network: str, netuid: int) -> None:
        """The on-chain allowlist, verified against the owner's committed digest (or the API's registry)."""
        if api_url:
            from leoma.api.client import ApiClient

            try:
                with ApiClient(api_url) as client:
                    cards = client.get("/validators")
            except LeomaError as exc:
                raise click.ClickException(str(exc)) from exc
            if as_json:
                print_json(cards)
                return
            print_table(["uid", "hotkey", "stake"], [(c["uid"], c["hotkey"], c["stake"]) for c in cards])
            return
        if not source_url:
            raise click.UsageError("give --source (or LEOMA_SOURCE_URL) for the on-chain allowlist, or --api URL")

        async def go() -> Any:
            from leoma.adapters.chain import Chain
            from leoma.adapters.storage import open_store
            from leoma.mirror.allowlist import read_allowlist

            async with Chain(network) as chain:
                return await read_allowlist(chain, open_store(source_url), netuid)

        allowlist = _run(go())
        if as_json and output_format() == "json":
            print_json({"validators": list(allowlist.validators), "interval": allowlist.interval,
                        "digest": allowlist.digest, "owner_hotkey": allowlist.owner_hotkey})
            return
        if output_format() == "table":
            click.echo(f"owner {allowlist.owner_hotkey}  interval {allowlist.interval}  digest {allowlist.digest}")
        print_table(["#", "validator"], list(enumerate(allowlist.validators)))

    @miner.command("commit")
    @click.option("--model-name", required=True, help="Hugging Face repo, e.g. user/leoma-<your hotkey>.")
    @click.option("--model-revision", required=True, help="Full 40-character commit SHA of the model revision.")
    @click.option("--chute-id", required=True, help="The Chutes id serving the model.")
    @click.option("--blocks-until-reveal", type=int, default=1, show_default=True, help="Blocks until the chain reveals it.")
    @chain_options
    @wallet_options
    def commit(model_name: str, model_revision: str, chute_id: str, blocks_until_reveal: int, network: str,
               netuid: int, wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """Commit your model to the chain (timelocked, revealed a block later)."""
        try:
            wallet = load_wallet(wallet_name, wallet_hotkey, wallet_path)
        except LeomaError as exc:
            raise click.ClickException(str(exc)) from exc
        hotkey = wallet.hotkey.ss58_address
        check_model(model_name, model_revision, hotkey)
        if not chute_id.strip():
            raise click.BadParameter("must not be empty", param_hint="--chute-id")
        from leoma.adapters.chain import commitment_payload

        payload = commitment_payload(model_name.strip(), model_revision.strip(), chute_id.strip())

        async def go() -> int:
            from leoma.adapters.chain import Chain

            async with Chain(network) as chain:
                return await chain.set_timelocked_commitment(wallet, netuid, payload, blocks_until_reveal)

        reveal_round = _run(go())
        click.echo(f"committed {model_name}@{model_revision} (chute {chute_id}) from {hotkey}; reveal round {reveal_round}")
