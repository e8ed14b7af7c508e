"""Output helpers shared by every listing command: tables for people, JSON for scripts.

One printer, four forms, chosen by the options every listing shares (as sqlite-utils does):

    (default)   an aligned table for people
    --json      one indented JSON document
    --nl        newline-delimited JSON: one compact object per line (a listing's rows)
    --csv       comma-separated values with a header row

A command adds them with `@json_option` and prints with `print_table` (rows) and `print_json`
(documents); both read the chosen form, so the command itself branches only on `as_json`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click

from leoma.errors import LeomaError

F = TypeVar("F", bound=Callable[..., Any])


FORMATS = ("table", "json", "nl", "csv")
_FORMAT_KEY = "leoma.output"


def output_format() -> str:
    """The form the running command prints in: table, json, nl or csv (table outside a command)."""
    ctx = click.get_current_context(silent=True)
    return str(ctx.meta.get(_FORMAT_KEY, "table")) if ctx is not None else "table"


def json_option(fn: F) -> F:
    """Add `--json`, `--nl` and `--csv` to a command; it receives `as_json` (true for JSON forms)."""

    @wraps(fn)
    def wrapper(*args: Any, as_json: bool = False, as_nl: bool = False, as_csv: bool = False, **kwargs: Any) -> Any:
        chosen = [name for name, on in (("json", as_json), ("nl", as_nl), ("csv", as_csv)) if on]
        if len(chosen) > 1:
            raise click.UsageError(f"choose one of --json, --nl and --csv, not {' and '.join('--' + c for c in chosen)}")
        fmt = chosen[0] if chosen else "table"
        click.get_current_context().meta[_FORMAT_KEY] = fmt
        return fn(*args, as_json=fmt in ("json", "nl"), **kwargs)

    wrapper = click.option("--csv", "as_csv", is_flag=True, help="Print comma-separated values with a header row.")(wrapper)
    wrapper = click.option("--nl", "as_nl", is_flag=True, help="Print newline-delimited JSON, one object per line.")(wrapper)
    wrapper = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(wrapper)
    return wrapper  # type: ignore[return-value]


def friendly_errors(fn: F) -> F:
    """Turn Leoma's own errors into one clear line and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LeomaError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def print_json(value: Any) -> None:
    """Print a value as indented JSON (sorted keys, so output is stable); with `--nl` a list is
    printed one compact item per line, anything else as one compact line."""
    if output_format() == "nl":
        for item in value if isinstance(value, list) else [value]:
            click.echo(json.dumps(item, sort_keys=True, default=str, separators=(",", ":")))
        return
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "(none)") -> None:
    """Print rows in the chosen form: an aligned table, CSV, or JSON objects keyed by `headers`."""
    fmt = output_format()
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([["" if c is None else c for c in r] for r in rows])
        click.echo(buffer.getvalue(), nl=False)
        return
    if fmt in ("json", "nl"):
        print_json([dict(zip(headers, r)) for r in rows])
        return
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    if not rows:
        click.echo(empty)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def is_tty() -> bool:
    """Whether standard output is a terminal (progress bars only then)."""
    return sys.stdout.isatty()


def subgroup(cli: click.Group, name: str, help_text: str) -> click.Group:
    """The `name` group another command module already registered, or a new one."""
    existing = cli.commands.get(name)
    if isinstance(existing, click.Group):
        return existing
    group = click.Group(name, help=help_text)
    cli.add_command(group)
    return group
