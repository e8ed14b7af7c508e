"""`ApiService`: the API process's parts, owned together: its `EventLog`, the fold (`ApiState`),
the signature `Verifier`, the mirror `Feeder` and the settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request

from leoma.adapters.directory import DirectoryStore
from leoma.api import media, pages
from leoma.api.auth import Verifier
from leoma.api.settings import ApiSettings
from leoma.api.state import ApiState
from leoma.log.consensus import Consensus
from leoma.log.eventlog import EventLog


class ApiService:
    """The API's log, its fold, the verifier and the feeder, shared by every request."""

    def __init__(self, settings: ApiSettings, consensus: Consensus, *, log_: EventLog | None = None,
                 feeder: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.consensus = consensus
        self.log = log_ if log_ is not None else EventLog(_ensure_parent(settings.db_path), own=settings.api_id)
        self.state = ApiState(self.log, own=self.log.own or settings.api_id, consensus=consensus,
                              reference=settings.reference)
        self.clock = clock
        self.verifier = Verifier(settings.admins, self.allowed, expiry=settings.signature_expiry, clock=clock)
        self.feeder = feeder
        self.started = clock()
        self.extras = pages.TaskExtras(self.log)
        self._named: dict[tuple[str, int], tuple[int, frozenset[str]]] = {}

    def allowed(self) -> frozenset[str]:
        """Validators that may sign reports (the registry and every verified allowlist)."""
        self.state.refresh()
        return self.state.allowed_signers()

    def now(self) -> int:
        return int(self.clock())

    def refresh(self) -> ApiState:
        """The fold, brought up to date with the log."""
        self.state.refresh()
        return self.state

    async def presign(self, sampler: str, key: str, base: str = "") -> str | None:
        """A URL a browser can load for `key` of the sampler's bucket (None if there is none).

        Directory buckets are served by the API itself (`/media/...`, relative to `base`), and
        only for keys the task's events name; S3/R2 objects get a presigned URL.
        """
        if self.feeder is None:
            return None
        store = self.feeder.stores.get(sampler)
        if isinstance(store, DirectoryStore):
            # Only objects the API would serve get a URL: never a link that is dead on arrival.
            if media.media_file(self.state, store, sampler, key, self.named_keys) is None:
                return None
            return media.media_url(base, sampler, key)
        return await self.feeder.presign(sampler, key)

    def named_keys(self, validator: str, task_id: int) -> frozenset[str]:
        """`media.named_keys`, remembered until the log grows (a task page asks once per miner)."""
        held = self._named.get((validator, task_id))
        if held is not None and held[0] == self.state.last_seq:
            return held[1]
        if len(self._named) > 4096:
            self._named.clear()
        keys = media.named_keys(self.state, validator, task_id)
        self._named[(validator, task_id)] = (self.state.last_seq, keys)
        return keys

    def media_for(self, request: Request) -> Callable[[str, str], Any]:
        """`presign` with the API's root URL as seen by this request."""
        base = str(request.base_url)

        async def sign(sampler: str, key: str) -> str | None:
            return await self.presign(sampler, key, base)

        return sign

    def nudge(self, validator: str) -> None:
        """Import a validator's mirror soon (after it reported new samples)."""
        if self.feeder is not None:
            task = asyncio.get_running_loop().create_task(self.feeder.sync(self.allowed(), only=validator))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
