"""`leoma devnet`: the whole subnet on this machine — no keys, no internet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .output import friendly_errors, is_tty, print_json, print_table


def _progress_line(p: Any, epochs: int) -> str:
    """Block, whose turn, tasks judged, epochs decided (each validator's newest), mirror lag."""
    each = " ".join(f"{k.removeprefix('validator')}:{'-' if v < 0 else v}" for k, v in sorted(p.decided.items()))
    goal = f"run ends at {p.target}" if p.target >= 0 else f"{epochs} full-window epochs to go"
    return (f"block {p.block} · epoch {p.epoch} · turn {p.turn} · tasks {p.tasks} ({p.judged} judged, "
            f"{p.verdicts} verdicts) · epochs decided [{each}] ({goal}) · mirror lag {p.mirror_lag}")


class ProgressDisplay:
    """One line rewritten in place on a terminal; a plain line per change otherwise (logs, CI)."""

    def __init__(self, epochs: int, *, tty: bool, err: bool = False) -> None:
        self.epochs, self.tty, self.err = epochs, tty, err
        self.last: tuple[Any, ...] | None = None
        self.width = 0

    def __call__(self, p: Any) -> None:
        line = _progress_line(p, self.epochs)
        if self.tty:
            self.width = max(self.width, len(line))
            click.echo("\r" + line.ljust(self.width), nl=False, err=self.err)
            return
        # Without a terminal a line per poll would be noise: print when something a person follows moved.
        state = (p.epoch, p.turn, p.tasks, p.judged, p.target, tuple(sorted(p.decided.items())))
        if state != self.last:
            self.last = state
            click.echo(line, err=self.err)

    def done(self) -> None:
        if self.tty and self.width:
            click.echo("", err=self.err)


def should_serve(serve: bool | None, *, with_api: bool, as_json: bool, interactive: bool) -> bool:
    """Whether `leoma devnet` keeps the dashboard up after the run (and so waits for Ctrl-C).

    Asked for (`--serve`) or, by default, only with a person at a terminal: a script, a test or
    CI (no TTY, or `--json`) must never be left waiting.
    """
    if not with_api:
        return False
    if serve is not None:
        return serve
    return interactive and not as_json


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
@click.option("--serve/--no-serve", "serve", default=None,
              help="Keep the dashboard served after the run until Ctrl-C (default: only when run from a "
                   "terminal; --no-serve for scripts and CI, which then never wait).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary instead.")
@click.option("--commit-reveal", is_flag=True,
              help="Run the subnet with commit-reveal weights: timelocked commits the chain reveals an epoch later.")
@click.option("--chaos", is_flag=True,
              help="Run the adversarial devnet instead (anchored decisions under mirror delays, an unreadable "
                   "bucket, a restart, a backdating validator and a lying anchor); exits 1 unless every epoch "
                   "is agree-or-hold. Uses --dir and --epochs (at least 10).")
@click.option("--seed", type=int, default=7, show_default=True, help="With --chaos: the seed of the faults.")
@friendly_errors
def devnet_cmd(root: str, validators: int, epochs: int, processes: bool, resume: bool, block_time: float | None,
               with_api: bool, serve: bool | None, as_json: bool, commit_reveal: bool = False,
               chaos: bool = False, seed: int = 7) -> None:
    """Run a whole subnet on this machine: a simulated chain, an owner, validators, miners.

    Shows progress (block, whose turn, tasks judged, epochs decided) and the owner's dashboard
    URL, then the leaderboard and each validator's weights; exits 1 if the validators did not
    agree. From a terminal the dashboard then stays up until Ctrl-C; `leoma dashboard --dir DIR`
    serves it again later. The logs in --dir work with
    `leoma replay --all --db DIR/validator1/events.db --consensus DIR/consensus.toml`,
    `leoma explain`, `leoma export`.

    Example:

    \b
        leoma devnet --dir my-devnet --epochs 2
        leoma devnet --dir my-devnet --resume --no-serve --json
    """
    from leoma.devnet.config import DevnetConfig
    from leoma.devnet.network import Devnet
    from leoma.ops.logging_setup import setup_logging

    setup_logging("WARNING")
    if chaos:
        _run_chaos(Path(root), max(10, epochs), seed, as_json)
        return
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
    serve = should_serve(serve, with_api=with_api, as_json=as_json,
                         interactive=sys.stdin.isatty() and sys.stdout.isatty())
    show = ProgressDisplay(epochs, tty=tty, err=as_json)
    net.start(processes=processes, api=with_api)
    try:
        if net.api_url:
            # With --json, stdout is the summary alone: say where the dashboard is on stderr.
            click.echo(f"dashboard: {net.api_url}", err=as_json)
        finished = net.wait(epochs, progress=show)
        dead = net.dead()
    except BaseException:
        show.done()
        net.stop()
        raise
    show.done()
    net.stop(keep_api=serve)
    summary = net.summary()
    summary["finished"] = finished
    summary["serving"] = bool(serve and net.api is not None)
    if as_json:
        print_json(summary)
    else:
        _print_summary(net, summary)
        if dead:
            click.echo(f"validators exited early: {dead} (see DIR/validatorK/serve.log)", err=True)
        if not finished:
            click.echo("the devnet did not reach the target epoch in time", err=True)
        _print_dashboard(summary)
    if summary["serving"]:
        net.serve_api_until_interrupted()
        click.echo("dashboard stopped.")
    sys.exit(0 if summary["agreed"] and finished else 1)


def _run_chaos(path: Path, epochs: int, seed: int, as_json: bool) -> None:
    """`leoma devnet --chaos`: one line per epoch as it is decided, then the verdict."""
    import asyncio
    import sys

    from leoma.devnet.chaos import report_json, run_chaos

    if path.exists() and any(path.iterdir()):
        raise click.UsageError(f"{path} is not empty: --chaos starts a fresh network (pass another --dir)")

    def line(r: Any) -> None:
        if as_json:
            return
        held = ", ".join(f"{hk[:8]}… {why}" for hk, why in sorted(r.held.items()))
        click.echo(f"epoch {r.epoch}: {len(r.decided)} decided ({len(set(r.decided.values()))} distinct)"
                   f"{', winner ' + r.winner[:8] + '…' if r.winner else ''}{'; held: ' + held if held else ''}"
                   f"{'; late tasks ' + str(list(r.late)) if r.late else ''}"
                   f"{'  [' + '; '.join(r.faults) + ']' if r.faults else ''}")

    report = asyncio.run(run_chaos(path, epochs=epochs, seed=seed, on_epoch=line))
    if as_json:
        print_json(report_json(report))
    else:
        for problem in report.problems:
            click.echo(f"PROBLEM: {problem}")
        click.echo(("agree-or-hold in every epoch" if report.ok else "NOT agree-or-hold") +
                   f"; backdated task {report.backdated_task} counted for no one: "
                   f"{all(report.backdated_task not in e.window for e in report.epochs)}")
        click.echo(f"replay: leoma replay --all --from-bucket {report.buckets[report.validators[0]]} "
                   f"--hotkey {report.validators[0]} --network {report.chain} --peers '<the other buckets>'")
    sys.exit(0 if report.ok else 1)


def _print_dashboard(s: dict[str, Any]) -> None:
    """The last lines: where the dashboard is and whether it is still up."""
    if not s.get("api_url"):
        return
    again = f"leoma dashboard --dir {s['dir']}"
    if s.get("serving"):
        click.echo(f"dashboard: {s['api_url']} — still served, open it now; Ctrl-C stops it "
                   f"(later: {again})")
    else:
        click.echo(f"dashboard: stopped with the devnet; serve it again with: {again}")


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
    first = s["validators"][0]["db"]
    click.echo(f"replay: leoma replay --all --db {first} --consensus {Path(s['dir']) / 'consensus.toml'}")


@click.command("dashboard")
@click.option("--dir", "root", type=click.Path(file_okay=False), default="devnet", show_default=True,
              help="The devnet whose owner's API to serve (finished or not).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one).")
@friendly_errors
def dashboard_cmd(root: str, port: int) -> None:
    """Serve a devnet's dashboard (its owner's API) until Ctrl-C, e.g. after `leoma devnet` finished.

    The API reads the validators' buckets in --dir, so every task's first frame, original clip
    and miner videos play in the browser, with the verdicts and reasons under them.

    Example:

    \b
        leoma dashboard --dir my-devnet
        leoma dashboard --dir my-devnet --port 8000
    """
    from leoma.devnet.network import Devnet
    from leoma.ops.logging_setup import setup_logging

    setup_logging("WARNING")
    net = Devnet.resume(Path(root))
    url = net.start_api(port=port)
    click.echo(f"dashboard: {url} — Ctrl-C stops it (log in {net.api_dir / 'api.log'})")
    net.serve_api_until_interrupted()
    click.echo("dashboard stopped.")


def register(cli: click.Group) -> None:
    """Add `leoma devnet` and `leoma dashboard` to `leoma`."""
    cli.add_command(devnet_cmd)
    cli.add_command(dashboard_cmd)


if __name__ == "__main__":
    group = click.Group("leoma")
    register(group)
    group()
