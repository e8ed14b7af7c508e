"""`leoma rehearse`: one full turn and one epoch against the real configuration, without consequences.

The rehearsal builds the validator exactly as `leoma serve` does (same settings, same adapters,
same chain, buckets, judge and miners) with three differences:

* the event log is a **scratch log** (a new file), never the validator's own;
* everything written to the own bucket goes under a **scratch prefix** (`rehearse/<stamp>/`),
  so the published log, the seed layout and the checkpoint of the real validator are untouched;
* nothing leaves for the owner's API, and the final **`set_weights` is suppressed**: the summary
  says what would have been submitted, how the chain would take it (plain or commit-reveal) and
  whether its rate limit would allow it now.

The turn is the sampler's own task run (open, call the miners, judge, publish, close) for the
task of the current block, whoever's turn it is; the epoch is the weight setter's decision over
the scratch log after the peers' published logs are imported into it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from leoma.adapters.storage import ObjectInfo, ObjectStore
from leoma.errors import LeomaError
from leoma.ops.config import Settings

__all__ = ["PrefixStore", "Rehearsal", "rehearse"]

log = logging.getLogger("leoma.tools.rehearse")


class PrefixStore:
    """An `ObjectStore` that keeps every key of `inner` under `prefix` (a scratch area)."""

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix.rstrip("/") + "/"

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await self.inner.get(self.prefix + key, max_bytes=max_bytes)

    async def put(self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False) -> None:
        await self.inner.put(self.prefix + key, data, content_type=content_type, if_absent=if_absent)

    async def head(self, key: str) -> ObjectInfo | None:
        info = await self.inner.head(self.prefix + key)
        return None if info is None else msgspec.structs.replace(info, key=info.key[len(self.prefix):])

    async def list(self, prefix: str = "", *, start_after: str | None = None,
                   limit: int | None = None) -> AsyncIterator[ObjectInfo]:
        after = self.prefix + start_after if start_after is not None else None
        async for info in self.inner.list(self.prefix + prefix, start_after=after, limit=limit):
            yield msgspec.structs.replace(info, key=info.key[len(self.prefix):])

    async def delete(self, key: str) -> None:
        await self.inner.delete(self.prefix + key)

    async def presign_get(self, key: str, expires: int = 3600) -> str:
        return await self.inner.presign_get(self.prefix + key, expires)

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> PrefixStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class WouldSet(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the weight vector the rehearsal would have submitted."""

    uid: int
    hotkey: str
    weight: int


class Rehearsal(msgspec.Struct, frozen=True, kw_only=True):
    """What a rehearsal did and what it would have submitted."""

    hotkey: str
    block: int
    scratch_log: str
    scratch_prefix: str
    miners_checked: int
    miners_valid: int
    task_id: int | None
    task_evaluated: int
    task_passed: int
    task_note: str
    peers_imported: dict[str, int]
    epoch: int
    winner: str
    burn_reason: str
    weights: tuple[WouldSet, ...]
    commit_reveal: bool
    rate_limit: int
    blocks_since_last_update: int | None
    submittable_now: bool
    set_weights: str = "suppressed"


