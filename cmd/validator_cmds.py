"""Validator commands: one checker pass.

    leoma check-miners [--json]   check every committed miner once, print verdicts, record events

It reads the same `Settings` as `leoma serve` (flags, environment, `.env`), restores the own
log's published tail first as every appending command does, and leaves the logic to
`leoma.services`. `leoma servers sampler` lives with `leoma serve` (`serve_cmds`): it is that
process with fewer roles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import click

from leoma.ops.logging_setup import setup_logging

from .output import friendly_errors, json_option, print_json, print_table

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(fn: F) -> F:
    """Flags that override the environment (every other setting comes from env / .env)."""
    fn = click.option("--db", default=None, help="Event log path (env LEOMA_DB).")(fn)
    fn = click.option("--dev-key", default=None, help="Dev key URI such as //Alice instead of a wallet (env LEOMA_DEV_KEY).")(fn)
    fn = click.option("--netuid", type=int, default=None, help="Subnet id (env NETUID, default 99).")(fn)
    fn = click.option("--network", default=None, help="finney, test, local, ws(s)://... or sim:PATH (env NETWORK).")(fn)
    return fn


def _settings(network: str | None, netuid: int | None, dev_key: str | None, db: str | None) -> Any:
    from leoma.ops.config import Settings

    return Settings.load({"network": network, "netuid": netuid, "dev_key": dev_key, "db": db})


@click.command("check-miners")
@settings_options
@json_option
@friendly_errors
def check_miners_cmd(network: str | None, netuid: int | None, dev_key: str | None, db: str | None,
                     as_json: bool) -> None:
    """Check every committed miner once (the seed's checks), print each verdict and record the events."""
    settings = _settings(network, netuid, dev_key, db)
    setup_logging(settings.log_level if not as_json else "WARNING")

    async def run() -> list[Any]:
        from leoma.services.checker import check_miners
        from leoma.services.context import open_context
        from leoma.services.serve import restore_own_log

        async with open_context(settings) as ctx:
            await restore_own_log(ctx)  # never append after a lost tail: the bucket's seqs come first
            return await check_miners(ctx)

    results = asyncio.run(run())
    if as_json:
        import msgspec

        print_json([msgspec.to_builtins(r) for r in results])
        return
    print_table(["uid", "hotkey", "valid", "reason", "model"],
                [(r.uid, r.hotkey, "yes" if r.valid else "no", r.invalid_reason, r.model_name) for r in results],
                empty="(no committed miners)")


def register(cli: click.Group) -> None:
    """Add `check-miners` to the `leoma` command (`servers sampler` comes with `serve_cmds`)."""
    cli.add_command(check_miners_cmd)


def __getattr__(name: str) -> Any:
    # `sampler_cmd` was defined here; it is now `leoma serve` with the sampler's roles.
    if name == "sampler_cmd":
        from .serve_cmds import servers_sampler

        return servers_sampler
    raise AttributeError(name)
