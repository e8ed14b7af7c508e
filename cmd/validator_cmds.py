"""Validator commands: one checker pass, and the sampler service.

    leoma check-miners [--json]   check every committed miner once, print verdicts, record events
    leoma servers sampler         the checker and the sampler loop in one process

Both read the same `Settings` (flags, environment, `.env`); the logic is in `leoma.services`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click

from leoma.logging_setup import setup_logging

from .output import friendly_errors, json_option, print_json, print_table, subgroup

F = TypeVar("F", bound=Callable[..., Any])



def settings_options(fn: F) -> F:
    """Flags that override the environment (every other setting comes from env / .env)."""
    fn = click.option("--db", default=None, help="Event log path (env LEOMA_DB).")(fn)
    fn = click.option("--dev-key", default=None, help="Dev key URI such as //Alice instead of a wallet (env LEOMA_DEV_KEY).")(fn)
    fn = click.option("--netuid", type=int, default=None, help="Subnet id (env NETUID, default 99).")(fn)
    fn = click.option("--network", default=None, help="finney, test, local, ws(s)://... or sim:PATH (env NETWORK).")(fn)
    return fn


def _settings(network: str | None, netuid: int | None, dev_key: str | None, db: str | None) -> Any:
    from leoma.config import Settings

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

        async with open_context(settings) as ctx:
            return await check_miners(ctx)

    results = asyncio.run(run())
    if as_json:
        import msgspec

        print_json([msgspec.to_builtins(r) for r in results])
        return
    print_table(["uid", "hotkey", "valid", "reason", "model"],
                [(r.uid, r.hotkey, "yes" if r.valid else "no", r.invalid_reason, r.model_name) for r in results],
                empty="(no committed miners)")


@click.command("sampler")
@settings_options
@friendly_errors
def sampler_cmd(network: str | None, netuid: int | None, dev_key: str | None, db: str | None) -> None:
    """Run the miner checker and the sampler loop (on this validator's turns) until interrupted."""
    settings = _settings(network, netuid, dev_key, db)
    setup_logging(settings.log_level)
    settings.require("GEMINI_API_KEY")
    settings.require("LEOMA_OWN_BUCKET_URL")
    settings.require("LEOMA_SOURCE_URL")
    logging.getLogger("leoma").info("settings: %s", settings.redacted())

    async def run() -> None:
        from leoma.services.context import open_context
        from leoma.services.sampler import serve_sampler

        async with open_context(settings, need_judge=True) as ctx:
            await serve_sampler(ctx)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        click.echo("sampler stopped")


def register(cli: click.Group) -> None:
    """Add `check-miners` and `servers sampler` to the `leoma` command."""
    cli.add_command(check_miners_cmd)
    subgroup(cli, "servers", "Long-running validator services.").add_command(sampler_cmd)
