"""`leoma devnet`: the whole subnet on this machine — no keys, no internet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .output import friendly_errors, is_tty, print_json, print_table


def _progress_line(p: Any) -> str:
    scored = " ".join(f"{k[-1]}:{v}" for k, v in sorted(p.scored.items()))
    return (f"block {p.block}  epoch {p.epoch}  turn {p.turn}  tasks {p.tasks}  verdicts {p.verdicts}  "
            f"mirror lag {p.mirror_lag}  scored [{scored}]")


@click.command("devnet")
@click.option("--dir", "root", type=click.Path(file_okay=False), default="devnet", show_default=True,
              help="Where the devnet lives (chain, buckets, each validator's log).")
@click.option("--validators", type=click.IntRange(1, 9), default=3, show_default=True, help="Allowlisted validators.")
@click.option("--epochs", type=click.IntRange(1, 50), default=2, show_default=True,
              help="Scored epochs (with a full window) to run for.")
@click.option("--processes/--no-processes", default=True, show_default=True,
              help="Run each validator as its own `leoma serve` process (the multi-process soak test).")
@click.option("--resume", is_flag=True, help="Continue the devnet already in --dir.")
@click.option("--block-time", type=float, default=None, help="Seconds per simulated block (default 0.5).")
@click.option("--api/--no-api", "with_api", default=True, show_default=True,
              help="Run the owner's API and dashboard next to the validators.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary instead.")
@click.option("--commit-reveal", is_flag=True,
              help="Run the subnet with commit-reveal weights: timelocked commits the chain reveals an epoch later.")
@friendly_errors
def devnet_cmd(root: str, validators: int, epochs: int, processes: bool, resume: bool, block_time: float | None,
               with_api: bool, as_json: bool, commit_reveal: bool = False) -> None:
    """Run a whole subnet on this machine: a simulated chain, an owner, validators, miners.

    Shows progress on a terminal and the owner's dashboard URL, then the leaderboard and each
    validator's weights; exits 1 if the validators did not agree. The logs in --dir work with
    `leoma replay --all --db DIR/validator1/events.db --consensus DIR/consensus.toml`,
    `leoma explain`, `leoma export`.
    """
    from leoma.devnet.network import Devnet, DevnetConfig
    from leoma.logging_setup import setup_logging

    setup_logging("WARNING")
    path = Path(root)
    if resume:
        net = Devnet.resume(path)
    else:
        config = DevnetConfig(validators=validators, commit_reveal=commit_reveal,
                              **({"block_time": block_time} if block_time else {}))
        if not as_json:
            click.echo(f"creating a devnet in {path} ({validators} validators, {len(config.miners)} miners)...")
        net = Devnet.create(path, config)
    tty = is_tty() and not as_json

    def show(p: Any) -> None:
        if tty:
            click.echo("\r" + _progress_line(p).ljust(110), nl=False)

    with net.running(processes=processes, api=with_api):
        if net.api_url:
            # With --json, stdout is the summary alone: say where the dashboard is on stderr.
            click.echo(f"dashboard: {net.api_url}", err=as_json)
        finished = net.wait(epochs, progress=show)
        dead = net.dead()
    if tty:
        click.echo("")
    summary = net.summary()
    summary["finished"] = finished
    if as_json:
        print_json(summary)
    else:
        _print_summary(net, summary)
        if dead:
            click.echo(f"validators exited early: {dead} (see DIR/validatorK/serve.log)", err=True)
        if not finished:
            click.echo("the devnet did not reach the target epoch in time", err=True)
    sys.exit(0 if summary["agreed"] and finished else 1)


def _print_summary(net: Any, s: dict[str, Any]) -> None:
    click.echo("")
    click.echo(f"leaderboard (epoch {s['epochs'][-1]['epoch'] if s['epochs'] else '-'}):")
    print_table(["rank", "miner", "uid", "pass rate", "passed", "complete", "eligible"],
                [(r["rank"] or "-", r["miner"], r["uid"], r["avg_rate"] or "-", f"{r['passed']}/{r['evaluated']}",
                  r["completeness"] or "-", "yes" if r["eligible"] else r["reason"]) for r in s["leaderboard"]],
                empty="(no scored epoch)")
    click.echo("")
    print_table(["epoch", "validator", "winner", "weights (uid:u16)"],
                [(e["epoch"], name, net.miner_name(e["winners"][name]) if e["winners"][name] else
                  f"burn ({e['burn_reason']})", " ".join(f"{u}:{w}" for u, w in weights))
                 for e in s["epochs"] for name, weights in e["weights"].items()])
    click.echo("")
    if s["agreed"]:
        click.echo(f"all {len(s['validators'])} validators agree: winner {s['winner']} "
                   f"over {s['scored_epochs']} scored epochs")
    else:
        click.echo("the validators DO NOT agree (or no epoch was scored)", err=True)
    if s.get("api_url"):
        click.echo(f"dashboard: {s['api_url']} (the owner's API, stopped with the devnet; log in "
                   f"{Path(s['dir']) / 'api' / 'api.log'})")
    first = s["validators"][0]["db"]
    click.echo(f"replay: leoma replay --all --db {first} --consensus {Path(s['dir']) / 'consensus.toml'}")


def register(cli: click.Group) -> None:
    """Add `leoma devnet` to `leoma`."""
    cli.add_command(devnet_cmd)


if __name__ == "__main__":
    group = click.Group("leoma")
    register(group)
    group()
