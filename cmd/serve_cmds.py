"""`leoma serve`, `leoma servers sampler|validator`, `leoma healthz`, `leoma status`: run a validator, look at it.

The split commands are `leoma serve` with a subset of the roles (`leoma.services.serve.PROCESS_ROLES`):
the same supervision, restore-first, mirror-out, metrics, `/healthz` and SIGTERM flush.

Settings come from the flags, then the environment (`LEOMA_*` and the seed's names such as
`NETWORK`, `GEMINI_API_KEY`, `R2_OWN_BUCKET`), then `.env` — all through `Settings.load`, so
`leoma serve` and `docker compose` read the same file. See `env.validator.example`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from .output import friendly_errors, json_option, print_json, print_table

# click option name -> Settings field; given flags win over the environment and `.env`.
_SETTING_FLAGS: dict[str, str] = {
    "network": "network", "netuid": "netuid", "wallet_name": "wallet_name", "wallet_hotkey": "hotkey_name",
    "wallet_path": "wallet_path", "dev_key": "dev_key", "db_path": "db", "state_dir": "state_dir",
    "own_bucket": "own_bucket_url", "source": "source_url", "consensus_path": "consensus_path",
    "log_level": "log_level",
}


def setting_options(fn):  # type: ignore[no-untyped-def]
    """The validator's settings as flags (each also read from its environment variable)."""
    for name, decl, help_ in reversed([
        ("network", "--network", "finney, test, local, ws(s)://URL or sim:PATH (env NETWORK)."),
        ("netuid", "--netuid", "Subnet uid (env NETUID, default 99)."),
        ("wallet_name", "--wallet-name", "Wallet name (env WALLET_NAME)."),
        ("wallet_hotkey", "--wallet-hotkey", "Hotkey name (env HOTKEY_NAME)."),
        ("wallet_path", "--wallet-path", "Wallets folder (env BT_WALLET_PATH)."),
        ("dev_key", "--dev-key", "A throw-away dev key URI such as //Validator1 (devnet only; env LEOMA_DEV_KEY)."),
        ("db_path", "--db", "The event log (env LEOMA_DB; default $LEOMA_STATE_DIR/events.db)."),
        ("state_dir", "--state-dir", "State directory (env LEOMA_STATE_DIR; default ~/.leoma)."),
        ("own_bucket", "--own-bucket", "Own bucket URL, file:///path or s3://... (env LEOMA_OWN_BUCKET_URL)."),
        ("source", "--source", "Source bucket URL (env LEOMA_SOURCE_URL)."),
        ("consensus_path", "--consensus", "consensus.toml (env LEOMA_CONSENSUS; default: the packaged one)."),
        ("log_level", "--log-level", "DEBUG, INFO, WARNING or ERROR (env LOG_LEVEL)."),
    ]):
        kind: Any = int if name == "netuid" else str
        fn = click.option(decl, name, type=kind, default=None, help=help_)(fn)
    return fn


def process_options(fn):  # type: ignore[no-untyped-def]
    fn = click.option("--env-file", type=click.Path(dir_okay=False), default=None,
                      help="Read settings from this file instead of ./.env (the environment still wins).")(fn)
    fn = click.option("--metrics-addr", default=None,
                      help="host:port for /metrics and /healthz, or off (env LEOMA_METRICS_ADDR; default 127.0.0.1:9108).")(fn)
    fn = click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                      help="text for people, json for machines (env LEOMA_LOG_FORMAT).")(fn)
    return fn


def _load(kwargs: dict[str, Any]) -> tuple[Any, Any]:
    from leoma.ops.config import Settings
    from leoma.services.serve import serve_options

    env_file = kwargs.pop("env_file", None)
    dotenv: Any = env_file if env_file else True
    if env_file and not Path(env_file).is_file():
        raise click.UsageError(f"--env-file {env_file} does not exist")
    flags = {_SETTING_FLAGS[k]: v for k, v in kwargs.items() if k in _SETTING_FLAGS}
    settings = Settings.load(flags, dotenv=dotenv)
    options = serve_options({"LEOMA_METRICS_ADDR": kwargs.get("metrics_addr"),
                             "LEOMA_LOG_FORMAT": kwargs.get("log_format")}, dotenv=dotenv)
    return settings, options


