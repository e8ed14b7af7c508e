"""The deployment recipes run this project: the compose file, the Dockerfile, systemd and pm2.

The compose file is read with a YAML parser and interpolated as compose does; every service's
image, command, volumes and healthcheck are checked against what the project really serves:
commands and healthchecks must parse as `leoma` commands (click), the healthcheck must ask the
port and path the process listens on, the state must live where the image keeps it. The image
itself is built and run by `.ci/image`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from leoma.ops.config import _ENV
from leoma.services.serve import PROCESS_ROLES, SERVE_ENV, ServeOptions, parse_addr
from leoma_cmd.main import cli

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {var for var, _ in _ENV.values()} | set(SERVE_ENV)
FLUSH = ServeOptions().flush_timeout
# The `leoma` command each validator process runs, by the process name its metrics file uses.
PROCESS_COMMANDS = {("serve",): "serve", ("servers", "sampler"): "sampler", ("servers", "validator"): "validator"}


# -- helpers -----------------------------------------------------------------------------------


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (a missing required one raises)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        got = env.get(name, "")
        if op == ":-":
            return got or arg
        if op == ":?" and not got:
            raise KeyError(f"{name}: {arg}")
        return got

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, value)


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    base = {"HOME": "/home/op", "GEMINI_API_KEY": "k"}
    return interpolate(raw, {**base, **(env or {})})  # type: ignore[no-any-return]


def leoma_command(argv: list[str]) -> tuple[tuple[str, ...], click.Context]:
    """The click command `argv` (starting with `leoma`) names, with its arguments parsed."""
    assert argv[0] == "leoma", argv
    command: click.Command = cli
    path: list[str] = []
    args = list(argv[1:])
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        path.append(args.pop(0))
        command = command.commands[path[-1]]
    assert not isinstance(command, click.Group), f"{argv} names a group, not a command"
    ctx = command.make_context(" ".join(["leoma", *path]), args)  # raises on an unknown option
    return tuple(path), ctx


def dockerfile() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    stages: list[list[tuple[str, str]]] = [[]]
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def final_stage() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for word, rest in dockerfile()[-1]:
        out.setdefault(word, []).append(rest)
    return out


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in final_stage().get("ENV", []):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def services_of_this_project(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in c["services"].items() if "build" in s}


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Mount point -> named volume."""
    out = {}
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        if not source.startswith(("/", ".", "~")):
            out[target] = source
    return out


# -- the compose file --------------------------------------------------------------------------


def test_compose_builds_and_names_this_projects_image() -> None:
    c = compose()
    ours = services_of_this_project(c)
    assert set(ours) == {"validator", "api"}
    for name, s in ours.items():
        context = (ROOT / s["build"]["context"]).resolve()
        assert context == ROOT and (context / s["build"].get("dockerfile", "Dockerfile")).is_file(), name
        assert s["image"] == "leoma:latest", name  # the local build's name by default...
    named = compose({"LEOMA_IMAGE": "registry.invalid/me/leoma:1.2"})
    assert {s["image"] for s in services_of_this_project(named).values()} == {"registry.invalid/me/leoma:1.2"}
    # ...and nothing else is run but watchtower, which only watches the labelled services: ours.
    others = {n: s for n, s in c["services"].items() if n not in ours}
    assert list(others) == ["watchtower"] and others["watchtower"]["profiles"] == ["autoupdate"]
    labelled = {n for n, s in c["services"].items()
                if s.get("labels", {}).get("com.centurylinklabs.watchtower.enable") == "true"}
    assert labelled == set(ours)
    args = others["watchtower"]["command"]
    assert "--label-enable" in args
    stop_timeout = int(args[args.index("--stop-timeout") + 1].rstrip("s"))
    assert stop_timeout > FLUSH  # an update stops the validator as gently as `docker compose stop`


def test_compose_requires_the_judge_key() -> None:
    with pytest.raises(KeyError, match="GEMINI_API_KEY"):
        compose({"GEMINI_API_KEY": ""})


@pytest.mark.parametrize("service", ["validator", "api"])
def test_compose_commands_are_real_leoma_commands(service: str) -> None:
    s = compose()["services"][service]
    path, ctx = leoma_command(s["command"])
    assert path == {"validator": ("serve",), "api": ("api",)}[service]
    assert s.get("profiles", []) == ([] if service == "validator" else ["api"])
    assert s["env_file"] == ".env" and s["restart"] == "unless-stopped"
    assert s["stop_signal"] == "SIGTERM" and int(s["stop_grace_period"].rstrip("s")) > FLUSH


