"""The owner's command line against a real API on a loopback socket, signed with dev keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from leoma.api.app import create_app
from leoma.log.eventlog import EventLog
from tests.test_api import API_ID, World, api_world, key, service_for
from tests.test_dashboard import ServerThread


def make_cli() -> click.Group:
    from leoma_cmd import api_cmds, chain_cmds

    cli = click.Group("leoma")
    chain_cmds.register(cli)
    api_cmds.register(cli)
    return cli


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[World, str]]:
    world = api_world(tmp_path)
    # The CLI signs with the real clock: let the API use it too.
    service = service_for(world)
    service.clock = __import__("time").time
    service.verifier.clock = service.clock
    with ServerThread(create_app(service)) as server:
        yield world, server.url


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(make_cli(), list(args), catch_exceptions=False)


def test_register_reuses_the_validator_group() -> None:
    cli = make_cli()
    validator = cli.commands["validator"]
    assert isinstance(validator, click.Group)
    assert {"publish", "list", "add", "remove"} <= set(validator.commands)
    assert {"api", "blacklist", "db"} <= set(cli.commands)


def test_blacklist_commands(served: tuple[World, str]) -> None:
    world, url = served
    admin, miner = "//Ferdie", world.miners[0]
    assert "Blacklist is empty" in run("blacklist", "list", "--api", url).output
    r = run("blacklist", "add", miner, "-r", "copycat", "--api", url, "--dev-key", admin)
    assert r.exit_code == 0 and f"blacklisted {miner} (copycat)" in r.output
    listed = run("blacklist", "list", "--api", url, "--json")
    assert json.loads(listed.output)[0]["hotkey"] == miner
    r = run("blacklist", "add", miner, "--api", url, "--dev-key", "//Alice")
    assert r.exit_code == 1 and "HTTP 403 Admin access required" in r.output
    r = run("blacklist", "remove", miner, "--api", url, "--dev-key", admin)
    assert r.exit_code == 0 and "Removed miner" in r.output
    r = run("blacklist", "remove", miner, "--api", url, "--dev-key", admin)
    assert r.exit_code == 1 and "Miner not blacklisted" in r.output
    r = run("blacklist", "add", "not-a-hotkey", "--api", url, "--dev-key", admin)
    assert r.exit_code == 2 and "is not an SS58 address" in r.output
    assert world.log.count(kind="admin_acted") == 2


def test_validator_add_remove_and_list(served: tuple[World, str]) -> None:
    world, url = served
    carol = key("//Carol").ss58_address
    r = run("validator", "add", carol, "--uid", "9", "--stake", "2.5", "--api", url, "--dev-key", "//Ferdie")
    assert r.exit_code == 0 and f"added validator {carol} uid 9 stake 2.5" in r.output
    listed = run("validator", "list", "--api", url, "--json")
    assert carol in {c["hotkey"] for c in json.loads(listed.output)}
    r = run("validator", "remove", carol, "--api", url, "--dev-key", "//Ferdie")
    assert r.exit_code == 0 and "Removed validator" in r.output
    r = run("validator", "list")
    assert r.exit_code == 2 and "--api URL" in r.output


def test_db_commands_write_the_api_log(tmp_path: Path) -> None:
    db = tmp_path / "api.db"
    alice = key("//Alice").ss58_address
    assert run("db", "list-validators", "--db", str(db)).exit_code == 1
    r = run("db", "add-validator", "--uid", "3", "--hotkey", alice, "--stake", "1", "--db", str(db), "--dev-key", "//Ferdie")
    assert r.exit_code == 0, r.output
    r = run("db", "add-validator", "--uid", "3", "--hotkey", key("//Bob").ss58_address, "--db", str(db),
            "--dev-key", "//Ferdie")
    assert r.exit_code == 1 and "already registered" in r.output
    # The same add again is one event, not two (the key names the registry it was decided on).
    r = run("db", "add-validator", "--uid", "3", "--hotkey", alice, "--stake", "1", "--db", str(db), "--dev-key", "//Ferdie")
    assert r.exit_code == 0, r.output
    out = run("db", "list-validators", "--db", str(db)).output
    assert "    3  " + alice[:20] in out
    with EventLog(db, own=API_ID) as log:
        assert log.count(kind="admin_acted") == 1
        body = next(log.events()).event.payload()
        assert body.admin == key("//Ferdie").ss58_address  # type: ignore[attr-defined]
