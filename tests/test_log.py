"""The event log: append-only, idempotent, hash-chained, importable, verifiable."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from leoma.errors import ChainBroken, ConflictError, GapError, LogError, UnknownKind
from leoma.log import events as ev
from leoma.log.eventlog import Draft, EventLog

A = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
B = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def verdict(task: int, miner: str = "m", overall: int = 80) -> ev.VerdictRecorded:
    return ev.VerdictRecorded(task_id=task, miner=miner, passed=overall >= 75, overall=overall,
                              judge_model="j", prompt_version="evaluate/v1")


def drafts(n: int, start: int = 0) -> list[Draft]:
    return [Draft(f"verdict/{i}/m", 100 + i, verdict(i)) for i in range(start, start + n)]


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    with EventLog(tmp_path / "a.db", own=A) as opened:
        yield opened


def test_append_builds_a_chain(log: EventLog) -> None:
    events = log.append_many(drafts(5)).events
    assert [e.origin_seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].prev == ev.ZERO_HASH
    assert all(b.prev == a.hash for a, b in zip(events, events[1:]))
    assert log.head(A) == (5, events[-1].hash)
    assert log.verify().ok


def test_reappending_the_same_body_is_a_noop(log: EventLog) -> None:
    first = log.append(verdict(1), key="verdict/1/m", block=5, at=1)
    again = log.append(verdict(1), key="verdict/1/m", block=5, at=2)
    assert again == first
    assert log.count() == 1


def test_a_different_body_under_the_same_key_is_refused_and_recorded(log: EventLog) -> None:
    log.append(verdict(1), key="verdict/1/m", block=5)
    with pytest.raises(ConflictError, match="first one stays"):
        log.append(verdict(1, overall=10), key="verdict/1/m", block=5)
    assert log.count(kind="verdict_recorded") == 1
    assert log.count(kind="conflict_recorded") == 1
    stored = log.get(A, "verdict/1/m")
    assert stored is not None and stored.payload() == verdict(1)


def test_one_conflict_in_a_batch_does_not_stop_the_rest(log: EventLog) -> None:
    log.append(verdict(1), key="verdict/1/m", block=5)
    batch = [Draft("verdict/0/m", 5, verdict(0)), Draft("verdict/1/m", 5, verdict(1, overall=3)),
             Draft("verdict/2/m", 5, verdict(2))]
    result = log.append_many(batch)
    assert len(result.conflicts) == 1
    assert {e.key for e in result.events} == {"verdict/0/m", "verdict/2/m"}
    assert log.verify().ok


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=30))
def test_property_reappending_is_a_noop(tmp_path: Path, tasks: list[int]) -> None:
    path = tmp_path / f"p{abs(hash(tuple(tasks)))}.db"
    with EventLog(path, own=A) as log:
        for t in tasks:
            log.append_many([Draft(f"verdict/{t}/m", t, verdict(t))], at=0)
        assert log.count() == len(set(tasks))
        assert log.verify().ok


def test_updates_and_deletes_are_aborted(log: EventLog) -> None:
    log.append_many(drafts(2))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("UPDATE events SET block = 0")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("DELETE FROM events")


def _tamper(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("DROP TRIGGER events_no_delete")
    conn.execute(sql)
    conn.commit()
    conn.close()


def _tamper_guarded(path: Path, *sql: str) -> None:
    """Edit rows behind the log's back and put its guards back, so only the edit itself can show."""
    conn = sqlite3.connect(path)
    guards = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    for statement in sql:
        conn.execute(statement)
    for (ddl,) in guards:
        conn.execute(ddl)
    conn.commit()
    conn.close()


def _other_char(text: str, at: int) -> str:
    """`text` with the character at `at` replaced by a different one (still one character)."""
    c = text[at]
    return text[:at] + ("b" if c == "a" else "a") + text[at + 1:]


# Every stored field of an event row. `prev` is not a column: it is the previous row's `hash`, so it
# is edited by re-sealing a row after editing it (the next row's chain then breaks). The signature
# is not in a local row either: it signs the mirror's checkpoint (tests/test_mirror.py tampers it).
FIELDS = ("key", "key_hash", "kind", "origin", "origin_name", "origin_seq", "block", "at", "v", "body", "hash", "prev")


