"""Loading the bittensor wallet whose hotkey signs Leoma's transactions and files."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from leoma.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_WALLET_PATH = "~/.bittensor/wallets"


def wallet_location(name: str | None = None, hotkey: str | None = None, path: str | None = None,
                    env: Mapping[str, str] = os.environ) -> tuple[str, str, Path]:
    """Resolve (name, hotkey, path): arguments, then WALLET_NAME / HOTKEY_NAME / BT_WALLET_PATH."""
    name = name or env.get("WALLET_NAME") or "default"
    hotkey = hotkey or env.get("HOTKEY_NAME") or "default"
    folder = Path(path or env.get("BT_WALLET_PATH") or DEFAULT_WALLET_PATH).expanduser()
    return name, hotkey, folder


def load_wallet(name: str | None = None, hotkey: str | None = None, path: str | None = None,
                env: Mapping[str, str] = os.environ) -> Any:
    """A `bittensor.Wallet` whose hotkey is readable now (ConfigError says how to fix it if not)."""
    name, hotkey, folder = wallet_location(name, hotkey, path, env)
    hotkey_file = folder / name / "hotkeys" / hotkey
    fix = f"create it with `btcli wallet new-hotkey --wallet.name {name} --wallet.hotkey {hotkey} --wallet.path {folder}`"
    if not hotkey_file.is_file():
        raise ConfigError(f"wallet {name!r} hotkey {hotkey!r} not found at {hotkey_file}: {fix}")
    import bittensor as bt
    import bittensor_core

    try:
        locked = bool(bittensor_core.keyfile_data_is_encrypted(hotkey_file.read_bytes()))
    except OSError as exc:
        raise ConfigError(f"wallet {name!r} hotkey {hotkey!r} at {hotkey_file} cannot be read ({exc}): {fix}") from exc
    if locked:  # reading it would prompt for a password; a service has nobody to answer
        raise ConfigError(
            f"wallet {name!r} hotkey {hotkey!r} at {hotkey_file} is locked with a password: "
            "Leoma needs an unencrypted hotkey; recreate it with `btcli wallet new-hotkey` without a password"
        )
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(folder))
    try:
        wallet.hotkey.ss58_address  # noqa: B018 - decrypting now turns a locked key into a clear error
    except Exception as exc:  # the keyfile layer raises several types for locked/corrupt files
        raise ConfigError(
            f"wallet {name!r} hotkey {hotkey!r} at {hotkey_file} cannot be opened ({exc}): "
            "Leoma needs an unencrypted hotkey; recreate it with `btcli wallet new-hotkey` without a password"
        ) from exc
    return wallet


def wallet_options(fn: F) -> F:
    """Add `--wallet-name`, `--wallet-hotkey` and `--wallet-path` to a click command."""
    fn = click.option("--wallet-path", envvar="BT_WALLET_PATH", default=None,
                      help="Folder of wallets (env BT_WALLET_PATH; default ~/.bittensor/wallets).")(fn)
    fn = click.option("--wallet-hotkey", envvar="HOTKEY_NAME", default=None,
                      help="Hotkey name inside the wallet (env HOTKEY_NAME; default 'default').")(fn)
    fn = click.option("--wallet-name", envvar="WALLET_NAME", default=None,
                      help="Wallet (coldkey) name (env WALLET_NAME; default 'default').")(fn)
    return fn
