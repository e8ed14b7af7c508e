"""Checking a validator before it goes live.

    leoma preflight [--json]   one line per check (wallet, chain, permit, clock, buckets, allowlist,
                               peers, judge, chutes), each failure with its fix; exit 1 on any
    leoma rehearse  [--json]   one turn and one epoch on a scratch log and scratch prefix,
                               set_weights suppressed, and what would have been submitted

Both read the same settings as `leoma serve` (flags, environment, `.env`); the logic is in
`leoma.tools.preflight` and `leoma.tools.rehearse`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from typing import Any

import click

from .output import friendly_errors, print_json


def _settings(network: str | None, netuid: int | None, dev_key: str | None) -> Any:
    from leoma.ops.config import Settings

    return Settings.load({"network": network, "netuid": netuid, "dev_key": dev_key})


def _common(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines for people.")(fn)
    fn = click.option("--dev-key", default=None, help="Dev key URI such as //Alice instead of a wallet (env LEOMA_DEV_KEY).")(fn)
    fn = click.option("--netuid", type=int, default=None, help="Subnet id (env NETUID, default 99).")(fn)
    fn = click.option("--network", default=None, help="finney, test, local, ws(s)://... or sim:PATH (env NETWORK).")(fn)
    return fn


@click.command("preflight")
@_common
@click.option("--clock-tolerance", type=float, default=None,
              help="Seconds this machine's clock may differ from the chain's head timestamp (default 60).")
@friendly_errors
def preflight_cmd(network: str | None, netuid: int | None, dev_key: str | None, as_json: bool,
                  clock_tolerance: float | None) -> None:
    """Prove this validator's configuration before it goes live: one line per check, a fix for each failure.

    Checks that the wallet loads and its hotkey is registered with a validator permit, the chain's
    clock agrees with this machine's, the own bucket takes a probe object (written, read back,
    deleted), the source bucket reads, the owner's allowlist is anchored and names this hotkey,
    every peer's checkpoint verifies under the same consensus digest, and the Gemini and Chutes
    keys are accepted. Exits 1 if any check fails.

    Example:

        leoma preflight
        leoma preflight --json | jq '.checks[] | select(.ok | not)'
    """
    import msgspec

    from leoma.ops.logging_setup import setup_logging
    from leoma.tools.preflight import CLOCK_TOLERANCE_SECONDS, run_preflight

    settings = _settings(network, netuid, dev_key)
    setup_logging("ERROR")
    checks = asyncio.run(run_preflight(settings, clock_tolerance=clock_tolerance or CLOCK_TOLERANCE_SECONDS))
    ok = all(c.ok for c in checks)
    if as_json:
        print_json({"ok": ok, "checks": [msgspec.to_builtins(c) for c in checks]})
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            line = f"{'ok  ' if c.ok else 'FAIL'}  {c.name.ljust(width)}  {c.detail}"
            click.echo(line + (f"  -> fix: {c.fix}" if not c.ok and c.fix else ""))
        failed = sum(1 for c in checks if not c.ok)
        click.echo("all checks passed" if ok else f"{failed} of {len(checks)} checks failed")
    sys.exit(0 if ok else 1)


@click.command("rehearse")
@_common
@click.option("--scratch-dir", type=click.Path(file_okay=False), default=None,
              help="Where the scratch log is written (default: a new temporary directory).")
@friendly_errors
def rehearse_cmd(network: str | None, netuid: int | None, dev_key: str | None, as_json: bool,
                 scratch_dir: str | None) -> None:
    """Rehearse one turn and one epoch against the configured chain and buckets, without consequences.

    Checks the miners, runs the sampler's task for the current block (whoever's turn it is),
    imports the peers, and decides the current epoch — on a scratch log, with every object under
    a scratch prefix (`rehearse/...`) of the own bucket, nothing sent to the owner's API, and the
    final set_weights suppressed. Prints what would have been submitted and whether the chain
    would take it now.

    Example:

        leoma rehearse
        leoma rehearse --scratch-dir ./rehearsal --json
    """
    import msgspec

    from leoma.ops.logging_setup import setup_logging
    from leoma.tools.rehearse import rehearse

    settings = _settings(network, netuid, dev_key)
    setup_logging("WARNING")
    result = asyncio.run(rehearse(settings, scratch_dir=scratch_dir or tempfile.mkdtemp(prefix="leoma-rehearse-")))
    if as_json:
        print_json(msgspec.to_builtins(result))
        return
    r = result
    click.echo(f"rehearsal of {r.hotkey} at block {r.block}")
    click.echo(f"  scratch log     {r.scratch_log}")
    click.echo(f"  scratch prefix  {r.scratch_prefix} (in the own bucket)")
    click.echo(f"  miners          {r.miners_checked} checked, {r.miners_valid} valid")
    click.echo(f"  turn            task {r.task_id}: {r.task_evaluated} evaluated, {r.task_passed} passed ({r.task_note})")
    peers = ", ".join(f"{h[:12]} +{n}" for h, n in sorted(r.peers_imported.items())) or "none configured"
    click.echo(f"  peers imported  {peers}")
    click.echo(f"  epoch {r.epoch}        winner {r.winner[:16] or '-'}" + (f", burn: {r.burn_reason}" if r.burn_reason else ""))
    path = "a timelocked commit (commit-reveal)" if r.commit_reveal else "a plain set_weights"
    click.echo(f"  would submit    {path}, set_weights {r.set_weights}:")
    for w in r.weights:
        click.echo(f"    uid {w.uid:<5} {w.hotkey}  {w.weight}/65535")
    since = "never set" if r.blocks_since_last_update is None else f"{r.blocks_since_last_update} blocks since the last"
    click.echo(f"  rate limit      {r.rate_limit} blocks, {since}: "
               + ("the chain would take it now" if r.submittable_now else "the chain would refuse it now (too soon)"))


def register(cli: click.Group) -> None:
    cli.add_command(preflight_cmd)
    cli.add_command(rehearse_cmd)
