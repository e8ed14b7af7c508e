"""The sealed SQLite export (written by sqlite-utils): same rows as the log, same seal, same schema rules."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from leoma.errors import LogError
from leoma.log import events as ev
from leoma.log.eventlog import Draft, EventLog
from leoma.log.export import export, select, write_sqlite

A = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    log = EventLog(tmp_path / "a.db", own=A)
    log.append_many([Draft(f"verdict/{i}/m", 100 + i, ev.VerdictRecorded(
        task_id=i, miner=f"m{i % 3}", passed=i % 2 == 0, overall=70 + i, judge_model="j", prompt_version="p"))
        for i in range(25)])
    log.append(ev.TaskClosed(task_id=5, evaluated=1), key="task/5/closed", block=300)
    yield log
    log.close()


def test_rows_seal_and_view_match_the_log(log: EventLog, tmp_path: Path) -> None:
    out = tmp_path / "e.sqlite"
    # a batch smaller than the export checks that rows spanning several batches all land, in order
    assert write_sqlite(select(log), out, filters={"kind": None}, batch=4) == 26
    originals = [s.event for s in log.events()]
    conn = sqlite3.connect(out)
    rows = conn.execute("SELECT origin, origin_seq, key, kind, v, block, at, body, prev, hash FROM events "
                        "ORDER BY origin, origin_seq").fetchall()
    assert rows == [(e.origin, e.origin_seq, e.key, e.kind, e.v, e.block, e.at, bytes(e.body).decode(), e.prev, e.hash)
                    for e in originals]
    about = dict(conn.execute("SELECT name, value FROM about"))
    assert about["seal"] == hashlib.sha256(b"".join(bytes.fromhex(e.hash) for e in originals)).hexdigest()
    assert about["events"] == "26" and json.loads(about["filters"]) == {"kind": None}
    verdicts = conn.execute("SELECT task_id, miner, passed, overall FROM verdicts ORDER BY task_id").fetchall()
    assert verdicts == [(i, f"m{i % 3}", int(i % 2 == 0), 70 + i) for i in range(25)]
    assert dict(conn.execute("SELECT kind, version FROM kinds")) == dict(ev.VERSIONS)


def test_schema_keys_not_null_and_index(log: EventLog, tmp_path: Path) -> None:
    out = tmp_path / "e.sqlite"
    export(log, str(out), "sqlite")
    conn = sqlite3.connect(out)
    cols = {name: (kind, notnull, pk) for _, name, kind, notnull, _, pk in conn.execute("PRAGMA table_info(events)")}
    assert cols["origin"] == ("TEXT", 1, 1) and cols["origin_seq"] == ("INTEGER", 1, 2)
    assert all(notnull for _, notnull, _ in cols.values())
    assert [r[1] for r in conn.execute("PRAGMA index_list(events)") if r[1] == "events_kind_block"]
    assert [r[2] for r in conn.execute("PRAGMA index_info(events_kind_block)")] == ["kind", "block"]


@pytest.mark.parametrize("statement", [
    "UPDATE events SET body = '{}'", "DELETE FROM events", "UPDATE about SET value = 'x'",
    "DELETE FROM about", "UPDATE kinds SET version = 9", "DELETE FROM kinds",
])
def test_every_table_is_sealed(log: EventLog, tmp_path: Path, statement: str) -> None:
    out = tmp_path / "e.sqlite"
    export(log, str(out), "sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="sealed"):
        sqlite3.connect(out).execute(statement)


def test_an_existing_file_is_never_overwritten(log: EventLog, tmp_path: Path) -> None:
    out = tmp_path / "e.sqlite"
    out.write_bytes(b"precious")
    with pytest.raises(LogError, match="exists"):
        export(log, str(out), "sqlite")
    assert out.read_bytes() == b"precious"
