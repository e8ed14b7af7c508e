"""`leoma events`, `leoma verify`, `leoma export` and `leoma demo` as a person or a script uses them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from leoma.log import events as ev
from leoma.log.eventlog import Draft, EventLog
from leoma_cmd.main import cli

A = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
B = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "a.db"
    with EventLog(path, own=A) as log, EventLog(tmp_path / "b.db", own=B) as other:
        log.append_many([Draft(f"verdict/{i}/m", 100 + i, ev.VerdictRecorded(
            task_id=i, miner="m", passed=i % 2 == 0, overall=80, judge_model="j", prompt_version="p"))
            for i in range(6)])
        log.append(ev.TaskClosed(task_id=5, evaluated=1), key="task/5/closed", block=300)
        other.append(ev.ChainHeadObserved(block_hash="ab" * 32), key="head/1", block=50)
        log.import_events(list(other.chain(B)))
    return str(path)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_tail_shows_the_newest_events_as_a_table(db: str) -> None:
    code, out = run("events", "tail", "--db", db, "-n", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["seq", "origin", "#", "block", "kind"]
    assert len(lines) == 2 + 3
    assert "chain_head_observed" in lines[-1]


def test_tail_json_filters_by_kind_and_origin(db: str) -> None:
    code, out = run("events", "tail", "--db", db, "--kind", "verdict_recorded", "--origin", A, "--json")
    assert code == 0
    data = json.loads(out)
    assert [d["origin_seq"] for d in data] == [1, 2, 3, 4, 5, 6]
    assert data[0]["body"]["kind"] == "verdict_recorded"


def test_show_prints_one_event_in_full(db: str) -> None:
    code, out = run("events", "show", "3", "--db", db, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["seq"] == 3 and data["key"] == "verdict/2/m" and len(data["hash"]) == 64
    code, out = run("events", "show", "99", "--db", db)
    assert code == 1 and "no event with seq 99" in out


def test_count_per_kind_and_origin(db: str) -> None:
    code, out = run("events", "count", "--db", db, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["total"] == 8
    assert data["kinds"] == {"chain_head_observed": 1, "task_closed": 1, "verdict_recorded": 6}
    assert data["origins"][A]["events"] == 7 and data["origins"][B]["events"] == 1


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    code, out = run("events", "tail", "--db", str(tmp_path / "nope.db"))
    assert code == 1 and "no event log at" in out and "--db" in out
    assert not (tmp_path / "nope.db").exists(), "reading never creates a database"


def test_verify_ok_and_broken(db: str) -> None:
    code, out = run("verify", "--db", db)
    assert code == 0 and "ok: 8 events in 2 chains verify" in out
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET body = replace(body, '\"overall\":80', '\"overall\":81') WHERE seq = 4")
    conn.commit()
    conn.close()
    code, out = run("verify", "--db", db)
    assert code == 1
    assert "first bad event is seq 4" in out and "guard" in out


def test_export_jsonl_streams_verifiable_events(db: str, tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    code, _ = run("export", "--db", db, "--kind", "verdict_recorded", str(out))
    assert code == 0
    lines = out.read_bytes().splitlines()
    assert len(lines) == 6
    prev = ev.ZERO_HASH
    for line in lines:
        e = ev.decode_event(line)
        assert e.prev == prev
        ev.verify_event(e)
        prev = e.hash


def test_export_to_stdout_and_since_block(db: str) -> None:
    code, out = run("export", "--db", db, "--since-block", "104", "-")
    assert code == 0
    assert [ev.decode_event(x).block for x in out.splitlines()] == [104, 105, 300]


def test_export_parquet(db: str, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "e.parquet"
    code, _ = run("export", "--db", db, "--format", "parquet", "--origin", B, str(out))
    assert code == 0
    table = pq.read_table(out)
    assert table.num_rows == 1 and table.column("kind").to_pylist() == ["chain_head_observed"]


def test_export_sqlite_is_sealed_and_self_describing(db: str, tmp_path: Path) -> None:
    out = tmp_path / "e.sqlite"
    code, _ = run("export", "--db", db, "--format", "sqlite", str(out))
    assert code == 0
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 8
    about = dict(conn.execute("SELECT name, value FROM about"))
    assert about["format"] == "leoma-events-export/v1" and len(about["seal"]) == 64
    assert conn.execute("SELECT count(*) FROM verdicts WHERE passed = 1").fetchone()[0] == 3
    kinds = {k for (k,) in conn.execute("SELECT kind FROM kinds")}
    assert kinds == set(ev.KINDS)
    with pytest.raises(sqlite3.IntegrityError, match="sealed"):
        conn.execute("DELETE FROM events")
    code, out_text = run("export", "--db", db, "--format", "sqlite", str(out))
    assert code == 1 and "exists" in out_text


def test_export_refuses_an_unknown_kind(db: str, tmp_path: Path) -> None:
    code, out = run("export", "--db", db, "--kind", "nonsense", str(tmp_path / "x"))
    assert code == 1 and "unknown event kind 'nonsense'" in out


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    code, out = run("demo", "--dir", str(tmp_path / "tour"))
    assert code == 0, out
    assert "verify: ok — 10 events in 2 chains" in out
    code, out = run("verify", "--db", str(tmp_path / "tour" / "alice.db"))
    assert code == 0


def test_help_runs_in_a_fresh_process() -> None:
    leoma = Path(sys.executable).parent / "leoma"
    out = subprocess.run([str(leoma), "--help"], capture_output=True, text=True, check=True)
    assert "events" in out.stdout and "verify" in out.stdout
    version = subprocess.run([str(leoma), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("leoma, version ")