async def rehearse(settings: Settings, *, scratch_dir: str | Path, **overrides: Any) -> Rehearsal:
    """Run one turn and one epoch decision on a scratch log and scratch prefix; submit nothing."""
    from leoma.adapters.storage import open_store
    from leoma.log import decisions
    from leoma.log.eventlog import EventLog
    from leoma.mirror.inbound import MirrorIn, Peer
    from leoma.mirror.out import MirrorOut
    from leoma.services import sampler, weight_setter
    from leoma.services.checker import check_miners
    from leoma.services.context import load_signer, open_context

    signer = overrides.pop("signer", None) or load_signer(settings)
    settings.require("LEOMA_OWN_BUCKET_URL", why="the rehearsal writes its scratch prefix there")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    prefix = f"rehearse/{stamp}-{signer.ss58_address[:8]}"
    scratch = Path(scratch_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    db = scratch / f"rehearse-{stamp}.db"
    if db.exists():
        raise LeomaError(f"{db} exists: a scratch log is never reused; choose another --scratch-dir")
    own = overrides.pop("own", None) or open_store(settings.own_store_url, env=settings.store_env())
    scratch_log = EventLog(db, own=signer.ss58_address)
    try:
        # http=None: the owner's API is neither read nor written by a rehearsal
        staged = PrefixStore(own, prefix)
        async with open_context(settings, signer=signer, log=scratch_log, own=staged, http=None,
                                **overrides) as ctx:
            checked = await check_miners(ctx)
            block, _ = await ctx.chain.head()
            task_id, evaluated, passed, note = await _one_turn(ctx, sampler, block)
            reports = await MirrorIn(ctx.log, [Peer(h, st) for h, st in ctx.peers.items()], ctx.consensus.digest,
                                     consensus=ctx.consensus).sync(block=block) if ctx.peers else []
            await MirrorOut(ctx.log, staged, ctx.signer, ctx.consensus.digest).push()
            head, _ = await ctx.chain.head()
            length = ctx.consensus.epoch.length
            epoch = head // length
            decision = weight_setter.decide_epoch(ctx.log, own=ctx.hotkey, epoch=epoch, epoch_block=epoch * length,
                                                  netuid=ctx.netuid, consensus=ctx.consensus)
            ctx.log.append_many(decisions.drafts(decision, block=epoch * length))
            meta = await ctx.chain.metagraph(ctx.netuid)
            uid = await ctx.chain.uid_of(ctx.netuid, ctx.hotkey)
            limit = await ctx.chain.weights_rate_limit(ctx.netuid)
            since = await ctx.chain.blocks_since_last_update(ctx.netuid, uid) if uid is not None else None
            commit_reveal = await ctx.chain.commit_reveal_enabled(ctx.netuid)
            weights = tuple(WouldSet(uid=w.uid, hotkey=meta.hotkeys[w.uid] if w.uid < len(meta.hotkeys) else "",
                                     weight=w.weight) for w in decision.weights)
            return Rehearsal(
                hotkey=ctx.hotkey, block=head, scratch_log=str(db), scratch_prefix=prefix + "/",
                miners_checked=len(checked), miners_valid=sum(1 for c in checked if c.valid), task_id=task_id,
                task_evaluated=evaluated, task_passed=passed, task_note=note,
                peers_imported={r.peer: r.imported for r in reports}, epoch=epoch, winner=decision.winner,
                burn_reason=decision.burn_reason, weights=weights, commit_reveal=commit_reveal, rate_limit=limit,
                blocks_since_last_update=since,
                submittable_now=uid is not None and (since is None or not limit or since >= limit),
            )
    finally:
        scratch_log.close()


async def _one_turn(ctx: Any, sampler: Any, block: int) -> tuple[int | None, int, int, str]:
    """The sampler's own task steps for the task of `block`, as if this validator held the turn."""
    from projections.miners import MinersView

    allow = await sampler.current_allowlist(ctx, block)
    if allow is None:
        return None, 0, 0, "no verified allowlist: no task run"
    task_id = block // allow.interval
    view = MinersView.fold(ctx.log.rows(kinds=list(MinersView.KINDS), origin=ctx.hotkey), own=ctx.hotkey,
                           netuid=ctx.netuid)
    miners = view.valid_miners()
    if not miners:
        return task_id, 0, 0, "no valid miners: no task run"
    # The sampler's private steps, on purpose: a rehearsal runs the task that is not its turn.
    opened = await sampler._open_task(ctx, task_id, allow.interval, 0, block, tuple(miners))  # noqa: SLF001
    if opened is None:
        return task_id, 0, 0, "no source clip to sample"
    closed = await sampler._run_task(ctx, opened, block)  # noqa: SLF001
    return task_id, closed.evaluated, closed.passed, closed.reason or "closed"