def test_the_validators_healthcheck_asks_where_serve_listens() -> None:
    s = compose()["services"]["validator"]
    test = s["healthcheck"]["test"]
    assert test[0] == "CMD"
    path, ctx = leoma_command(test[1:])
    assert path == ("healthz",)
    # `leoma healthz --process P` reads the URL file the process P writes: the one `serve` is.
    served, _ = leoma_command(s["command"])
    assert ctx.params["process"] == PROCESS_COMMANDS[served]
    assert PROCESS_ROLES[ctx.params["process"]] == PROCESS_ROLES["serve"]
    # Its fallback, LEOMA_METRICS_ADDR, listens on every interface of the container on the
    # port that is published, so the host can scrape it too.
    host, port = parse_addr(s["environment"]["LEOMA_METRICS_ADDR"])
    assert host == "0.0.0.0"
    published = [p.rsplit(":", 2) for p in s["ports"]]
    assert [(b, int(h), int(cport)) for b, h, cport in published] == [("127.0.0.1", port, port)]


def test_the_api_healthcheck_asks_a_route_the_api_serves() -> None:
    from urllib.parse import urlsplit

    from leoma.api.app import ROUTES
    from leoma.api.settings import ApiSettings

    s = compose()["services"]["api"]
    test = s["healthcheck"]["test"]
    path, ctx = leoma_command(test[1:])
    assert test[0] == "CMD" and path == ("healthz",)
    url = urlsplit(ctx.params["url"])
    settings = ApiSettings.load({k: str(v) for k, v in s["environment"].items()})
    assert settings.host == "0.0.0.0" and url.port == settings.port
    assert url.path in {r.path for r in ROUTES}
    assert [p.rsplit(":", 2)[1:] for p in s["ports"]] == [[str(settings.port), str(settings.port)]]


def test_compose_keeps_each_log_in_a_volume_where_the_image_keeps_state() -> None:
    c = compose()
    state = image_env()["LEOMA_STATE_DIR"]
    assert final_stage()["VOLUME"] == [json.dumps([state])]
    declared = set(c["volumes"])
    seen = []
    for name, s in services_of_this_project(c).items():
        assert s["environment"]["LEOMA_STATE_DIR"] == state, name
        volumes = named_volumes(s)
        assert state in volumes and volumes[state] in declared, name
        seen.append(volumes[state])
    assert len(set(seen)) == len(seen)  # the validator's and the API's logs are separate


def test_compose_mounts_the_wallet_read_only_where_the_image_looks() -> None:
    s = compose()["services"]["validator"]
    wallets = image_env()["BT_WALLET_PATH"]
    assert s["environment"]["BT_WALLET_PATH"] == wallets
    assert f"/home/op/.bittensor/wallets:{wallets}:ro" in s["volumes"]


# -- the Dockerfile ------------------------------------------------------------------------------


def test_the_dockerfile_builds_a_wheel_then_runs_leoma_serve_as_a_non_root_user() -> None:
    stages = dockerfile()
    args = dict(rest.split("=", 1) for word, rest in stages[0] if word == "ARG")
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [rest for stage in stages[1:] for word, rest in stage if word == "FROM"]
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms) and len(froms) == 3
    runs = " ".join(rest for stage in stages for word, rest in stage if word == "RUN")
    assert "pip wheel" in runs and "--no-index" in runs and "--find-links /wheels leoma" in runs
    final = final_stage()
    assert final["COPY"] == ["--from=install /opt/leoma /opt/leoma"]  # no build tools, no wheels
    assert final["USER"] == ["leoma"] and "--uid 10001" in " ".join(final["RUN"])
    assert final["STOPSIGNAL"] == ["SIGTERM"]
    cmd = json.loads(final["CMD"][0])  # exec form: leoma is PID 1 and gets SIGTERM itself
    assert leoma_command(cmd)[0] == ("serve",)
    health = final["HEALTHCHECK"][0]
    assert leoma_command(json.loads(health.split(" CMD ", 1)[1]))[0] == ("healthz",)
    assert "import av" in " ".join(final["RUN"])  # the build proves PyAV encodes H.264
    env = image_env()
    host, port = parse_addr(env["LEOMA_METRICS_ADDR"])
    assert host == "0.0.0.0" and final["EXPOSE"] == [str(port)]
    assert set(env) - {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"} <= KNOWN


def test_the_dockerignore_keeps_state_and_the_venv_out_of_the_build() -> None:
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".git", ".venv", ".env", "*.db"} <= ignored
    copied = {rest.split()[0] for word, rest in dockerfile()[1] if word == "COPY"}
    assert copied == {"pyproject.toml", "leoma", "projections", "cmd"}


