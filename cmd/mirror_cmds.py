"""`leoma mirror status|push|pull`: the own log out to the own bucket, peers' logs in."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from leoma.adapters.wallets import wallet_options

from .events_cmds import db_option
from .output import friendly_errors, json_option, print_json, print_table


def bucket_option(fn):  # type: ignore[no-untyped-def]
    return click.option("--bucket", "bucket_url", envvar="LEOMA_OWN_BUCKET_URL", default=None,
                        help="The own bucket as a URL: file:///path or s3://bucket?endpoint=... (env LEOMA_OWN_BUCKET_URL).")(fn)


def peers_option(fn):  # type: ignore[no-untyped-def]
    return click.option("--peers", "peers_json", envvar="PEER_VALIDATORS", default="",
                        help="Peer validators as the seed's JSON list (env PEER_VALIDATORS).")(fn)


def consensus_option(fn):  # type: ignore[no-untyped-def]
    return click.option("--consensus", "consensus_path", type=click.Path(dir_okay=False), default=None,
                        help="consensus.toml (env LEOMA_CONSENSUS; default: the packaged one), read as `leoma serve` reads it.")(fn)


def network_consensus(consensus_path: str | None = None, db_path: str | None = None) -> Any:
    """The consensus the network runs, read through the validator's settings (flag, env, .env;
    else the one the log at `db_path` recorded; else the packaged one)."""
    from leoma.ops.config import Settings

    return Settings.load({"consensus_path": consensus_path, "db": db_path}).consensus()


def key_options(fn):  # type: ignore[no-untyped-def]
    fn = wallet_options(fn)
    return click.option("--dev-key", default=None, metavar="URI",
                        help="Sign with a throw-away dev key such as //Alice (devnet only) instead of a wallet.")(fn)


def _signer(dev_key: str | None, wallet_name: str | None, wallet_hotkey: str | None, wallet_path: str | None) -> Any:
    if dev_key:
        from leoma.adapters.signing import keypair_from_uri

        return keypair_from_uri(dev_key)
    from leoma.adapters.wallets import load_wallet

    return load_wallet(wallet_name, wallet_hotkey, wallet_path).hotkey


def _open_log(db_path: str, own: str) -> Any:
    from leoma.errors import LogError
    from leoma.log.eventlog import EventLog

    if not Path(db_path).is_file():
        raise LogError(f"no event log at {db_path}: pass --db PATH or set LEOMA_DB")
    return EventLog(db_path, own=own)


def _peers(peers_json: str, own: str) -> list[Any]:
    from leoma.mirror.inbound import Peer
    from leoma.mirror.peers import peer_store, peers_from_env

    entries, problems = peers_from_env(peers_json, own=own)
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)
    return [Peer(e.hotkey, peer_store(e)) for e in entries]


async def _restore_first(log: Any, bucket_url: str, signer: Any, digest: str) -> int:
    """Restore the own bucket's published tail before appending (as `leoma serve` does on start)."""
    from types import SimpleNamespace

    from leoma.adapters.storage import open_store
    from leoma.services.serve import restore_own_log

    async with open_store(bucket_url) as store:
        ctx = SimpleNamespace(log=log, own=store, signer=signer, consensus=SimpleNamespace(digest=digest))
        return await restore_own_log(ctx)


def _need_bucket(bucket_url: str | None) -> str:
    if not bucket_url:
        raise click.UsageError("the own bucket is not set: pass --bucket URL or set LEOMA_OWN_BUCKET_URL")
    return bucket_url


def _block_at(log: Any, origin: str, seq: int) -> int:
    if seq <= 0:
        return 0
    found = next(log.chain(origin, after=seq - 1, limit=1), None)
    return int(found.block) if found else 0


@click.group("mirror")
def mirror_group() -> None:
    """Publish the own log to the own bucket and import peers' published logs."""


