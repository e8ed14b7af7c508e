"""One table printer for every listing: a table, --json, --nl (one object per line) or --csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from leoma.log import events as ev
from leoma.log.eventlog import Draft, EventLog
from leoma_cmd.main import cli
from leoma_cmd.output import json_option, print_json, print_table

ROWS = [("alpha", 1, None), ("beta, with comma", 22, "x\"y")]


@click.command()
@json_option
def listing(as_json: bool) -> None:
    if as_json:
        print_json([{"name": n, "count": c} for n, c, _ in ROWS])
    else:
        print_table(["name", "count", "note"], ROWS)


@click.command()
@json_option
def rows_only(as_json: bool) -> None:
    print_table(["name", "count", "note"], ROWS)


def run(command: click.Command, *args: str) -> str:
    result = CliRunner().invoke(command, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_table_for_people() -> None:
    lines = run(listing).splitlines()
    assert lines[0].split() == ["name", "count", "note"] and set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["alpha", "1"] and lines[3].startswith("beta, with comma  22")


def test_json_nl_and_csv() -> None:
    assert json.loads(run(listing, "--json")) == [{"name": "alpha", "count": 1}, {"name": "beta, with comma", "count": 22}]
    assert [json.loads(line) for line in run(listing, "--nl").splitlines()] == json.loads(run(listing, "--json"))
    assert list(csv.reader(io.StringIO(run(listing, "--csv")))) == [
        ["name", "count", "note"], ["alpha", "1", ""], ["beta, with comma", "22", 'x"y']]


def test_a_command_that_only_prints_rows_still_gets_every_form() -> None:
    assert json.loads(run(rows_only, "--json")) == [
        {"name": "alpha", "count": 1, "note": None}, {"name": "beta, with comma", "count": 22, "note": 'x"y'}]
    assert len(run(rows_only, "--nl").splitlines()) == 2


def test_two_forms_at_once_is_a_usage_error() -> None:
    result = CliRunner().invoke(listing, ["--json", "--csv"])
    assert result.exit_code == 2 and "choose one of --json, --nl and --csv" in result.output


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "a.db"
    with EventLog(path, own="5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY") as log:
        log.append_many([Draft(f"verdict/{i}/m", 100 + i, ev.VerdictRecorded(
            task_id=i, miner="m", passed=True, overall=80, judge_model="j", prompt_version="p")) for i in range(3)])
    return str(path)


def test_a_real_listing_in_every_form(db: str) -> None:
    table = CliRunner().invoke(cli, ["events", "tail", "--db", db]).output
    as_csv = list(csv.DictReader(io.StringIO(CliRunner().invoke(cli, ["events", "tail", "--db", db, "--csv"]).output)))
    assert [r["kind"] for r in as_csv] == ["verdict_recorded"] * 3 and table.split()[0] == list(as_csv[0])[0]
    nl = [json.loads(x) for x in CliRunner().invoke(cli, ["events", "tail", "--db", db, "--nl"]).output.splitlines()]
    assert nl == json.loads(CliRunner().invoke(cli, ["events", "tail", "--db", db, "--json"]).output)


def test_every_listing_command_shares_the_options() -> None:
    def commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
        out: list[tuple[str, click.Command]] = []
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                out += commands(cmd, f"{prefix}{name} ")
            else:
                out.append((f"{prefix}{name}", cmd))
        return out

    root = cli() if not isinstance(cli, click.Group) else cli
    for name, cmd in commands(root):
        flags = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        if "--json" in flags and (name.endswith(" list") or name.endswith(" tail") or name.endswith(" count")):
            assert {"--nl", "--csv"} <= flags, f"leoma {name} has --json but not --nl/--csv"