@pytest.mark.parametrize("field", FIELDS)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(min_value=1, max_value=6), pos=st.integers(min_value=0, max_value=10**6))
def test_property_any_edited_field_of_any_row_fails_verify(tmp_path: Path, field: str, seq: int, pos: int) -> None:
    here = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis reruns examples: a fresh pair of logs each
    path = here / "a.db"
    with EventLog(path, own=A) as log:
        log.append_many(drafts(6))
        with EventLog(here / "b.db", own=B) as other:
            other.append_many(drafts(2, start=10))
            assert log.import_events(list(other.chain(B))) == 2  # rows 7 and 8: B's chain
        key, kind, body, digest = log.conn.execute(
            "SELECT key, kind, body, hash FROM events WHERE seq = ?", (seq,)).fetchone()
        assert log.verify().ok
    q = f"WHERE seq = {seq}"
    where_bad = {seq}
    if field in ("key", "kind", "body"):
        text = {"key": key, "kind": kind, "body": body}[field]
        edited = _other_char(text, pos % len(text)).replace("'", "''")
        sql = [f"UPDATE events SET {field} = '{edited}' {q}"]
    elif field == "key_hash":
        sql = [f"UPDATE events SET key_hash = key_hash + {1 + pos} {q}"]
    elif field in ("block", "at", "v"):
        sql = [f"UPDATE events SET {field} = {field} + {1 + pos % 1000} {q}"]
    elif field == "origin":  # the row moved to another origin's chain
        sql = [f"UPDATE events SET origin_id = (SELECT id FROM origins WHERE hotkey = '{B}'), "
               f"origin_seq = 3 {q}"]
        where_bad = {seq, seq + 1, 6}  # A's gap (next row, or none if last) and B's foreign row
    elif field == "origin_name":  # the origins table renamed under every row of A
        sql = [f"UPDATE origins SET hotkey = '{B[:-1]}x' WHERE hotkey = '{A}'"]
        where_bad = {1}
    elif field == "origin_seq":
        sql = [f"UPDATE events SET origin_seq = origin_seq + 100 {q}"]
        where_bad = {seq, seq + 1}
    elif field == "hash":
        raw = bytearray(digest)
        raw[pos % len(raw)] ^= 1 << (pos % 8)
        sql = [f"UPDATE events SET hash = x'{bytes(raw).hex()}' {q}"]
    else:  # prev: edit a row's body and re-seal its hash, so the row itself verifies
        if seq == 6:
            seq = 5  # the newest row has no successor locally: the signed checkpoint covers it
            q = f"WHERE seq = {seq}"
        with EventLog(path, readonly=True) as log:
            row = next(log.chain(A, after=seq - 1, limit=1))
        resealed = ev.seal(origin=A, origin_seq=row.origin_seq, key=row.key, block=row.block + 1, body=bytes(row.body),
                           prev=row.prev, at=row.at, v=row.v)
        sql = [f"UPDATE events SET block = block + 1, hash = x'{resealed.hash}' {q}"]
        where_bad = {seq + 1}
    _tamper_guarded(path, *sql)
    with EventLog(path, readonly=True) as log:
        report = log.verify()
    assert not report.ok, f"editing {field} of row {seq} went unnoticed"
    assert not any("guard" in p.reason for p in report.problems)  # the guards are back: the edit is what shows
    assert {p.seq for p in report.problems} & where_bad, report.problems


@pytest.mark.parametrize("seq", [1, 3, 5])
def test_a_dropped_row_fails_verify(tmp_path: Path, seq: int) -> None:
    # (dropping the newest row is indistinguishable from never writing it: the signed checkpoint covers that)
    path = tmp_path / "d.db"
    with EventLog(path, own=A) as log:
        log.append_many(drafts(6))
    _tamper_guarded(path, f"DELETE FROM events WHERE seq = {seq}")
    with EventLog(path, readonly=True) as log:
        report = log.verify()
    assert not report.ok and report.first is not None and report.first.seq == seq + 1
    assert "missing or reordered" in report.first.reason