def _run(process: str, kwargs: dict[str, Any]) -> None:
    from leoma.errors import ConfigError
    from leoma.ops.logging_setup import setup_logging
    from leoma.services.serve import PROCESS_ROLES, Validator, required_settings, run_until_signalled

    roles = PROCESS_ROLES[process]
    try:
        settings, options = _load(kwargs)
        setup_logging(settings.log_level, options.log_format)
        required_settings(settings, roles)  # before any connection: one line naming what is missing
        validator = Validator(settings, roles=roles, options=options, process=process)
        code = asyncio.run(run_until_signalled(validator))
    except ConfigError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None
    sys.exit(code)


@click.command("serve")
@setting_options
@process_options
def serve_cmd(**kwargs: Any) -> None:
    """Run the validator: checker, sampler, mirror out and in, weight setter, in one process.

    Stops cleanly on SIGINT/SIGTERM (the own log is pushed once more, then exit 0).

    Example:

        leoma serve --env-file /etc/leoma/validator.env
    """
    _run("serve", kwargs)


@click.group("servers")
def servers_group() -> None:
    """Run parts of the validator as separate processes (each one is `leoma serve` with fewer roles)."""


@servers_group.command("sampler")
@setting_options
@process_options
def servers_sampler(**kwargs: Any) -> None:
    """Sample on this validator's turns: the sampler, the checker it needs and the mirror out.

    Exactly `leoma serve` with those roles: restores the own log first, supervises each loop,
    serves /metrics and /healthz, flushes the mirror on SIGTERM. Run beside `leoma servers
    validator` it must share its state directory (one event log); give each its own
    --metrics-addr.

    Example:

        leoma servers sampler --metrics-addr 127.0.0.1:9109
    """
    _run("sampler", kwargs)


@servers_group.command("validator")
@setting_options
@process_options
def servers_validator(**kwargs: Any) -> None:
    """Set weights: the weight setter with the checker it needs, the mirror in (and out, with a bucket).

    Needs no judge key: a validator that only sets weights from its peers' verdicts can.
    Exactly `leoma serve` with those roles (restore first, supervision, metrics, SIGTERM flush).

    Example:

        leoma servers validator --metrics-addr 127.0.0.1:9108
    """
    _run("validator", kwargs)


@click.command("healthz")
@click.option("--process", "process", type=click.Choice(["serve", "sampler", "validator"]), default="serve",
              show_default=True, help="Which process of this state directory to ask.")
@click.option("--state-dir", default=None, help="State directory (env LEOMA_STATE_DIR; default ~/.leoma).")
@click.option("--url", default=None, help="Ask this health URL instead (e.g. the owner's API: http://127.0.0.1:8000/health).")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds to wait for the answer.")
def healthz_cmd(process: str, state_dir: str | None, url: str | None, timeout: float) -> None:
    """Ask a running validator process its /healthz; exit 0 when healthy, 1 otherwise (a container healthcheck).

    The URL is the one the process recorded in its state directory when it started listening
    (so a port chosen by the system works too), else LEOMA_METRICS_ADDR.

    Example:

        leoma healthz --process sampler
    """
    if url:
        _ask(url, timeout)
    from leoma.errors import ConfigError
    from leoma.ops.config import Settings
    from leoma.services.serve import metrics_url_file, parse_addr, serve_options

    try:
        settings = Settings.load({"state_dir": state_dir})
        path = metrics_url_file(settings.state_path, process)
        base = path.read_text().strip() if path.is_file() else ""
        if not base:
            addr = serve_options().metrics_addr
            if addr.lower() == "off":
                raise click.ClickException("LEOMA_METRICS_ADDR is off: this process serves no /healthz")
            host, port = parse_addr(addr)
            base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '', '::') else host}:{port}"
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _ask(base.rstrip("/") + "/healthz", timeout)


def _ask(url: str, timeout: float) -> None:
    import httpx

    try:
        reply = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        click.echo(f"unhealthy: {url} unreachable ({type(exc).__name__})", err=True)
        sys.exit(1)
    click.echo(reply.text.strip())
    sys.exit(0 if reply.status_code == 200 else 1)


def _own_of(log: Any) -> str:
    """The log's own origin: the epoch projection's owner, else the one that mirrors out."""
    import msgspec

    raw = log.get_state("projection/epoch_fold")
    if raw:
        class _Own(msgspec.Struct):
            own: str = ""

        own = msgspec.msgpack.decode(raw, type=_Own).own
        if own:
            return own
    from leoma.mirror.out import mirrored_origins

    mirrored = mirrored_origins(log)
    if mirrored:
        return mirrored[0]
    origins = log.origins()
    if len(origins) == 1:
        return origins[0]
    raise click.UsageError("cannot tell whose log this is: pass --hotkey")


