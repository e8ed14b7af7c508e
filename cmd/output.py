"""Output helpers shared by every listing command: tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any, TypeVar

import click

from leoma.errors import LeomaError

F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    """Add `--json` (machine-readable output) to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


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
    """Print a value as indented JSON (sorted keys, so output is stable)."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "(none)") -> None:
    """Print rows as an aligned plain-text table."""
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
