"""Owner commands for the source corpus (library code in `leoma.tools.corpus`).

    leoma corpus add PATH...   check local videos and upload them as YYYY/MM/<sha256 prefix>.mp4 + .json
    leoma corpus expand        discover and ingest YouTube videos with yt-dlp (optional)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from leoma.errors import LeomaError

F = TypeVar("F", bound=Callable[..., Any])


def _common(fn: F) -> F:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(fn)
    fn = click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), default=None,
                      help="The YYYY/MM folder's date (default: today, UTC).")(fn)
    return click.option("--dest", "dest", envvar="LEOMA_SOURCE_WRITE_URL", required=True,
                        help="Source bucket URL with write access: file:///path or s3://bucket?... "
                             "(env LEOMA_SOURCE_WRITE_URL).")(fn)


def _report(result: Any, as_json: bool) -> None:
    import msgspec

    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(result), indent=2))
    else:
        click.echo(f"{result.success}/{result.total} uploaded")
        for key in result.uploaded:
            click.echo(f"  {key}")
        for err in result.errors[:5]:
            click.echo(f"  failed {err.get('url', '')}: {err['error']}")
    if result.failed:
        raise SystemExit(1)


def _run(work: Callable[[Any, dt.date, str], Any], dest: str, day: dt.datetime | None) -> Any:
    from leoma.adapters.storage import open_store

    now = dt.datetime.now(dt.timezone.utc)
    when = day.date() if day else now.date()

    async def go() -> Any:
        async with open_store(dest) as store:
            return await work(store, when, now.isoformat())

    try:
        return asyncio.run(go())
    except LeomaError as exc:
        raise click.ClickException(str(exc)) from exc


def register(cli: click.Group) -> None:
    """Add `corpus add` and `corpus expand` to the `leoma` command."""

    @cli.group("corpus")
    def corpus() -> None:
        """(Owner) The source videos samplers cut clips from."""

    @corpus.command("add")
    @click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
    @_common
    def add(paths: tuple[str, ...], dest: str, day: dt.datetime | None, as_json: bool) -> None:
        """Check local videos and upload them to the source bucket."""
        from leoma.tools.corpus import add_local

        _report(_run(lambda store, when, stamp: add_local(store, paths, day=when, ingested_at=stamp), dest, day), as_json)

    @corpus.command("expand")
    @click.option("-n", "--count", type=click.IntRange(1, 1000), default=10, show_default=True)
    @click.option("-c", "--concurrent", type=click.IntRange(1, 32), default=2, show_default=True)
    @click.option("-q", "--query", "queries", multiple=True, help="Search query (repeatable; default: 15 topics).")
    @_common
    def expand_cmd(count: int, concurrent: int, queries: tuple[str, ...], dest: str, day: dt.datetime | None,
                   as_json: bool) -> None:
        """Discover YouTube videos with yt-dlp and ingest them (needs yt-dlp on PATH)."""
        from leoma.tools.corpus import expand

        _report(_run(lambda store, when, stamp: expand(store, count=count, concurrent=concurrent, queries=queries,
                                                       day=when, ingested_at=stamp), dest, day), as_json)