async def _chain_facts(network: str, netuid: int) -> tuple[int | None, int, str]:
    from leoma.adapters.chain import Chain

    try:
        async with Chain(network, timeout=5.0) as chain:
            head, _ = await chain.head()
            return head, await chain.tempo(netuid), ""
    except Exception as exc:  # status is best effort about the chain
        return None, 360, f"chain unreachable: {str(exc)[:120]}"


@click.command("status")
@click.option("--db", "db_path", default=None, type=click.Path(dir_okay=False),
              help="The event log (default: LEOMA_DB or $LEOMA_STATE_DIR/events.db).")
@click.option("--hotkey", default=None, help="Whose log it is (default: found in the log).")
@click.option("--network", default=None, help="Read the head from this chain (default: NETWORK).")
@click.option("--no-chain", is_flag=True, help="Do not contact the chain.")
@json_option
@friendly_errors
def status_cmd(db_path: str | None, hotkey: str | None, network: str | None, no_chain: bool, as_json: bool) -> None:
    """What the validator's log says: heads, mirror lag, weights, tasks, responses, health."""
    import msgspec

    from leoma.ops.config import Settings
    from leoma.ops.metrics import collect_facts, health

    from .events_cmds import open_existing

    settings = Settings.load({"db": db_path, "network": network})
    head, tempo, note = (None, 360, "chain not asked") if no_chain else asyncio.run(
        _chain_facts(settings.network, settings.netuid))
    with open_existing(str(settings.db_path)) as log:
        own = hotkey or _own_of(log)
        facts = collect_facts(log, own, chain_head=head, tempo=tempo)
    ok, problems = health(facts)
    if as_json:
        out = msgspec.to_builtins(facts)
        out.update(blocks_since_weights=facts.blocks_since_weights, mirror_lag=facts.mirror_lag, healthy=ok,
                   problems=problems, chain_note=note, db=str(settings.db_path))
        print_json(out)
        return
    since = facts.blocks_since_weights
    rows = [
        ("validator", own), ("log", str(settings.db_path)),
        ("chain head", head if head is not None else note),
        ("own events", facts.log_head), ("uploaded", f"{facts.uploaded_head} (lag {facts.mirror_lag})"),
        ("projection lag", f"{facts.projection_lag} rows"),
        ("last scored epoch", "-" if facts.last_scored_epoch is None else
         f"{facts.last_scored_epoch} (winner {facts.last_winner or 'burn'})"),
        ("weights last set", "never" if facts.last_weights_block is None else
         f"block {facts.last_weights_block}, epoch {facts.last_weights_epoch}"
         + (f" ({since} blocks ago)" if since is not None else "")),
        ("tasks sampled", facts.tasks_sampled),
        ("miner responses", ", ".join(f"{k} {v}" for k, v in sorted(facts.responses.items()))),
        ("judge failures", facts.judge_failures),
        ("peer objects rejected", facts.rejected_peer_objects),
        ("health", "ok" if ok else "; ".join(problems)),
    ]
    print_table(["fact", "value"], rows)
    if facts.peers:
        click.echo("")
        print_table(["peer", "imported"], [(p.hotkey, p.imported) for p in facts.peers])


def register(cli: click.Group) -> None:
    """Add `leoma serve`, `leoma servers sampler|validator`, `leoma healthz` and `leoma status` to `leoma`."""
    cli.add_command(serve_cmd)
    cli.add_command(status_cmd)
    cli.add_command(healthz_cmd)
    existing = cli.commands.get("servers")
    if isinstance(existing, click.Group):
        existing.add_command(servers_sampler)
        existing.add_command(servers_validator)
    else:
        cli.add_command(servers_group)


def main() -> None:
    """`python -m leoma_cmd.serve_cmds ...`: these commands without the rest of `leoma`."""
    import leoma.adapters.simchain  # noqa: F401 - plugs `sim:` into the chain, as `leoma` does (cmd/main.py)

    group = click.Group("leoma", context_settings={"help_option_names": ["-h", "--help"]})
    register(group)
    group()


if __name__ == "__main__":
    main()
