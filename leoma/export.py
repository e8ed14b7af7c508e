"""Export events for research: JSON lines, Parquet, or a sealed SQLite copy.

Every format holds the full envelope (origin, origin_seq, key, kind, v, block, at, body, prev,
hash), so an exported event can be re-verified anywhere. Filters: kind, origin, first block.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from leoma.errors import ConfigError, LogError
from leoma.events import KINDS, VERSIONS, Event, encode_event
from leoma.log import EventLog

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


_SEALED_SCHEMA = """
CREATE TABLE events (
    origin TEXT NOT NULL, origin_seq INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
    v INTEGER NOT NULL, block INTEGER NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL,
    prev TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (origin, origin_seq)
);
CREATE INDEX events_kind_block ON events(kind, block);
CREATE TABLE kinds (kind TEXT PRIMARY KEY, version INTEGER NOT NULL, description TEXT NOT NULL);
CREATE TABLE about (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE VIEW verdicts AS
    SELECT origin AS validator, block, json_extract(body, '$.task_id') AS task_id,
           json_extract(body, '$.miner') AS miner, json_extract(body, '$.passed') AS passed,
           json_extract(body, '$.overall') AS overall
    FROM events WHERE kind = 'verdict_recorded';
"""


def write_sqlite(events: Iterator[Event], path: Path, *, filters: dict[str, Any]) -> int:
    """Write a sealed, self-describing SQLite copy that datasette can browse.

    Sealed: triggers refuse UPDATE and DELETE, and `about.seal` is the sha256 over every
    exported hash in order, so any later edit is detectable.
    """
    if path.exists():
        raise LogError(f"{path} exists: choose a new file for the export")
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_SEALED_SCHEMA)
        conn.executemany(
            "INSERT INTO kinds VALUES (?, ?, ?)",
            [(k, VERSIONS[k], (t.__doc__ or "").strip().splitlines()[0]) for k, t in sorted(KINDS.items())],
        )
        seal = hashlib.sha256()
        n = 0
        batch = []
        for e in events:
            r = _record(e)
            batch.append(tuple(r.values()))
            seal.update(bytes.fromhex(e.hash))
            n += 1
            if len(batch) >= 10_000:
                conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
                batch = []
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
        about = {
            "format": "leoma-events-export/v1",
            "events": str(n),
            "filters": json.dumps(filters, sort_keys=True),
            "seal": seal.hexdigest(),
            "hash_rule": "hash = sha256(bytes.fromhex(prev) || canonical JSON of every field but prev and hash)",
        }
        conn.executemany("INSERT INTO about VALUES (?, ?)", sorted(about.items()))
        for table in ("events", "kinds", "about"):
            for op in ("UPDATE", "DELETE"):
                conn.execute(
                    f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'this export is sealed'); END"
                )
        conn.commit()
    finally:
        conn.close()
    return n


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
