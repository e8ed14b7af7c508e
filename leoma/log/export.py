"""Export events for research: JSON lines, Parquet, or a sealed SQLite copy.

Every format holds the full envelope (origin, origin_seq, key, kind, v, block, at, body, prev,
hash), so an exported event can be re-verified anywhere. Filters: kind, origin, first block.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from leoma.errors import ConfigError, LogError
from leoma.log.eventlog import EventLog
from leoma.log.events import KINDS, VERSIONS, Event, encode_event

FORMATS = ("jsonl", "parquet", "sqlite")


def select(log: EventLog, *, kind: str | None = None, origin: str | None = None,
           since_block: int | None = None) -> Iterator[Event]:
    """The events an export holds, in local order."""
    for stored in log.events(kinds=[kind] if kind else None, origin=origin, since_block=since_block):
        yield stored.event


def write_jsonl(events: Iterator[Event], out: IO[bytes]) -> int:
    """Stream events as JSON lines; returns how many were written."""
    n = 0
    for e in events:
        out.write(encode_event(e))
        out.write(b"\n")
        n += 1
    return n


def _record(e: Event) -> dict[str, Any]:
    return {
        "origin": e.origin, "origin_seq": e.origin_seq, "key": e.key, "kind": e.kind, "v": e.v,
        "block": e.block, "at": e.at, "body": bytes(e.body).decode(), "prev": e.prev, "hash": e.hash,
    }


def write_parquet(events: Iterator[Event], path: Path, *, batch: int = 50_000) -> int:
    """Write events to a Parquet file (needs the `parquet` extra: pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("Parquet export needs pyarrow: pip install 'leoma[parquet]'") from None
    schema = pa.schema([
        ("origin", pa.string()), ("origin_seq", pa.int64()), ("key", pa.string()), ("kind", pa.string()),
        ("v", pa.int32()), ("block", pa.int64()), ("at", pa.int64()), ("body", pa.string()),
        ("prev", pa.string()), ("hash", pa.string()),
    ])
    n = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        chunk: list[dict[str, Any]] = []
        for e in events:
            chunk.append(_record(e))
            if len(chunk) >= batch:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                n += len(chunk)
                chunk = []
        if chunk or n == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
    return n


_COLUMNS: dict[str, type] = {
    "origin": str, "origin_seq": int, "key": str, "kind": str, "v": int,
    "block": int, "at": int, "body": str, "prev": str, "hash": str,
}
_VERDICTS_VIEW = """
    SELECT origin AS validator, block, json_extract(body, '$.task_id') AS task_id,
           json_extract(body, '$.miner') AS miner, json_extract(body, '$.passed') AS passed,
           json_extract(body, '$.overall') AS overall
    FROM events WHERE kind = 'verdict_recorded'
"""


def write_sqlite(events: Iterator[Event], path: Path, *, filters: dict[str, Any], batch: int = 10_000) -> int:
    """Write a sealed, self-describing SQLite copy that datasette can browse (via sqlite-utils).

    Sealed: triggers refuse UPDATE and DELETE, and `about.seal` is the sha256 over every
    exported hash in order, so any later edit is detectable.
    """
    import sqlite_utils

    if path.exists():
        raise LogError(f"{path} exists: choose a new file for the export")
    seal = hashlib.sha256()
    count = 0

    def records() -> Iterator[dict[str, Any]]:
        nonlocal count
        for e in events:
            seal.update(bytes.fromhex(e.hash))
            count += 1
            yield _record(e)

    db = sqlite_utils.Database(path)
    try:
        with db.conn:
            table = db.table("events")
            table.create(_COLUMNS, pk=("origin", "origin_seq"), not_null=set(_COLUMNS))
            table.create_index(["kind", "block"], index_name="events_kind_block")
            db.table("kinds").create({"kind": str, "version": int, "description": str}, pk="kind",
                                     not_null={"kind", "version", "description"})
            db.table("about").create({"name": str, "value": str}, pk="name", not_null={"name", "value"})
            db.create_view("verdicts", _VERDICTS_VIEW)
            db.table("kinds").insert_all(
                {"kind": k, "version": VERSIONS[k], "description": (t.__doc__ or "").strip().splitlines()[0]}
                for k, t in sorted(KINDS.items()))
            table.insert_all(records(), batch_size=batch)
            about = {
                "format": "leoma-events-export/v1",
                "events": str(count),
                "filters": json.dumps(filters, sort_keys=True),
                "seal": seal.hexdigest(),
                "hash_rule": "hash = sha256(bytes.fromhex(prev) || canonical JSON of every field but prev and hash)",
            }
            db.table("about").insert_all({"name": k, "value": v} for k, v in sorted(about.items()))
            for name in ("events", "kinds", "about"):
                for op in ("UPDATE", "DELETE"):
                    db.execute(f"CREATE TRIGGER {name}_no_{op.lower()} BEFORE {op} ON {name} "
                               f"BEGIN SELECT RAISE(ABORT, 'this export is sealed'); END")
    finally:
        db.close()
    return count


def export(log: EventLog, out: str, fmt: str, *, kind: str | None = None, origin: str | None = None,
           since_block: int | None = None, stdout: IO[bytes] | None = None) -> int:
    """Export the selected events of `log` to `out` (`-` = standard output, JSONL only)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown event kind {kind!r}: known kinds are {', '.join(sorted(KINDS))}")
    events = select(log, kind=kind, origin=origin, since_block=since_block)
    if fmt == "jsonl":
        if out == "-":
            assert stdout is not None
            return write_jsonl(events, stdout)
        with open(out, "wb") as fh:
            return write_jsonl(events, fh)
    if out == "-":
        raise ConfigError(f"{fmt} export needs a file name, not -")
    if fmt == "parquet":
        return write_parquet(events, Path(out))
    return write_sqlite(events, Path(out), filters={"kind": kind, "origin": origin, "since_block": since_block})
