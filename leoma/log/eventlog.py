"""The event log: one append-only SQLite table, hash-chained per origin.

`EventLog(path, own=HOTKEY)` appends this validator's own events and imports other origins'
events with their original hashes. Rules it enforces:

* append-only: triggers abort every UPDATE and DELETE of `events` and `origins`;
* one writer per process (a lock), `BEGIN IMMEDIATE` across processes, WAL, and
  `synchronous=FULL` whenever own events are written (a lost commit that was already
  mirrored would fork the chain);
* idempotent on `(origin, key)`: the same body again is a no-op; another body is refused
  (`ConflictError`) and a `conflict_recorded` event is appended;
* imports continue the stored chain exactly, or are refused (`GapError`, `ChainBroken`).

The `prev` of an event is not stored: it is the `hash` of the row before it in its origin's
chain, which is how `verify()` walks it. Bookkeeping that is not an observation (projection
checkpoints, what the mirror uploaded) lives in the small mutable `state` table.
"""

from __future__ import annotations

import gc
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import sqlite_utils

from leoma.errors import ChainBroken, ConflictError, EventError, GapError, LogError
from leoma.log.events import (
    KINDS,
    VERSIONS,
    ZERO_HASH,
    Body,
    ConflictRecorded,
    Event,
    body_kind,
    canonical,
    chain_hash,
    check_key,
    decode_body,
    encode_body,
    seal,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS origins (id INTEGER PRIMARY KEY, hotkey TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    origin_id INTEGER NOT NULL REFERENCES origins(id),
    origin_seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    key_hash INTEGER NOT NULL,
    kind TEXT NOT NULL,
    v INTEGER NOT NULL,
    block INTEGER NOT NULL,
    at INTEGER NOT NULL,
    body TEXT NOT NULL,
    hash BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_origin_seq ON events(origin_id, origin_seq);
-- Idempotency on (origin, key) through an 8-byte hash of the key: a third of the index size.
CREATE UNIQUE INDEX IF NOT EXISTS events_origin_key ON events(origin_id, key_hash);
CREATE INDEX IF NOT EXISTS events_kind_block ON events(kind, block);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE VIEW IF NOT EXISTS events_view AS
    SELECT e.seq, o.hotkey AS origin, e.origin_seq, e.key, e.kind, e.v, e.block,
           datetime(e.at, 'unixepoch') AS at, e.body, hex(e.hash) AS hash
    FROM events e JOIN origins o ON o.id = e.origin_id;
"""

_GUARDS = {
    "events_no_update": "BEFORE UPDATE ON events",
    "events_no_delete": "BEFORE DELETE ON events",
    "origins_no_update": "BEFORE UPDATE ON origins",
    "origins_no_delete": "BEFORE DELETE ON origins",
}

_INSERT = (
    "INSERT INTO events (origin_id, origin_seq, key, key_hash, kind, v, block, at, body, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def key_hash(key: str) -> int:
    """A signed 64-bit digest of an idempotency key (what the unique index holds)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


def _kind_or_none(body: str) -> str | None:
    try:
        return body_kind(body)
    except EventError:
        return None


class Draft(NamedTuple):
    """An own event to append: its idempotency key, block and body."""

    key: str
    block: int
    body: Body


class Stored(NamedTuple):
    """An event with its local position (`seq`) in this log."""

    seq: int
    event: Event


class Row(NamedTuple):
    """A light row for folds: no prev; `body` is the canonical JSON text (decode_body takes it)."""

    seq: int
    origin: str
    origin_seq: int
    key: str
    kind: str
    v: int
    block: int
    body: str


class Head(NamedTuple):
    """The last event of one origin: its origin_seq and hash (0 and zeros when empty)."""

    origin_seq: int
    hash: str


class AppendResult(NamedTuple):
    """What a batch append did: events appended or already present, and refused conflicts."""

    events: list[Event]
    conflicts: list[ConflictRecorded]


class VerifyProblem(NamedTuple):
    seq: int
    origin: str
    origin_seq: int
    reason: str


class VerifyReport(NamedTuple):
    """Outcome of `EventLog.verify`: `problems` is empty when every chain holds."""

    checked: int
    origins: int
    problems: list[VerifyProblem]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> VerifyProblem | None:
        """The broken event with the lowest local seq (a missing guard only when no event is)."""
        events = [p for p in self.problems if p.seq > 0]
        if events:
            return min(events, key=lambda p: p.seq)
        return self.problems[0] if self.problems else None


@contextmanager
def bulk_fold(*, freeze: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector while a fold reads the log in bulk.

    A cold fold builds a million small acyclic tuples and lists; each full collection the
    allocations trigger walks all of them again (a fifth of a cold start at real size) and
    frees nothing. Reference counting still frees everything at once; the collector resumes
    (if it ran before) when the block ends.

    With `freeze`, for the state a long-lived process builds once (the owner API's cold start),
    everything allocated so far moves to the collector's permanent generation before it
    resumes: otherwise its first collection walks every object the fold made (a quarter of a
    second at real size), and each full collection after it again. Those objects are still
    freed by reference counting when they are dropped.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was:
            gc.enable()


def _wrap_sqlite(exc: sqlite3.Error, path: str) -> LogError:
    return LogError(f"event log {path}: {exc} (is the file truncated or not a Leoma log?)")


class EventLog:
    """An append-only, hash-chained event log in one SQLite file.

    `own` is the hotkey whose events this process appends; other origins can only be imported.
    """

    def __init__(self, path: str | Path, *, own: str | None = None, readonly: bool = False) -> None:
        self.path = str(path)
        self.own = own
        self._lock = threading.RLock()
        self._origin_ids: dict[str, int] = {}
        self._origin_names: dict[int, str] = {}
        try:
            if readonly:
                uri = f"file:{Path(self.path).resolve()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            self.db = sqlite_utils.Database(conn)
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                self._create()
            self._check_schema()
            self._load_origins()
        except sqlite3.Error as exc:
            raise _wrap_sqlite(exc, self.path) from None
        self._own_head: Head | None = None

    # -- set-up ------------------------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def _create(self) -> None:
        with self._lock:
            self.conn.executescript(_SCHEMA)
            for name, when in _GUARDS.items():
                table = when.rsplit(" ", 1)[1]
                self.conn.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {name} {when} BEGIN "
                    f"SELECT RAISE(ABORT, '{table} are append-only'); END"
                )
            self.conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def _check_schema(self) -> None:
        if "events" not in self.db.table_names():
            raise LogError(f"{self.path} is not a Leoma event log (no events table)")
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        if row and int(row[0]) > SCHEMA_VERSION:
            raise LogError(f"{self.path} was written by a newer Leoma (schema {row[0]}): upgrade to open it")

    def _load_origins(self) -> None:
        for oid, hotkey in self.conn.execute("SELECT id, hotkey FROM origins"):
            self._origin_ids[hotkey] = oid
            self._origin_names[oid] = hotkey

    def _known(self, origin: str) -> int | None:
        """`origin`'s id, reading the origins again on a miss: another process may have added it."""
        oid = self._origin_ids.get(origin)
        if oid is None:
            self._load_origins()
            oid = self._origin_ids.get(origin)
        return oid

    def _origin_id(self, hotkey: str) -> int:
        oid = self._origin_ids.get(hotkey)
        if oid is None:
            self.conn.execute("INSERT OR IGNORE INTO origins (hotkey) VALUES (?)", (hotkey,))
            oid = self.conn.execute("SELECT id FROM origins WHERE hotkey = ?", (hotkey,)).fetchone()[0]
            self._origin_ids[hotkey] = oid
            self._origin_names[oid] = hotkey
        return oid

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self.conn.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- heads -------------------------------------------------------------------------------

    def head(self, origin: str) -> Head:
        """The last stored event of `origin`."""
        oid = self._known(origin)
        if oid is None:
            return Head(0, ZERO_HASH)
        row = self.conn.execute(
            "SELECT origin_seq, hash FROM events WHERE origin_id = ? ORDER BY origin_seq DESC LIMIT 1",
            (oid,),
        ).fetchone()
        return Head(row[0], row[1].hex()) if row else Head(0, ZERO_HASH)

    def frontier(self, *, until_seq: int | None = None) -> dict[str, Head]:
        """Every origin's head (as of local position `until_seq`, inclusive), sorted by origin.

        One backward step of the `(origin, origin_seq)` index per origin: within an origin, local
        positions grow with `origin_seq` (chains are appended and imported in order), so the
        first row at or below `until_seq` from the top is that origin's head then.
        """
        self._load_origins()
        out: dict[str, Head] = {}
        bound = "" if until_seq is None else " AND seq <= ?"
        for hotkey in sorted(self._origin_ids):
            args: tuple[object, ...] = (self._origin_ids[hotkey],) + (() if until_seq is None else (until_seq,))
            row = self.conn.execute(
                "SELECT origin_seq, hash FROM events WHERE origin_id = ?" + bound +
                " ORDER BY origin_seq DESC LIMIT 1", args,
            ).fetchone()
            if row is not None:
                out[hotkey] = Head(row[0], row[1].hex())
        return out

    def position(self, origin: str, origin_seq: int) -> tuple[int, str] | None:
        """The local `seq` and hash of `origin`'s event #`origin_seq`, if stored."""
        oid = self._origin_ids.get(origin)
        if oid is None:
            return None
        row = self.conn.execute(
            "SELECT seq, hash FROM events WHERE origin_id = ? AND origin_seq = ?", (oid, origin_seq)
        ).fetchone()
        return (row[0], row[1].hex()) if row else None

    def last_seq(self) -> int:
        """The local position of the newest row (0 when empty)."""
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    # -- appending own events ----------------------------------------------------------------

    def append(self, body: Body, *, key: str, block: int, at: int | None = None) -> Event:
        """Append one own event; idempotent on `key`. Raises `ConflictError` on a different body."""
        result = self.append_many([Draft(key, block, body)], at=at)
        if result.conflicts:
            c = result.conflicts[0]
            raise ConflictError(
                f"{c.key!r} already holds another body (stored {c.stored_hash[:12]}, offered "
                f"{c.offered_hash[:12]}); the first one stays and the conflict is recorded"
            )
        return result.events[0]

    def append_many(self, drafts: Sequence[Draft], *, at: int | None = None) -> AppendResult:
        """Append own events in one transaction (group commit).

        Already-present identical events are returned as they are; conflicting ones are refused,
        recorded as `conflict_recorded` events and listed in the result; the rest are appended.
        """
        if self.own is None:
            raise LogError("this EventLog was opened without an own hotkey: it can only import")
        stamp = int(time.time()) if at is None else at
        encoded = []
        for d in drafts:
            check_key(d.key)
            encoded.append((d, encode_body(d.body)))
        with self._lock:
            try:
                return self._append_fast(encoded, stamp)
            except sqlite3.IntegrityError:
                self._own_head = None
                return self._append_careful(encoded, stamp)
            except sqlite3.Error as exc:
                self._own_head = None
                raise _wrap_sqlite(exc, self.path) from None

    def _head_for_own(self) -> Head:
        if self._own_head is None:
            self._own_head = self.head(self.own or "")
        return self._own_head

    def _append_fast(self, encoded: list[tuple[Draft, bytes]], stamp: int) -> AppendResult:
        conn = self.conn
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            oid = self._origin_id(self.own or "")
            self._own_head = None
            seq, prev = self._head_for_own()
            events: list[Event] = []
            rows = []
            own = self.own or ""
            for d, data in encoded:
                seq += 1
                kind = d.body.kind_name()
                v = VERSIONS[kind]
                digest = chain_hash(
                    prev, canonical(origin=own, origin_seq=seq, key=d.key, v=v, block=d.block, at=stamp, body=data)
                )
                events.append(
                    Event(origin=own, origin_seq=seq, key=d.key, v=v, block=d.block, at=stamp,
                          body=msgspec.Raw(data), prev=prev, hash=digest)
                )
                rows.append((oid, seq, d.key, key_hash(d.key), kind, v, d.block, stamp, data.decode(), bytes.fromhex(digest)))
                prev = digest
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("PRAGMA synchronous = NORMAL")
        self._own_head = Head(seq, prev)
        return AppendResult(events, [])

    def _append_careful(self, encoded: list[tuple[Draft, bytes]], stamp: int) -> AppendResult:
        """One by one: keep duplicates, refuse and record conflicts, append the rest."""
        events: list[Event] = []
        conflicts: list[ConflictRecorded] = []
        own = self.own or ""
        for d, data in encoded:
            existing = self.get(own, d.key)
            if existing is not None:
                if bytes(existing.body) == data:
                    events.append(existing)
                    continue
                offered = seal(origin=own, origin_seq=existing.origin_seq, key=d.key, block=d.block,
                               body=data, prev=existing.prev, at=stamp)
                conflict = ConflictRecorded(origin=own, key=d.key, stored_hash=existing.hash,
                                            offered_hash=offered.hash)
                conflicts.append(conflict)
                ckey = f"conflict/{own}/{d.key}/{offered.hash[:16]}"
                if self.get(own, ckey) is None:
                    self._append_fast([(Draft(ckey, d.block, conflict), encode_body(conflict))], stamp)
                continue
            events.extend(self._append_fast([(d, data)], stamp).events)
        return AppendResult(events, conflicts)

    # -- importing other origins --------------------------------------------------------------

    def import_events(self, events: Sequence[Event]) -> int:
        """Import events of other origins (or our own, restored from the mirror) as they are.

        Events at or below an origin's head must match what is stored (a rewrite is refused with
        `ChainBroken`); the rest must continue the chain exactly (`GapError` otherwise) and every
        hash must verify. All or nothing per call. Returns how many were new.
        """
        by_origin: dict[str, list[Event]] = {}
        for e in events:
            by_origin.setdefault(e.origin, []).append(e)
        with self._lock:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                added = 0
                for origin, batch in by_origin.items():
                    added += self._import_origin(origin, batch)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK")
                raise ConflictError(f"import refused: an event reuses a stored key with another body ({exc})") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._own_head = None
        return added

    def _import_origin(self, origin: str, batch: list[Event]) -> int:
        head = self.head(origin)
        fresh = []
        for e in batch:
            if e.origin_seq <= head.origin_seq:
                stored = self.conn.execute(
                    "SELECT hash FROM events WHERE origin_id = ? AND origin_seq = ?",
                    (self._origin_ids[origin], e.origin_seq),
                ).fetchone()
                if stored is None or stored[0].hex() != e.hash:
                    raise ChainBroken(
                        f"{origin} #{e.origin_seq} differs from the stored event: the origin rewrote its history",
                        origin=origin, seq=e.origin_seq,
                    )
                continue
            fresh.append(e)
        if not fresh:
            return 0
        seq, prev = head
        rows = []
        oid = self._origin_id(origin)
        for e in fresh:
            if e.origin_seq != seq + 1:
                raise GapError(f"{origin}: expected #{seq + 1} next, got #{e.origin_seq} (a gap)")
            if e.prev != prev:
                raise ChainBroken(f"{origin} #{e.origin_seq} does not link to #{seq}", origin=origin, seq=e.origin_seq)
            data = bytes(e.body)
            check_key(e.key)
            digest = chain_hash(prev, canonical(origin=origin, origin_seq=e.origin_seq, key=e.key, v=e.v,
                                                block=e.block, at=e.at, body=data))
            if digest != e.hash:
                raise ChainBroken(f"{origin} #{e.origin_seq}: hash does not match its bytes (forged or edited)",
                                  origin=origin, seq=e.origin_seq)
            kind = body_kind(data)
            if kind in KINDS:
                decode_body(data, e.v)  # malformed bodies of known kinds are refused here
            rows.append((oid, e.origin_seq, e.key, key_hash(e.key), kind, e.v, e.block, e.at, data.decode(), bytes.fromhex(digest)))
            seq, prev = e.origin_seq, digest
        self.conn.executemany(_INSERT, rows)
        return len(rows)

    # -- reading -----------------------------------------------------------------------------

    def get(self, origin: str, key: str) -> Event | None:
        """The event of `origin` stored under `key`, if any."""
        oid = self._known(origin)
        if oid is None:
            return None
        row = self.conn.execute(
            "SELECT seq FROM events WHERE origin_id = ? AND key_hash = ? AND key = ?", (oid, key_hash(key), key)
        ).fetchone()
        if row is None:
            return None
        return next(self.events(after=row[0] - 1, limit=1)).event

    def row_of(self, origin: str, key: str) -> Row | None:
        """The light row of `origin` stored under `key`, if any (by the key index)."""
        oid = self._known(origin)
        if oid is None:
            return None
        found = self.conn.execute(
            "SELECT seq, origin_seq, key, kind, v, block, body FROM events"
            " WHERE origin_id = ? AND key_hash = ? AND key = ?", (oid, key_hash(key), key)
        ).fetchone()
        if found is None:
            return None
        seq, oseq, k, kind, v, block, body = found
        return Row(seq, origin, oseq, k, kind, v, block, body)

    def body_of(self, origin: str, key: str) -> bytes | None:
        """The canonical body bytes of `origin`'s event under `key`, if any."""
        oid = self._known(origin)
        if oid is None:
            return None
        found = self.conn.execute(
            "SELECT body FROM events WHERE origin_id = ? AND key_hash = ? AND key = ?", (oid, key_hash(key), key)
        ).fetchone()
        return found[0].encode() if found else None

    def newest_row(self, kind: str, *, origin: str | None = None) -> Row | None:
        """The row of `kind` (of `origin`) with the highest block, then the latest; by the kind index.

        Reads the `(kind, block)` index backwards and stops at the first row of the origin, so
        it costs the rows of that kind at the newest blocks, not the log's history.
        """
        args: list[object] = [kind]
        where = "kind = ?"
        if origin is not None:
            oid = self._origin_ids.get(origin)
            if oid is None:
                return None
            where += " AND origin_id = ?"
            args.append(oid)
        found = self.conn.execute(
            "SELECT seq, origin_id, origin_seq, key, kind, v, block, body FROM events INDEXED BY events_kind_block"
            f" WHERE {where} ORDER BY kind DESC, block DESC, seq DESC LIMIT 1", args,
        ).fetchone()
        if found is None:
            return None
        seq, oid, oseq, key, k, v, block, body = found
        return Row(seq, self._name(oid), oseq, key, k, v, block, body)

    def last_of_kind(self, origin: str, kind: str, *, after: int = 0) -> Row | None:
        """`origin`'s latest row (by local seq) of `kind`, among rows after local seq `after`.

        With `after` > 0 the rows are read backwards by seq from the end, so a caller that
        remembers how far it looked pays for what is new; from 0 the kind index is used.
        """
        oid = self._origin_ids.get(origin)
        if oid is None:
            self._load_origins()
            oid = self._origin_ids.get(origin)
            if oid is None:
                return None
        columns = "seq, origin_id, origin_seq, key, kind, v, block, body"
        if after > 0:
            sql = (f"SELECT {columns} FROM events NOT INDEXED WHERE seq > ? AND origin_id = ? AND kind = ?"
                   " ORDER BY seq DESC LIMIT 1")
            args: tuple[object, ...] = (after, oid, kind)
        else:
            sql = (f"SELECT {columns} FROM events INDEXED BY events_kind_block WHERE kind = ? AND origin_id = ?"
                   " ORDER BY seq DESC LIMIT 1")
            args = (kind, oid)
        found = self.conn.execute(sql, args).fetchone()
        if found is None:
            return None
        seq, _, oseq, key, k, v, block, body = found
        return Row(seq, origin, oseq, key, k, v, block, body)

    def rows_since_key(self, origin: str, key: str, kinds: Sequence[str]) -> Iterator[Row]:
        """`origin`'s rows of `kinds` at or after the block of its event under `key`, in local order.

        For a service reading what followed one of its own events (a task's responses and
        verdicts after its `task_opened`): the `(kind, block)` index starts at that block, so the
        cost is what happened since, not the whole history. Nothing when `key` is not stored.
        """
        anchor = self.row_of(origin, key)
        if anchor is None:
            return iter(())
        return self.rows(origin=origin, kinds=list(kinds), since_block=anchor.block)

    def raw_rows(self, **filters: Any) -> Iterator[tuple[int, int, int, str, int, int, str]]:
        """`(seq, origin_id, origin_seq, kind, v, block, body)` tuples straight from SQLite, for
        the hottest folds (same filters as `rows`; `origin_names()` maps the ids)."""
        return self._select("e.seq, e.origin_id, e.origin_seq, e.kind, e.v, e.block, e.body", **filters)

    def origin_names(self) -> dict[int, str]:
        """Local origin id -> hotkey, for `raw_rows`."""
        self._load_origins()
        return dict(self._origin_names)

    def stamped_rows(self, **filters: Any) -> Iterator[tuple[Row, int]]:
        """Light rows with their wall-clock stamp `at`, in local order (same filters as `rows`)."""
        names = self._origin_names
        for seq, oid, oseq, key, kind, v, block, body, at in self._select(
            "e.seq, e.origin_id, e.origin_seq, e.key, e.kind, e.v, e.block, e.body, e.at", **filters
        ):
            name = names.get(oid) or self._name(oid)
            yield Row(seq, name, oseq, key, kind, v, block, body), at

    def stamped_raw_rows(self, *, keyless: str | None = None,
                         **filters: Any) -> Iterator[tuple[int, int, int, str, str, int, int, str, int]]:
        """`(seq, origin_id, origin_seq, key, kind, v, block, body, at)` tuples, for a fold that
        needs the stamps of a million rows (same filters as `rows`; `origin_names()` maps the ids).

        Rows of kind `keyless` (a bulk kind whose key the fold never reads) come with key "".
        """
        if keyless is not None and not keyless.replace("_", "").isalnum():
            raise ValueError(f"not a kind: {keyless!r}")
        key = f"CASE WHEN e.kind = '{keyless}' THEN '' ELSE e.key END" if keyless else "e.key"
        return self._select(f"e.seq, e.origin_id, e.origin_seq, {key}, e.kind, e.v, e.block, e.body, e.at", **filters)

    def bulk_marked_rows(self, kind: str, v: int, *, after: int = 0
                         ) -> Iterator[tuple[int, int, int, int, str, int, str | None]]:
        """`(seq, origin_id, origin_seq, block, body, at, header)` of every row after local seq
        `after`, in local order, for a fold whose bulk is one kind it reads no key, kind or version
        of: `header` is None on the rows of `kind` at version `v`, and on every other row the text
        `"<kind> <v> <key>"` (`split_header` reads it). One query, seven columns, instead of
        nine columns a row or a query per row for the few that need them."""
        if not kind.replace("_", "").isalnum():
            raise ValueError(f"not a kind: {kind!r}")
        sql = (f"SELECT seq, origin_id, origin_seq, block, body, at, CASE WHEN kind = '{kind}' AND v = {int(v)} "
               "THEN NULL ELSE kind || ' ' || v || ' ' || key END FROM events WHERE seq > ? ORDER BY seq")
        try:
            yield from self.conn.execute(sql, (after,))
        except sqlite3.Error as exc:
            raise _wrap_sqlite(exc, self.path) from None

    @staticmethod
    def split_header(header: str) -> tuple[str, str, int]:
        """The key, kind and version in a `bulk_marked_rows` header (a kind has no space; a key may)."""
        kind, v, key = header.split(" ", 2)
        return key, kind, int(v)

    def row_header(self, seq: int) -> tuple[str, str, int]:
        """The key, kind and version of the row at local seq `seq`."""
        row = self.conn.execute("SELECT key, kind, v FROM events WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise LogError(f"no row at local seq {seq} in {self.path}")
        return str(row[0]), str(row[1]), int(row[2])

    def _select(
        self,
        columns: str,
        *,
        origin: str | None = None,
        kinds: Iterable[str] | None = None,
        since_block: int | None = None,
        until_block: int | None = None,
        after: int = 0,
        until_seq: int | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        where = ["e.seq > ?"]
        args: list[object] = [after]
        if origin is not None:
            oid = self._known(origin)
            if oid is None:
                return
            where.append("e.origin_id = ?")
            args.append(oid)
        if kinds is not None:
            kinds = list(kinds)
            # The kind index pays for a few rare kinds; for many kinds, or inside a seq range,
            # scanning by seq is faster than gathering from the index and sorting (`+` skips it).
            scan = "+" if (len(kinds) > 3 or after > 0 or until_seq is not None) else ""
            where.append(f"{scan}e.kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        if since_block is not None:
            where.append("e.block >= ?")
            args.append(since_block)
        if until_block is not None:
            where.append("e.block <= ?")
            args.append(until_block)
        if until_seq is not None:
            where.append("e.seq <= ?")
            args.append(until_seq)
        sql = f"SELECT {columns} FROM events e WHERE {' AND '.join(where)} ORDER BY e.seq {'DESC' if descending else 'ASC'}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            yield from self.conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise _wrap_sqlite(exc, self.path) from None

    def _name(self, oid: int) -> str:
        name = self._origin_names.get(oid)
        if name is None:
            self._load_origins()
            name = self._origin_names[oid]
        return name

    def rows(self, **filters: Any) -> Iterator[Row]:
        """Light rows in local order, for folds.

        Filters: `origin`, `kinds`, `since_block`, `until_block` (inclusive), `after` (local seq,
        exclusive), `until_seq` (inclusive), `limit`, `descending`.
        """
        names = self._origin_names
        for seq, oid, oseq, key, kind, v, block, body in self._select(
            "e.seq, e.origin_id, e.origin_seq, e.key, e.kind, e.v, e.block, e.body", **filters
        ):
            name = names.get(oid) or self._name(oid)
            yield Row(seq, name, oseq, key, kind, v, block, body)

    def events(self, **filters: Any) -> Iterator[Stored]:
        """Full events (with `prev` and `hash`) in local order; same filters as `rows`."""
        name = self._name
        for seq, oid, oseq, key, v, block, at, body, digest, prev in self._select(
            "e.seq, e.origin_id, e.origin_seq, e.key, e.v, e.block, e.at, e.body, e.hash,"
            " (SELECT p.hash FROM events p WHERE p.origin_id = e.origin_id AND p.origin_seq = e.origin_seq - 1)",
            **filters,
        ):
            yield Stored(
                seq,
                Event(origin=name(oid), origin_seq=oseq, key=key, v=v, block=block, at=at,
                      body=msgspec.Raw(body.encode()), prev=prev.hex() if prev else ZERO_HASH,
                      hash=digest.hex()),
            )

    def chain(self, origin: str, *, after: int = 0, limit: int | None = None) -> Iterator[Event]:
        """One origin's events in chain order, from `origin_seq > after`."""
        oid = self._known(origin)
        if oid is None:
            return
        prev = ZERO_HASH
        if after > 0:
            row = self.conn.execute(
                "SELECT hash FROM events WHERE origin_id = ? AND origin_seq = ?", (oid, after)
            ).fetchone()
            if row is None:
                raise GapError(f"{origin} has no event #{after}")
            prev = row[0].hex()
        sql = ("SELECT origin_seq, key, v, block, at, body, hash FROM events WHERE origin_id = ? AND origin_seq > ?"
               " ORDER BY origin_seq")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for oseq, key, v, block, at, body, digest in self.conn.execute(sql, (oid, after)):
            h = digest.hex()
            yield Event(origin=origin, origin_seq=oseq, key=key, v=v, block=block, at=at,
                        body=msgspec.Raw(body.encode()), prev=prev, hash=h)
            prev = h

    def count(self, *, kind: str | None = None, origin: str | None = None) -> int:
        """How many events (optionally of one kind and/or origin)."""
        where: list[str] = ["1"]
        args: list[object] = []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if origin:
            oid = self._known(origin)
            if oid is None:
                return 0
            where.append("origin_id = ?")
            args.append(oid)
        return int(self.conn.execute(f"SELECT count(*) FROM events WHERE {' AND '.join(where)}", args).fetchone()[0])

    def counts_by_kind(self) -> dict[str, int]:
        """Event counts per kind, sorted by kind."""
        return dict(self.conn.execute("SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind"))

    def origins(self) -> list[str]:
        """Every origin with at least one event, sorted."""
        self._load_origins()
        return sorted(self._origin_ids)

    # -- integrity ---------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Recompute every origin's chain; report missing guards, gaps, reorders and edits."""
        problems: list[VerifyProblem] = []
        triggers = {t.name for t in self.db.triggers}
        for name in _GUARDS:
            if name not in triggers:
                problems.append(VerifyProblem(0, "", 0, f"append-only guard {name} is missing (hand-edited database)"))
        checked = 0
        try:
            self._load_origins()
            for oid, origin in sorted(self._origin_names.items()):
                expected_seq, prev = 1, ZERO_HASH
                for seq, oseq, key, stored_key_hash, kind, v, block, at, body, digest in self.conn.execute(
                    "SELECT seq, origin_seq, key, key_hash, kind, v, block, at, body, hash FROM events"
                    " WHERE origin_id = ? ORDER BY origin_seq", (oid,)
                ):
                    checked += 1
                    if oseq != expected_seq:
                        problems.append(VerifyProblem(seq, origin, oseq, f"expected #{expected_seq}: events missing or reordered"))
                        break
                    computed = chain_hash(prev, canonical(origin=origin, origin_seq=oseq, key=key, v=v,
                                                          block=block, at=at, body=body.encode()))
                    if computed != digest.hex():
                        problems.append(VerifyProblem(seq, origin, oseq, "hash does not match the stored bytes (edited)"))
                        break
                    # The hash covers the body (whose tag is the kind) and the key; the columns the
                    # indexes read beside them must agree, or a query by kind or key lies.
                    if stored_key_hash != key_hash(key):
                        problems.append(VerifyProblem(seq, origin, oseq, "key_hash does not match the key (edited)"))
                        break
                    if kind != _kind_or_none(body):
                        problems.append(VerifyProblem(seq, origin, oseq, f"kind {kind!r} is not the body's kind (edited)"))
                        break
                    prev = digest.hex()
                    expected_seq += 1
        except sqlite3.Error as exc:
            problems.append(VerifyProblem(0, "", 0, str(_wrap_sqlite(exc, self.path))))
        except EventError as exc:
            problems.append(VerifyProblem(0, "", 0, str(exc)))
        return VerifyReport(checked, len(self._origin_names), problems)

    # -- bookkeeping state (mutable, not events) ----------------------------------------------

    def get_state(self, name: str) -> bytes | None:
        """A named bookkeeping value (projection checkpoints, mirror positions)."""
        row = self.conn.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def state_names(self, prefix: str = "") -> list[str]:
        """The names of the bookkeeping values starting with `prefix`, sorted."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.conn.execute("SELECT name FROM state WHERE name LIKE ? ESCAPE '\\' ORDER BY name",
                                 (escaped + "%",)).fetchall()
        return [str(r[0]) for r in rows]

    def set_state(self, name: str, value: bytes) -> None:
        """Set a named bookkeeping value."""
        with self._lock:
            self.conn.execute(
                "INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