def test_verify_names_the_first_bad_seq(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with EventLog(path, own=A) as log:
        log.append_many(drafts(5))
    _tamper(path, "UPDATE events SET key = 'verdict/x/m' WHERE seq = 3")
    with EventLog(path, readonly=True) as log:
        assert log.verify().first.seq == 3  # type: ignore[union-attr]


def test_import_keeps_original_hashes(tmp_path: Path, log: EventLog) -> None:
    log.append_many(drafts(4))
    with EventLog(tmp_path / "b.db", own=B) as other:
        assert other.import_events(list(log.chain(A))) == 4
        assert other.frontier() == log.frontier()
        assert other.import_events(list(log.chain(A))) == 0, "re-import is a no-op"
        log.append_many(drafts(2, start=10))
        assert other.import_events(list(log.chain(A, after=4))) == 2
        assert other.verify().ok


def test_import_refuses_a_gap(tmp_path: Path, log: EventLog) -> None:
    log.append_many(drafts(4))
    chain = list(log.chain(A))
    with EventLog(tmp_path / "b.db", own=B) as other:
        with pytest.raises(GapError, match="expected #1"):
            other.import_events(chain[1:])
        assert other.count() == 0, "nothing is stored from a refused import"


def test_import_refuses_a_forged_hash(tmp_path: Path, log: EventLog) -> None:
    log.append_many(drafts(3))
    chain = list(log.chain(A))
    import msgspec

    forged = msgspec.structs.replace(chain[1], body=msgspec.Raw(ev.encode_body(verdict(1, overall=99))))
    with EventLog(tmp_path / "b.db", own=B) as other:
        with pytest.raises(ChainBroken, match="forged or edited"):
            other.import_events([chain[0], forged, chain[2]])
        assert other.count() == 0


def test_import_refuses_a_rewritten_history(tmp_path: Path, log: EventLog) -> None:
    log.append_many(drafts(3))
    with EventLog(tmp_path / "b.db", own=B) as other:
        other.import_events(list(log.chain(A)))
        fork = ev.seal(origin=A, origin_seq=2, key="verdict/1/m", block=1, body=verdict(1, overall=5),
                       prev=list(log.chain(A))[0].hash)
        with pytest.raises(ChainBroken, match="rewrote"):
            other.import_events([fork])


def test_reads_filter_by_origin_kind_block_and_seq(tmp_path: Path, log: EventLog) -> None:
    log.append_many(drafts(5))
    log.append(ev.TaskClosed(task_id=1), key="task/1/closed", block=500)
    with EventLog(tmp_path / "b.db", own=B) as other:
        other.append_many(drafts(3))
        log.import_events(list(other.chain(B)))
    assert log.count(origin=B) == 3
    assert [r.kind for r in log.rows(kinds=["task_closed"])] == ["task_closed"]
    assert [r.block for r in log.rows(since_block=102, until_block=103, origin=A)] == [102, 103]
    assert [r.seq for r in log.rows(after=6)] == [7, 8, 9]
    assert list(log.rows(origin="5Nobody")) == []
    frontier = log.frontier()
    assert list(frontier) == sorted([A, B]) and frontier[B].origin_seq == 3


def test_a_row_of_an_unknown_kind_gives_a_clear_error_on_decode(tmp_path: Path, log: EventLog) -> None:
    future = ev.seal(origin=B, origin_seq=1, key="x", block=1, body=b'{"kind":"hologram_observed","x":1}',
                     prev=ev.ZERO_HASH, v=1)
    log.import_events([future])
    row = next(log.rows())
    with pytest.raises(UnknownKind, match="hologram_observed"):
        ev.decode_body(row.body, row.v)
    assert log.verify().ok


def test_truncated_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with EventLog(path, own=A) as log:
        log.append_many(drafts(200))
        log.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(LogError, match=str(path)):
        with EventLog(path, readonly=True) as log:
            list(log.rows())
            log.verify()
            raise LogError(f"{path}: verify did not notice")


def test_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.close()
    with pytest.raises(LogError, match="not a Leoma event log"):
        EventLog(path, readonly=True)


def test_import_only_log_cannot_append(tmp_path: Path) -> None:
    with EventLog(tmp_path / "r.db") as log:
        with pytest.raises(LogError, match="own hotkey"):
            log.append(verdict(1), key="k", block=1)


def test_state_is_bookkeeping_not_events(log: EventLog) -> None:
    log.set_state("mirror/uploaded", b"5")
    log.set_state("mirror/uploaded", b"6")
    assert log.get_state("mirror/uploaded") == b"6"
    assert log.count() == 0


def test_state_names_are_listed_by_a_literal_prefix(log: EventLog) -> None:
    for name in ("mirror/out/A", "mirror/out/B", "mirror/outX", "mirror_out/C", "projection/epoch_fold"):
        log.set_state(name, b"1")
    assert log.state_names("mirror/out/") == ["mirror/out/A", "mirror/out/B"]
    assert log.state_names("mirror_") == ["mirror_out/C"]  # `_` is a character, not a LIKE wildcard
    assert log.state_names("%") == []
    assert log.state_names() == sorted(["mirror/out/A", "mirror/out/B", "mirror/outX", "mirror_out/C",
                                        "projection/epoch_fold"])


def test_a_reader_finds_by_key_an_origin_another_process_added_after_it_opened(tmp_path: Path) -> None:
    """The owner API's log is written by its mirror loop and read by its routes: a reader's
    key lookups see an origin that first appeared after the reader opened the file."""
    path = tmp_path / "shared.db"
    with EventLog(path, own=A) as writer:
        writer.append_many(drafts(2))
        with EventLog(path, readonly=True) as reader:
            assert reader.row_of(B, "verdict/10/m") is None and reader.body_of(B, "verdict/10/m") is None
            with EventLog(tmp_path / "b.db", own=B) as other:
                other.append_many(drafts(1, start=10))
                writer.import_events(list(other.chain(B)))
            row = reader.row_of(B, "verdict/10/m")
            assert row is not None and row.origin == B
            assert reader.body_of(B, "verdict/10/m") == (row.body.encode() if isinstance(row.body, str) else row.body)
