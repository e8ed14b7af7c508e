"""`ServiceContext`: everything a service needs, built once from `Settings`.

The services (checker, sampler, weight setter) take a context instead of globals, so a test or
the devnet can hand them a simulated chain, directory buckets and the local world, and the
production command hands them R2, Chutes and Gemini — the same objects, other endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from leoma.adapters.storage import ObjectStore, open_store
from leoma.errors import ConfigError
from leoma.log.consensus import Consensus
from leoma.log.eventlog import EventLog
from leoma.ops.config import Settings

__all__ = ["ServiceContext", "chutes_client", "load_signer", "open_context"]

log = logging.getLogger("leoma.services")


@dataclass
class ServiceContext:
    """The validator's collaborators. `signer` has `ss58_address` and `sign(bytes)`."""

    settings: Settings
    consensus: Consensus
    log: EventLog
    chain: Any
    signer: Any
    source: ObjectStore | None
    own: ObjectStore | None
    chutes: Any
    hub: Any
    judge: Any | None = None
    peers: dict[str, ObjectStore] = field(default_factory=dict)
    http: Any = None
    """An `httpx.AsyncClient` for the owner's API (None when API_URL is not set)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Per-process caches (task media, blacklist); never a source of truth."""

    @property
    def hotkey(self) -> str:
        """This validator's hotkey (the origin of its events)."""
        return str(self.signer.ss58_address)

    @property
    def netuid(self) -> int:
        return self.settings.netuid

    def need_judge(self) -> Any:
        """The judge adapter (a context opened without `need_judge=True` has none)."""
        if self.judge is None:
            raise ConfigError("this service needs the judge: open the context with need_judge=True "
                              "(and set GEMINI_API_KEY)")
        return self.judge


def load_signer(settings: Settings) -> Any:
    """The hotkey keypair: LEOMA_DEV_KEY (devnet) or the wallet's hotkey."""
    if settings.dev_key:
        from leoma.adapters.signing import keypair_from_uri

        return keypair_from_uri(settings.dev_key)
    from leoma.adapters.wallets import load_wallet

    return load_wallet(settings.wallet_name, settings.hotkey_name, settings.wallet_path or None).hotkey


def chutes_client(settings: Settings, consensus: Consensus, **options: Any) -> Any:
    """The Chutes client as a validator builds it: endpoints from `settings`; the request body,
    resolution rule and reply limits from `consensus` (`options` reach `ChutesClient`, e.g. a transport)."""
    from leoma.adapters.chutes import ChutesClient
    from leoma.adapters.video import reply_limits

    v = consensus.video
    return ChutesClient(
        settings.chutes_api_url, settings.chutes_api_key, settings.chute_url_template,
        max_concurrency=settings.max_concurrent_miners, max_response_bytes=v.max_response_bytes,
        required_resolution=(v.required_width, v.required_height), resolution_tolerance=v.resolution_tolerance,
        request=consensus.request, video_limits=reply_limits(v), **options,
    )


@asynccontextmanager
async def open_context(settings: Settings, *, need_judge: bool = False, **overrides: Any) -> AsyncIterator[ServiceContext]:
    """Build a `ServiceContext` from `settings`; keyword `overrides` replace any collaborator.

    Everything built here is closed on exit; overrides are the caller's to close.
    """
    import httpx

    from leoma.adapters.chain import Chain
    from leoma.adapters.hub import HubClient
    from leoma.adapters.judge import Judge, JudgeSettings

    consensus: Consensus = overrides.pop("consensus", None) or settings.consensus(from_log=False)
    signer = overrides.pop("signer", None) or load_signer(settings)
    built: list[Any] = []

    def make(name: str, factory: Any) -> Any:
        if name in overrides:
            return overrides.pop(name)
        obj = factory()
        if obj is not None:
            built.append(obj)
        return obj

    env = settings.store_env()
    source = make("source", lambda: open_store(settings.source_store_url, env=env) if settings.source_store_url else None)
    own = make("own", lambda: open_store(settings.own_store_url, env=env) if settings.own_store_url else None)
    peers = overrides.pop("peers", None)
    if peers is None:
        peers = {}
        from leoma.mirror.peers import peer_store

        for problem in settings.peer_problems():
            log.warning("PEER_VALIDATORS: %s", problem)
        for hotkey, peer in settings.peers().items():
            if hotkey == signer.ss58_address:
                continue
            try:
                peers[hotkey] = peer_store(peer, env=env)
                built.append(peers[hotkey])
            except ConfigError as exc:
                log.warning("peer %s bucket cannot be opened: %s", hotkey[:12], exc)
    chutes = make("chutes", lambda: chutes_client(settings, consensus))
    hub = make("hub", lambda: HubClient(settings.hf_endpoint or None, settings.hf_token or None))

    def judge_factory() -> Any:
        if not settings.gemini_api_key:
            if need_judge:
                settings.require("GEMINI_API_KEY")
            return None
        return Judge(settings.gemini_api_key, base_url=settings.gemini_base_url or None,
                     settings=JudgeSettings.from_consensus(consensus))

    judge = make("judge", judge_factory)
    http = make("http", lambda: httpx.AsyncClient(timeout=30.0) if settings.api_url else None)
    chain = make("chain", lambda: Chain(settings.network))
    event_log = overrides.pop("log", None)
    own_log = event_log is None
    if own_log:
        settings.db_path.parent.mkdir(parents=True, exist_ok=True)
        event_log = EventLog(settings.db_path, own=signer.ss58_address)
    ctx = ServiceContext(
        settings=settings, consensus=consensus, log=event_log, chain=chain, signer=signer, source=source,
        own=own, chutes=chutes, hub=hub, judge=judge, peers=peers, http=http,
    )
    if overrides:
        raise ConfigError(f"unknown context override(s): {', '.join(sorted(overrides))}")
    try:
        yield ctx
    finally:
        for obj in reversed(built):
            try:
                for closer in ("aclose", "close"):
                    fn = getattr(obj, closer, None)
                    if fn is not None:
                        result = fn()
                        if hasattr(result, "__await__"):
                            await result
                        break
            except Exception as exc:  # closing must not hide the caller's error
                log.debug("closing %r failed: %s", obj, exc)
        if own_log:
            event_log.close()
