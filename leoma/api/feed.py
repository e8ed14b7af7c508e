"""Feeding the API's log: every allowlisted validator's published log, imported with `MirrorIn`.

`Feeder(log, entries, consensus)` holds one store per `PEER_VALIDATORS` entry. `sync()` imports
the peers that are currently allowed (the owner's registry plus every verified allowlist the
log holds) and remembers each peer's last `PeerSync` for the dashboard's lag column. Importing
appends nothing to the API's log but the peers' events (and a refusal, once per object). The same
stores presign task media (seed-spec §4.5).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from leoma.adapters.storage import ObjectStore
from leoma.log.consensus import Consensus
from leoma.log.eventlog import EventLog
from leoma.mirror.inbound import MirrorIn, Peer, PeerSync
from leoma.mirror.peers import PeerEntry, peer_store

__all__ = ["Feeder"]

log = logging.getLogger("leoma.api")


class Feeder:
    """Imports allowlisted validators' mirrors into the API's log."""

    def __init__(self, event_log: EventLog, entries: Sequence[PeerEntry], consensus: Consensus,
                 *, stores: dict[str, ObjectStore] | None = None) -> None:
        self.log = event_log
        self.consensus = consensus
        self.stores: dict[str, ObjectStore] = dict(stores or {})
        for entry in entries:
            if entry.hotkey not in self.stores:
                self.stores[entry.hotkey] = peer_store(entry)
        self.last: dict[str, PeerSync] = {}
        self.last_sync: float = 0.0

    async def sync(self, allowed: frozenset[str], only: str | None = None) -> list[PeerSync]:
        """Import the new events of every allowed peer (or only `only`); never raises for one peer."""
        peers = [Peer(h, s) for h, s in sorted(self.stores.items()) if h in allowed and (only is None or h == only)]
        if not peers:
            return []
        # The same bounded import as a validator's; entitlement is judged by the allowlists the
        # trusted validators verified (the API verifies none itself), and waits without one.
        reports = await MirrorIn(self.log, peers, self.consensus.digest, consensus=self.consensus,
                                 allowlist_origins=lambda: allowed).sync()
        for r in reports:
            self.last[r.peer] = r
        self.last_sync = time.time()
        return reports

    async def run(self, allowed: Callable[[], frozenset[str]], stop: asyncio.Event, interval: float) -> None:
        """Sync every `interval` seconds until `stop` is set; a failed round is logged and retried."""
        while not stop.is_set():
            try:
                await self.sync(allowed())
            except Exception as exc:  # a feed round must never take the API down
                log.warning("mirror import round failed: %s: %s", type(exc).__name__, str(exc)[:300])
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except asyncio.TimeoutError:
                pass

    async def presign(self, sampler: str, key: str) -> str | None:
        """A GET URL for `key` in the sampler's bucket (None when its bucket is not configured)."""
        store = self.stores.get(sampler)
        if store is None:
            return None
        return await store.presign_get(key, 3600)

    async def close(self) -> None:
        """Close every peer store."""
        for store in self.stores.values():
            try:
                await store.close()
            except Exception:  # closing is best effort
                pass