@mirror_group.command("push")
@db_option
@bucket_option
@key_options
@click.option("--segment-size", default=1000, show_default=True, help="Events per segment (fixed once published).")
@consensus_option
@json_option
@friendly_errors
def push(db_path: str, bucket_url: str | None, dev_key: str | None, wallet_name: str | None,
         wallet_hotkey: str | None, wallet_path: str | None, segment_size: int, consensus_path: str | None,
         as_json: bool) -> None:
    """Upload new own events and a signed checkpoint (restoring a lost local tail first).

    Example:

        leoma mirror push --db events.db --bucket file:///tmp/bucket --dev-key //Alice
    """
    from leoma.adapters.storage import open_store
    from leoma.mirror.out import MirrorOut

    signer = _signer(dev_key, wallet_name, wallet_hotkey, wallet_path)
    digest = network_consensus(consensus_path, db_path).digest

    async def go() -> tuple[int, Any]:
        async with open_store(_need_bucket(bucket_url)) as store:
            out = MirrorOut(log, store, signer, digest, segment_size)
            restored = await out.restore()
            return restored, await out.push()

    with _open_log(db_path, signer.ss58_address) as log:
        restored, report = asyncio.run(go())
    if as_json:
        import msgspec

        print_json({**msgspec.to_builtins(report), "restored": restored})
        return
    if restored:
        click.echo(f"restored {restored} own events from the bucket first")
    click.echo(f"published {report.size} events (was {report.previous_size}): {report.segments_written} segments "
               f"written, {report.segments_already_there} already there, {report.bytes_written} bytes")


@mirror_group.command("pull")
@db_option
@peers_option
@bucket_option
@key_options
@click.option("--peer", "only", default=None, metavar="HOTKEY", help="Only this peer.")
@consensus_option
@json_option
@friendly_errors
def pull(db_path: str, peers_json: str, bucket_url: str | None, dev_key: str | None, wallet_name: str | None,
         wallet_hotkey: str | None, wallet_path: str | None, only: str | None, consensus_path: str | None,
         as_json: bool) -> None:
    """Import new events from every peer's bucket; refusals are recorded once with their reason.

    With the own bucket (--bucket) the own published tail is restored first, as before any append.

    Example:

        PEER_VALIDATORS='[{"hotkey": "5F...", "url": "file:///tmp/bucket"}]' leoma mirror pull --db events.db --dev-key //Bob
    """
    from leoma.mirror.inbound import MirrorIn

    signer = _signer(dev_key, wallet_name, wallet_hotkey, wallet_path)
    own = signer.ss58_address
    consensus = network_consensus(consensus_path, db_path)
    peers = _peers(peers_json, own)

    async def go() -> list[Any]:
        if bucket_url:
            await _restore_first(log, bucket_url, signer, consensus.digest)
        try:
            return await MirrorIn(log, peers, consensus.digest, consensus=consensus).sync(only)
        finally:
            for p in peers:
                await p.store.close()

    with _open_log(db_path, own) as log:
        reports = asyncio.run(go())
    if as_json:
        import msgspec

        print_json([msgspec.to_builtins(r) for r in reports])
    else:
        print_table(["peer", "published", "imported", "head", "problem"],
                    [(r.peer, "-" if r.checkpoint_size is None else r.checkpoint_size, r.imported, r.head,
                      r.rejected or r.error or (f"waiting: {r.waiting}" if r.waiting else "")) for r in reports], empty="(no peers: set --peers or PEER_VALIDATORS)")
    if any(r.rejected or r.error for r in reports):
        sys.exit(1)


