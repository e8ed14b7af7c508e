"""Owner commands: run the API, manage its validator registry and the miner blacklist.

    leoma api                                 serve the owner's API and dashboard
    leoma validator add HOTKEY [--uid --stake]   (admin) register a validator through the API
    leoma validator remove HOTKEY             (admin)
    leoma blacklist add HOTKEY [-r REASON]    (admin)
    leoma blacklist remove HOTKEY             (admin)
    leoma blacklist list
    leoma db add-validator --uid --hotkey     write straight into the API's own log
    leoma db list-validators

Admin requests are signed with the wallet's hotkey (or `--dev-key //Alice` on a devnet); the
API records each as an `admin_acted` event, so every change stays auditable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from leoma.adapters.wallets import load_wallet, wallet_options
from leoma.errors import LeomaError

from .output import json_option, print_json, print_table, subgroup

F = TypeVar("F", bound=Callable[..., Any])


def api_option(fn: F) -> F:
    return click.option("--api", "api_url", envvar="API_URL", default="https://api.leoma.ai", show_default=True,
                        help="The owner's API (env API_URL).")(fn)


def signer_options(fn: F) -> F:
    fn = wallet_options(fn)
    return click.option("--dev-key", envvar="LEOMA_DEV_KEY", default=None,
                        help="Sign with a dev key URI such as //Alice instead of a wallet (devnet, tests).")(fn)


def db_option(fn: F) -> F:
    return click.option("--db", "db", envvar="LEOMA_API_DB", default=None,
                        help="The API's event log (env LEOMA_API_DB; default $LEOMA_STATE_DIR/api.db).")(fn)


def _signer(dev_key: str | None, wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> Any:
    if dev_key:
        from leoma.adapters.signing import keypair_from_uri

        return keypair_from_uri(dev_key)
    return load_wallet(wallet_name, wallet_hotkey, wallet_path).hotkey


def _call(api_url: str, method: str, path: str, data: Any = None, signer: Callable[[], Any] | None = None) -> Any:
    """One request to the API (signed when `signer` is given); Leoma errors become click errors."""
    from leoma.api.client import ApiClient

    def go() -> Any:
        with ApiClient(api_url, signer() if signer else None) as client:
            return client.request(method, path, data, signed=signer is not None)

    return _friendly(go)


def _friendly(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except LeomaError as exc:
        raise click.ClickException(str(exc)) from exc


def _check_hotkey(hotkey: str) -> str:
    from leoma.api.auth import is_ss58

    hotkey = hotkey.strip()
    if not is_ss58(hotkey):
        raise click.BadParameter(f"{hotkey!r} is not an SS58 address", param_hint="HOTKEY")
    return hotkey




def build_api(*, host: str | None = None, port: int | None = None, db: str | None = None,
              sync: bool = True) -> tuple[Any, Any]:
    """The API's app and settings, as `leoma api` serves them (settings through the one reader).

    The consensus is LEOMA_CONSENSUS, else the one the validators it imports recorded, else its
    own log's record, else the packaged one; it is recorded in the API's log once per digest.
    """
    from leoma.api.app import create_app
    from leoma.api.feed import Feeder
    from leoma.api.service import ApiService
    from leoma.api.settings import ApiSettings
    from leoma.log.consensus import record_consensus
    from leoma.log.eventlog import EventLog
    from leoma.mirror.peers import peers_from_env

    settings = ApiSettings.load(host=host, port=port, db=db)
    settings.db_path.parent.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.db_path, own=settings.api_id)
    consensus = settings.consensus(log)
    record_consensus(log, consensus, block=_head_block(log))
    click.echo(f"consensus {consensus.digest[:16]}… (epoch length {consensus.epoch.length})", err=True)
    service = ApiService(settings, consensus, log_=log)
    entries, problems = peers_from_env(settings.peer_validators, own=settings.api_id)
    for p in problems:
        click.echo(f"PEER_VALIDATORS: {p}", err=True)
    service.feeder = Feeder(service.log, entries, consensus)
    return create_app(service, sync=sync), settings


def _head_block(log: Any) -> int:
    """The newest block the log speaks of (0 for an empty log)."""
    last = next(iter(log.rows(descending=True, limit=1)), None)
    return last.block if last is not None else 0


def register(cli: click.Group) -> None:
    """Add `api`, `validator add/remove`, `blacklist ...` and `db ...` to the `leoma` command."""
    validator = subgroup(cli, "validator", "Validator allowlist and validator tools.")
    blacklist = subgroup(cli, "blacklist", "(Owner) The miner blacklist kept by the owner's API.")
    db = subgroup(cli, "db", "(Owner) The owner's API log, edited directly.")

    @cli.command("api")
    @click.option("--host", envvar="API_HOST", default=None, help="Listen address (env API_HOST; default 0.0.0.0).")
    @click.option("--port", envvar="API_PORT", type=int, default=None, help="Port (env API_PORT; default 8000).")
    @db_option
    @click.option("--no-sync", is_flag=True, help="Do not import the validators' mirrors (serve the log as it is).")
    def api(host: str | None, port: int | None, db: str | None, no_sync: bool) -> None:
        """Serve the owner's API and dashboard from the API's event log."""
        import uvicorn

        app, settings = _friendly(lambda: build_api(host=host, port=port, db=db, sync=not no_sync))
        click.echo(f"leoma api on http://{settings.host}:{settings.port} (log {settings.db_path})")
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")

    @validator.command("add")
    @click.argument("hotkey")
    @click.option("--uid", type=int, default=None, help="The validator's uid (default: from the metagraph).")
    @click.option("--stake", type=float, default=None, help="Stake in TAO to show (default: from the metagraph).")
    @api_option
    @signer_options
    def validator_add(hotkey: str, uid: int | None, stake: float | None, api_url: str, dev_key: str | None,
                      wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """(Admin) Register a validator with the owner's API."""
        data: dict[str, Any] = {"hotkey": _check_hotkey(hotkey)}
        if uid is not None:
            data["uid"] = uid
        if stake is not None:
            data["stake"] = stake
        out = _call(api_url, "POST", "/validators", data,
                    lambda: _signer(dev_key, wallet_name, wallet_hotkey, wallet_path))
        click.echo(f"added validator {out['hotkey']} uid {out['uid']} stake {out['stake']}")

    @validator.command("remove")
    @click.argument("hotkey")
    @api_option
    @signer_options
    def validator_remove(hotkey: str, api_url: str, dev_key: str | None, wallet_name: str | None,
                         wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """(Admin) Remove a validator from the owner's registry."""
        hk = _check_hotkey(hotkey)
        out = _call(api_url, "DELETE", f"/validators/{hk}", None,
                    lambda: _signer(dev_key, wallet_name, wallet_hotkey, wallet_path))
        click.echo(out["message"])

    @blacklist.command("list")
    @api_option
    @json_option
    def blacklist_list(api_url: str, as_json: bool) -> None:
        """The blacklisted miners."""
        entries = _call(api_url, "GET", "/blacklist")
        if as_json:
            print_json(entries)
            return
        print_table(["hotkey", "reason", "added by"],
                    [(e["hotkey"], e.get("reason") or "", e.get("added_by") or "?") for e in entries],
                    empty="Blacklist is empty")

    @blacklist.command("add")
    @click.argument("hotkey")
    @click.option("-r", "--reason", default=None, help="Why (at most 255 characters).")
    @api_option
    @signer_options
    def blacklist_add(hotkey: str, reason: str | None, api_url: str, dev_key: str | None, wallet_name: str | None,
                      wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """(Admin) Blacklist a miner: validators stop paying it."""
        data: dict[str, Any] = {"hotkey": _check_hotkey(hotkey)}
        if reason:
            data["reason"] = reason
        out = _call(api_url, "POST", "/blacklist", data,
                    lambda: _signer(dev_key, wallet_name, wallet_hotkey, wallet_path))
        click.echo(f"blacklisted {out['hotkey']}" + (f" ({out['reason']})" if out.get("reason") else ""))

    @blacklist.command("remove")
    @click.argument("hotkey")
    @api_option
    @signer_options
    def blacklist_remove(hotkey: str, api_url: str, dev_key: str | None, wallet_name: str | None,
                         wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """(Admin) Take a miner off the blacklist."""
        hk = _check_hotkey(hotkey)
        out = _call(api_url, "DELETE", f"/blacklist/{hk}", None,
                    lambda: _signer(dev_key, wallet_name, wallet_hotkey, wallet_path))
        click.echo(out["message"])

    @db.command("add-validator")
    @click.option("--uid", type=int, required=True, help="The validator's uid.")
    @click.option("--hotkey", required=True, help="The validator's SS58 hotkey.")
    @click.option("--stake", type=float, default=0.0, show_default=True, help="Stake in TAO to show.")
    @db_option
    @signer_options
    def db_add_validator(uid: int, hotkey: str, stake: float, db: str | None, dev_key: str | None,
                         wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> None:
        """Register a validator by appending to the API's own log (no running API needed)."""
        from leoma.api.registry import UidTaken, add_key, already_registered, check_uid_free
        from leoma.api.settings import ApiSettings
        from leoma.api.state import VALIDATOR_ADD, ApiState
        from leoma.log.eventlog import EventLog
        from leoma.log.events import AdminActed

        hk = _check_hotkey(hotkey)
        if uid < 0:
            raise click.BadParameter("must be >= 0", param_hint="--uid")

        def go() -> None:
            admin = _signer(dev_key, wallet_name, wallet_hotkey, wallet_path).ss58_address
            settings = ApiSettings.load(db=db)
            settings.db_path.parent.mkdir(parents=True, exist_ok=True)
            with EventLog(settings.db_path, own=settings.api_id) as log:
                state = ApiState(log, own=settings.api_id, consensus=settings.consensus(log))
                state.refresh()
                try:
                    check_uid_free(state, uid, hk)
                except UidTaken as exc:
                    raise click.ClickException(str(exc)) from None
                stake_rao = int(round(max(0.0, stake) * 10**9))
                if already_registered(state, hk, uid, stake_rao):
                    return
                log.append(AdminActed(admin=admin, action=VALIDATOR_ADD, target=hk, uid=uid, stake_rao=stake_rao),
                           key=add_key(state, hk, uid, stake_rao, via="cli"), block=state.head_block())

        _friendly(go)
        click.echo(f"registered validator uid {uid} {hk[:16]}… stake {max(0.0, stake)}")

    @db.command("list-validators")
    @db_option
    def db_list_validators(db: str | None) -> None:
        """The validators registered in the API's own log, by uid."""
        from leoma.api.settings import ApiSettings
        from leoma.api.state import ApiState
        from leoma.log.eventlog import EventLog

        settings = ApiSettings.load(db=db)
        if not settings.db_path.exists():
            raise click.ClickException(f"no API log at {settings.db_path}: run `leoma db add-validator` or `leoma api` first")

        def go() -> list[Any]:
            with EventLog(settings.db_path, own=settings.api_id) as log:
                state = ApiState(log, own=settings.api_id, consensus=settings.consensus(log))
                state.refresh()
                return sorted(state.registry.values(), key=lambda v: (v.uid, v.hotkey))

        rows = _friendly(go)
        if not rows:
            click.echo("No validators registered (add one with `leoma db add-validator` or `leoma validator add`).")
            return
        for v in rows:
            click.echo(f"{v.uid:>5}  {v.hotkey[:20]}…  stake {v.stake_rao / 10**9}")
