"""The README and the CLI agree: every command the README shows exists with the options it uses,
its `--help` runs, and every command of `leoma` has help text and is in the README."""

from __future__ import annotations

import pathlib
import re
import shlex

import click
import pytest
from click.testing import CliRunner

from leoma_cmd.main import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """Every `leoma ...` line inside the README's code blocks, as argument lists."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("leoma "):
                out.append(shlex.split(line)[1:])
    return out


def resolve(args: list[str]) -> tuple[list[str], click.Command]:
    """The command path at the start of `args` and the click command it names."""
    command: click.Command = cli
    path: list[str] = []
    for arg in args:
        if not isinstance(command, click.Group) or arg.startswith("-"):
            break
        sub = command.commands.get(arg)
        if sub is None:
            break
        command = sub
        path.append(arg)
    return path, command


def all_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in sorted(group.commands.items()):
        out.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            out.extend(all_commands(command, (*prefix, name)))
    return out


COMMANDS = readme_commands()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) > 30


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:3]) for a in COMMANDS])
def test_every_readme_command_exists_with_its_options_and_runs_help(args: list[str]) -> None:
    path, command = resolve(args)
    assert path, f"`leoma {' '.join(args)}` names no command"
    assert not isinstance(command, click.Group), f"`leoma {' '.join(path)}` is a group: name a command"
    known = {opt for p in command.params for opt in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    used = {a.split("=", 1)[0] for a in args[len(path):] if a.startswith("-")}
    assert used <= known, f"`leoma {' '.join(path)}` has no option {sorted(used - known)}"
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


@pytest.mark.parametrize("path,command", all_commands(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_every_command_has_help_and_is_in_the_readme(path: tuple[str, ...], command: click.Command) -> None:
    assert (command.help or command.short_help or "").strip(), f"`leoma {' '.join(path)}` has no help text"
    if not isinstance(command, click.Group):
        assert f"leoma {' '.join(path)}" in README, f"`leoma {' '.join(path)}` is not in the README"


def test_the_quick_start_has_exactly_two_commands() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first_block = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    lines = [line for line in first_block.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["scripts/run", "scripts/test"]
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "leoma devnet" in (ROOT / "scripts" / "run").read_text()


def where_things_are() -> dict[str, list[str]]:
    """The README's "Where things are" table: each noun and the module paths it points at."""
    section = README.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] not in ("what", "---"):
            rows[cells[0]] = re.findall(r"`([^`]+\.(?:py|toml))`", cells[1])
    return rows


def test_every_module_is_pointed_at_by_its_noun_in_the_readme() -> None:
    rows = where_things_are()
    assert len(rows) > 60 and all(rows.values()), "every row names at least one module"
    named = [path for paths in rows.values() for path in paths]
    missing = sorted(path for path in named if not (ROOT / path).is_file())
    assert missing == [], f"the README points at modules that do not exist: {missing}"
    modules = sorted(
        p.relative_to(ROOT).as_posix()
        for folder in ("leoma", "projections")
        for p in (ROOT / folder).rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    )
    unlisted = [m for m in modules if m not in named]
    assert unlisted == [], f"add these modules to the README's \"Where things are\": {unlisted}"