@mirror_group.command("status")
@db_option
@bucket_option
@peers_option
@key_options
@click.option("--hotkey", default=None, help="The own hotkey (instead of loading a wallet or dev key).")
@consensus_option
@json_option
@friendly_errors
def status(db_path: str, bucket_url: str | None, peers_json: str, dev_key: str | None, wallet_name: str | None,
           wallet_hotkey: str | None, wallet_path: str | None, hotkey: str | None, consensus_path: str | None,
           as_json: bool) -> None:
    """Own head vs what is uploaded, and each peer's published head vs what was imported.

    The layout column says how each peer is read: `log` (its published event log), `seed` (the
    first implementation's bucket layout; heads count verdict files) or `none` (nothing yet).

    Example:

        leoma mirror status --db events.db --hotkey 5F... --bucket file:///tmp/bucket --json
    """
    from leoma.adapters.storage import open_store
    from leoma.errors import MirrorError, StorageError
    from leoma.mirror.seedpeer import observed_tasks
    from leoma.mirror.segments import fetch_checkpoint
    from leoma.ops.metrics import collect_facts

    own = hotkey or _signer(dev_key, wallet_name, wallet_hotkey, wallet_path).ss58_address
    digest = network_consensus(consensus_path, db_path).digest
    peers = _peers(peers_json, own)

    async def published(store: Any, origin: str) -> tuple[Any, str]:
        try:
            cp = await fetch_checkpoint(store, origin)
            if cp is not None and cp.consensus_digest != digest:
                return cp, f"unknown consensus digest: {cp.consensus_digest[:16]} is not the network's {digest[:16]}"
            return cp, ""
        except (MirrorError, StorageError) as exc:
            return None, str(exc)
        finally:
            await store.close()

    async def peer_view(store: Any, origin: str) -> tuple[Any, str, str, int]:
        # A peer with a checkpoint publishes a log; one without may hold the seed's layout.
        from leoma.mirror.seedpeer import published_layout

        try:
            cp = await fetch_checkpoint(store, origin)
            if cp:
                problem = ("" if cp.consensus_digest == digest else
                           f"unknown consensus digest: {cp.consensus_digest[:16]} is not the network's {digest[:16]}")
                return cp, problem, "log", cp.size
            return None, "", *await published_layout(store, origin)
        except (MirrorError, StorageError) as exc:
            return None, str(exc), "?", 0
        finally:
            await store.close()

    rows: list[dict[str, Any]] = []
    with _open_log(db_path, own) as log:
        views = {peer.hotkey: asyncio.run(peer_view(peer.store, peer.hotkey)) for peer in peers}
        # The heads and lags are the ones `/metrics` reports: one computation, two views of it.
        facts = collect_facts(log, own, peers=list(views), published={p: v[3] for p, v in views.items()},
                              peer_problems={p: v[1] for p, v in views.items()})
        own_row: dict[str, Any] = {"role": "own", "hotkey": own, "local": facts.log_head, "uploaded": facts.uploaded_head,
                                   "layout": "log", "published": None, "lag_events": facts.mirror_lag,
                                   "lag_blocks": _block_at(log, own, facts.log_head) - _block_at(log, own, facts.uploaded_head),
                                   "problem": ""}
        if bucket_url:
            cp, problem = asyncio.run(published(open_store(bucket_url), own))
            own_row["published"] = cp.size if cp else 0
            own_row["problem"] = problem
        rows.append(own_row)
        by_peer = {f.hotkey: f for f in facts.peers}
        for peer in peers:
            cp, problem, kind, size = views[peer.hotkey]
            fact = by_peer[peer.hotkey]
            # A seed-layout peer has no log: its heads are verdict files published and read.
            local = observed_tasks(log, peer.hotkey) if kind == "seed" else fact.imported
            rows.append({"role": "peer", "hotkey": peer.hotkey, "layout": kind, "local": local, "uploaded": None,
                         "published": size,
                         "lag_events": max(0, size - local) if kind == "seed" else fact.lag,
                         "lag_blocks": 0 if kind != "log" else max(0, cp.block - _block_at(log, peer.hotkey, local)),
                         "problem": problem})
    if as_json:
        print_json(rows)
        return
    print_table(["role", "hotkey", "layout", "local head", "uploaded", "published", "lag events", "lag blocks",
                 "problem"],
                [(r["role"], r["hotkey"], r.get("layout", "log"), r["local"], "-" if r["uploaded"] is None else r["uploaded"],
                  "-" if r["published"] is None else r["published"], r["lag_events"], r["lag_blocks"], r["problem"])
                 for r in rows])


def register(cli: click.Group) -> None:
    """Add `leoma mirror` to `leoma`."""
    cli.add_command(mirror_group)
