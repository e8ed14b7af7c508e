"""`leoma events`, `leoma verify`, `leoma export` and `leoma demo`: reading and auditing the log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .output import friendly_errors, json_option, print_json, print_table


def default_db() -> str:
    """`$LEOMA_DB`, else `events.db` in `$LEOMA_STATE_DIR` (default `~/.leoma`): `leoma.ops.config.default_db`."""
    from leoma.ops.config import default_db as configured

    return configured()


def db_option(fn):  # type: ignore[no-untyped-def]
    """`--db PATH` naming an existing event log."""
    return click.option(
        "--db", "db_path", type=click.Path(dir_okay=False), default=default_db, show_default="$LEOMA_DB or ~/.leoma/events.db",
        help="The event log (SQLite file).",
    )(fn)


def open_existing(path: str, *, readonly: bool = True):  # type: ignore[no-untyped-def]
    """Open a log that must already exist (never create one by accident)."""
    from leoma.errors import LogError
    from leoma.log.eventlog import EventLog

    if not Path(path).is_file():
        raise LogError(f"no event log at {path}: pass --db PATH or set LEOMA_DB")
    return EventLog(path, readonly=readonly)


def _row(stored) -> list[object]:  # type: ignore[no-untyped-def]
    e = stored.event
    body = bytes(e.body).decode()
    return [stored.seq, e.origin[:12] + "…", e.origin_seq, e.block, e.kind, e.key[:48],
            body[:60] + ("…" if len(body) > 60 else "")]


def _as_dict(stored) -> dict[str, object]:  # type: ignore[no-untyped-def]
    import msgspec

    e = stored.event
    return {"seq": stored.seq, "origin": e.origin, "origin_seq": e.origin_seq, "key": e.key, "kind": e.kind,
            "v": e.v, "block": e.block, "at": e.at, "body": msgspec.json.decode(bytes(e.body)),
            "prev": e.prev, "hash": e.hash}


HEADERS = ["seq", "origin", "#", "block", "kind", "key", "body"]


@click.group("events")
def events_group() -> None:
    """Read the event log: newest events, one event, counts."""


@events_group.command("tail")
@db_option
@click.option("-n", "--count", "n", default=20, show_default=True, help="How many of the newest events.")
@click.option("--kind", help="Only events of this kind.")
@click.option("--origin", help="Only events recorded by this hotkey.")
@json_option
@friendly_errors
def tail(db_path: str, n: int, kind: str | None, origin: str | None, as_json: bool) -> None:
    """Show the newest events, oldest first."""
    with open_existing(db_path) as log:
        rows = list(log.events(kinds=[kind] if kind else None, origin=origin, limit=n, descending=True))[::-1]
        if as_json:
            print_json([_as_dict(s) for s in rows])
        else:
            print_table(HEADERS, [_row(s) for s in rows], empty="(no events)")


@events_group.command("show")
@db_option
@click.argument("seq", type=int)
@json_option
@friendly_errors
def show(db_path: str, seq: int, as_json: bool) -> None:
    """Show one event by its local SEQ, in full."""
    from leoma.errors import LogError

    with open_existing(db_path) as log:
        found = list(log.events(after=seq - 1, limit=1))
        if not found or found[0].seq != seq:
            raise LogError(f"no event with seq {seq} in {db_path}")
        data = _as_dict(found[0])
        if as_json:
            print_json(data)
            return
        for name in ("seq", "origin", "origin_seq", "key", "kind", "v", "block", "at", "prev", "hash"):
            click.echo(f"{name:>10}: {data[name]}")
        import json

        click.echo(f"{'body':>10}: " + json.dumps(data["body"], indent=2, sort_keys=True).replace("\n", "\n" + " " * 12))


@events_group.command("count")
@db_option
@json_option
@friendly_errors
def count(db_path: str, as_json: bool) -> None:
    """Count events per kind and per origin."""
    with open_existing(db_path) as log:
        kinds = log.counts_by_kind()
        frontier = log.frontier()
        if as_json:
            print_json({"total": sum(kinds.values()), "kinds": kinds,
                        "origins": {o: {"events": h.origin_seq, "head": h.hash} for o, h in frontier.items()}})
            return
        print_table(["kind", "events"], sorted(kinds.items()) + [("total", sum(kinds.values()))])
        click.echo()
        print_table(["origin", "events", "head"], [(o, h.origin_seq, h.hash[:16]) for o, h in frontier.items()])


@click.command("verify")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), help="Verify this local event log.")
@click.option("--bucket", help="Verify a published log in this bucket (URL), with no local database.")
@click.option("--hotkey", help="The origin whose published log to verify (with --bucket).")
@json_option
@friendly_errors
def verify_cmd(db_path: str | None, bucket: str | None, hotkey: str | None, as_json: bool) -> None:
    """Recompute every hash chain; exit 1 and name the first bad event if one is broken."""
    if bucket:
        if not hotkey:
            raise click.UsageError("--bucket needs --hotkey: whose published log to verify")
        from leoma.mirror.inbound import verify_published  # type: ignore[attr-defined]

        import asyncio

        from .mirror_cmds import network_consensus

        report = asyncio.run(verify_published(bucket, hotkey, consensus_digest=network_consensus().digest))
        if as_json:
            print_json(report)
        else:
            click.echo(report.get("message", str(report)))
        sys.exit(0 if report.get("ok") else 1)
    with open_existing(db_path or default_db()) as log:
        report = log.verify()
    if as_json:
        print_json({"ok": report.ok, "checked": report.checked, "origins": report.origins,
                    "problems": [p._asdict() for p in report.problems]})
    elif report.ok:
        click.echo(f"ok: {report.checked} events in {report.origins} chains verify")
    else:
        first = report.first
        assert first is not None
        click.echo(f"BROKEN: first bad event is seq {first.seq} ({first.origin[:16]} #{first.origin_seq}): {first.reason}", err=True)
        for p in report.problems:
            if p is first:
                continue
            where = f"seq {p.seq} ({p.origin[:16]} #{p.origin_seq})" if p.seq else "database"
            click.echo(f"  also: {where}: {p.reason}", err=True)
    sys.exit(0 if report.ok else 1)


@click.command("export")
@db_option
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet", "sqlite"]), default="jsonl", show_default=True)
@click.option("--kind", help="Only events of this kind.")
@click.option("--origin", help="Only events recorded by this hotkey.")
@click.option("--since-block", type=int, help="Only events at or after this block.")
@click.argument("out")
@friendly_errors
def export_cmd(db_path: str, fmt: str, kind: str | None, origin: str | None, since_block: int | None, out: str) -> None:
    """Export events to OUT (`-` for JSONL on standard output)."""
    from leoma.log.export import export

    with open_existing(db_path) as log:
        n = export(log, out, fmt, kind=kind, origin=origin, since_block=since_block, stdout=sys.stdout.buffer)
    if out != "-":
        click.echo(f"exported {n} events to {out} ({fmt})", err=True)


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="leoma-demo", show_default=True)
@friendly_errors
def demo(directory: str) -> None:
    """A short tour of the log: two validators record, one imports the other, verify, export."""
    from leoma.tools.demo import run_demo

    for line in run_demo(Path(directory)):
        click.echo(line)


def register(cli: click.Group) -> None:
    """Add this module's commands to `leoma`."""
    cli.add_command(events_group)
    cli.add_command(verify_cmd)
    cli.add_command(export_cmd)
    cli.add_command(demo)