# -- systemd and pm2 ----------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / name).read_text().splitlines():
        if re.match(r"^[A-Za-z]+=", line):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize(("name", "instance", "expected"), [
    ("leoma-validator.service", "", ("serve",)),
    ("leoma-split@.service", "sampler", ("servers", "sampler")),
    ("leoma-split@.service", "validator", ("servers", "validator")),
])
def test_systemd_runs_a_real_leoma_command_with_time_to_flush(name: str, instance: str,
                                                              expected: tuple[str, ...]) -> None:
    u = unit(name)
    argv = shlex.split(u["ExecStart"][0].replace("%i", instance))
    assert argv[0] == "/opt/leoma/bin/leoma"  # the image's virtualenv
    assert leoma_command(["leoma", *argv[1:]])[0] == expected
    assert u["KillSignal"] == ["SIGTERM"] and u["User"] == ["leoma"]
    assert int(u["TimeoutStopSec"][0]) > FLUSH
    assert u["Environment"][-1] == "LEOMA_STATE_DIR=/var/lib/leoma" == f"LEOMA_STATE_DIR={image_env()['LEOMA_STATE_DIR']}"
    assert u["ReadWritePaths"] == ["/var/lib/leoma"]
    other = "leoma-split@sampler.service" if instance == "" else "leoma-validator.service"
    assert other in " ".join(u["Conflicts"])  # never both layouts on one log


def pm2_apps(split: bool) -> list[dict[str, Any]]:
    env = {**os.environ, "LEOMA_SPLIT": "1" if split else ""}
    out = subprocess.run(["node", "-e", "console.log(JSON.stringify(require(process.argv[1]).apps))",
                          str(ROOT / "deploy" / "ecosystem.config.js")], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(shutil.which("node") is None, reason="pm2 recipes are JavaScript: node reads them")
@pytest.mark.parametrize(("split", "expected"), [
    (False, [("serve",)]),
    (True, [("servers", "sampler"), ("servers", "validator")]),
])
def test_pm2_runs_real_leoma_commands_with_time_to_flush(split: bool, expected: list[tuple[str, ...]]) -> None:
    apps = pm2_apps(split)
    assert [leoma_command(["leoma", *shlex.split(a["args"])])[0] for a in apps] == expected
    ports = set()
    for a in apps:
        assert a["script"] == "/opt/leoma/bin/leoma" and a["interpreter"] == "none" and a["autorestart"] is True
        assert a["kill_timeout"] > FLUSH * 1000
        _, ctx = leoma_command(["leoma", *shlex.split(a["args"])])
        if ctx.params.get("metrics_addr"):
            ports.add(parse_addr(ctx.params["metrics_addr"])[1])
    assert len(ports) == (2 if split else 0)  # split processes never fight over one port


# -- env.validator.example ----------------------------------------------------------------------


def example_vars() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "env.validator.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_every_variable_in_the_example_is_one_leoma_reads() -> None:
    names = example_vars()
    assert names, "env.validator.example lists no variables"
    assert sorted(set(names) - KNOWN) == []


def test_the_example_documents_every_setting_with_a_line_each() -> None:
    text = (ROOT / "env.validator.example").read_text().splitlines()
    assert sorted(KNOWN - set(example_vars())) == []
    for i, line in enumerate(text):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            assert text[i - 1].startswith("# "), f"{line.split('=')[0]} has no comment line above it"


def test_the_example_loads() -> None:
    from leoma.ops.config import Settings
    from leoma.services.serve import serve_options

    env = {k: v for k, v in example_vars().items() if v}
    settings = Settings.load(env=env, dotenv=False)
    assert settings.netuid == 99 and settings.miner_validation_interval == 1200
    assert serve_options(env=env, dotenv=False).metrics_addr == "127.0.0.1:9108"
