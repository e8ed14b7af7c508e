"""The miner checker: the seed's validation pipeline (seed-spec §2.4), recorded as events.

One pass reads the metagraph, every revealed commitment, the owner's blacklist and the
allowlist, checks every committed miner concurrently (under `MAX_CONCURRENT_MINERS`), marks
duplicate models, and appends what changed:

    metagraph/<block>                      MetagraphObserved, when the metagraph changed
    commitment/<hotkey>/<commit_block>     CommitmentObserved, when a commitment is new or changed
    checked/<hotkey>/<block>/<digest>      MinerChecked, when the miner's result changed
    checked/<hotkey>/epoch/<n>             MinerChecked(heartbeat=True), once per epoch
    allowlist/<block>/<digest|rejected>    AllowlistVerified / AllowlistRejected, when changed

The rules and reason strings live in `projections.miners`; this module only calls the outside
world and records. One miner's failure or exception never stops the pass: it becomes invalid
with a reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import msgspec

from leoma.errors import AdapterError, ConflictError, EventError, LeomaError
from leoma.log.eventlog import Draft
from leoma.log.events import (
    AllowlistRejected,
    AllowlistVerified,
    CheckOutcome,
    CommitmentObserved,
    MetagraphObserved,
    MinerChecked,
    check_key,
    decode_body,
    encode_body,
)
from leoma.log.textsafe import invalid_text_reason, safe_text, text_problem, unsafe_field
from leoma.mirror.allowlist import COMMITMENT_PREFIX
from leoma.services.context import ServiceContext
from projections.miners import commit_count_problem, commitment_problem, duplicates, parse_commitment

__all__ = ["check_miners", "check_one", "fetch_blacklist", "observe_allowlist", "latest_own"]

log = logging.getLogger("leoma.checker")


def latest_own(ctx: ServiceContext, kind: str) -> dict[str, Any]:
    """The latest own body of `kind` per natural subject (hotkey, or "" for singletons)."""
    out: dict[str, Any] = {}
    for row in ctx.log.rows(kinds=[kind], origin=ctx.hotkey):
        body = decode_body(row.body, row.v)
        out[getattr(body, "hotkey", "")] = body
    return out


async def fetch_blacklist(ctx: ServiceContext) -> tuple[frozenset[str], str]:
    """The owner's miner blacklist (`GET {API_URL}/blacklist/miners`) and why it may be empty.

    Fails open like the seed (an empty blacklist), but the reason is returned and logged.
    """
    if not ctx.settings.api_url or ctx.http is None:
        return frozenset(), "API_URL is not set"
    url = ctx.settings.api_url.rstrip("/") + "/blacklist/miners"
    try:
        resp = await ctx.http.get(url, timeout=10.0)
        resp.raise_for_status()
        data = resp.json()
    except Exception as exc:  # any failure of a best-effort read: fail open, say why
        reason = f"blacklist unavailable ({type(exc).__name__}: {str(exc)[:200]}); treating it as empty"
        log.warning("%s", reason)
        return frozenset(), reason
    if not isinstance(data, list):
        reason = "blacklist is not a JSON list; treating it as empty"
        log.warning("%s", reason)
        return frozenset(), reason
    return frozenset(str(h) for h in data if isinstance(h, str) and h), ""


async def check_one(
    ctx: ServiceContext, uid: int, hotkey: str, entries: tuple[Any, ...], blacklist: frozenset[str]
) -> MinerChecked:
    """Run the seed's checks on one miner, in its order; the first failure decides."""
    checks: list[CheckOutcome] = []
    latest = entries[-1]
    # Unlike the seed (§12.9), a blacklisted miner keeps its commit block: seniority is a fact.
    base: dict[str, Any] = {"hotkey": hotkey, "uid": uid, "commit_block": int(latest.block)}

    def done(reason: str = "", **extra: Any) -> MinerChecked:
        return MinerChecked(**base, **extra, valid=not reason, invalid_reason=reason, checks=tuple(checks))

    if hotkey in blacklist:
        checks.append(CheckOutcome(name="blacklist", ok=False, detail="on the owner's blacklist"))
        return done("blacklisted")
    checks.append(CheckOutcome(name="blacklist", ok=True))
    problem = commit_count_problem(len(entries), ctx.consensus.ranking.max_commits_per_hotkey)
    checks.append(CheckOutcome(name="commit_count", ok=problem is None, detail=f"{len(entries)} commitments"))
    if problem:
        return done(problem)
    bad = text_problem(latest.text, free_text=True)
    if bad:
        checks.append(CheckOutcome(name="text", ok=False, detail=f"commitment {bad}"))
        return done(invalid_text_reason("commitment"))
    parsed = parse_commitment(latest.text)
    for key in _COMMITTED_FIELDS:
        bad = text_problem(parsed.get(key), max_chars=_MAX_FIELD_CHARS) if isinstance(parsed.get(key), str) else ""
        if bad:
            # Shown escaped, so people see what was committed; the miner is invalid, the pass goes on.
            base[key] = safe_text(parsed[key], max_chars=_MAX_FIELD_CHARS)
            checks.append(CheckOutcome(name="text", ok=False, detail=f"{key} {bad}"))
            return done(invalid_text_reason(key))
    problem = commitment_problem(parsed, hotkey)
    checks.append(CheckOutcome(name="fields", ok=problem is None, detail=problem or ""))
    if problem:
        # Keep whatever string fields there are, so people can see what was committed.
        for key in _COMMITTED_FIELDS:
            if isinstance(parsed.get(key), str):
                base[key] = parsed[key][:_MAX_FIELD_CHARS]
        return done(problem)
    model, revision, chute_id = (str(parsed[k]).strip() for k in ("model_name", "model_revision", "chute_id"))
    base.update(model_name=model, model_revision=revision, chute_id=chute_id)
    info = await ctx.chutes.chute_info(chute_id)
    checks.append(CheckOutcome(name="chute_fetched", ok=info is not None))
    if info is None:
        return done("chute_fetch_failed")
    for key, value in (("chute_slug", info.slug), ("chute_revision", info.revision)):
        bad = text_problem(value, max_chars=_MAX_FIELD_CHARS)
        if bad:  # the Chutes API is outside too
            checks.append(CheckOutcome(name="text", ok=False, detail=f"{key} {bad}"))
            return done(invalid_text_reason(key))
    base.update(chute_slug=info.slug, chute_hot=bool(info.hot))
    checks.append(CheckOutcome(name="chute_hot", ok=bool(info.hot)))
    if not info.hot:
        return done("chute_not_running")
    mismatch = bool(info.revision) and info.revision != revision
    checks.append(CheckOutcome(name="chute_revision", ok=not mismatch, detail=info.revision))
    if mismatch:
        return done(f"revision_mismatch:chute={info.revision}")
    try:
        model_hash, sha = await ctx.hub.model_hash(model, revision)
    except AdapterError as exc:
        checks.append(CheckOutcome(name="hf_hash", ok=False, detail=str(exc)[:300]))
        return done("hf_model_fetch_failed")
    checks.append(CheckOutcome(name="hf_hash", ok=True))
    base["model_hash"] = safe_text(model_hash, max_chars=_MAX_FIELD_CHARS)
    checks.append(CheckOutcome(name="hf_revision", ok=sha == revision, detail=safe_text(sha, max_chars=_MAX_FIELD_CHARS)))
    if sha != revision:
        return done(f"revision_mismatch:hf={safe_text(sha, max_chars=_MAX_FIELD_CHARS)}")
    return done()


_COMMITTED_FIELDS = ("model_name", "model_revision", "chute_id")
_MAX_FIELD_CHARS = 512


def _unrecordable(result: MinerChecked, field: str) -> MinerChecked:
    """A result holding a string the encoder refuses, as an invalid miner whose reason names the field."""
    top = field.split(".", 1)[0].split("[", 1)[0]
    return MinerChecked(
        hotkey=result.hotkey, uid=result.uid, commit_block=result.commit_block, valid=False,
        invalid_reason=invalid_text_reason(top),
        checks=tuple(CheckOutcome(name=safe_text(c.name, max_chars=64), ok=c.ok, detail=safe_text(c.detail, max_chars=300))
                     for c in result.checks) + (CheckOutcome(name="text", ok=False, detail=f"{field} is not encodable"),),
    )


async def _guarded(ctx: ServiceContext, sem: asyncio.Semaphore, uid: int, hotkey: str, entries: tuple[Any, ...],
                   blacklist: frozenset[str]) -> MinerChecked:
    async with sem:
        try:
            result = await check_one(ctx, uid, hotkey, entries, blacklist)
        except Exception as exc:  # one miner's surprise must not stop the pass
            log.exception("checking miner uid=%s %s failed", uid, hotkey[:12])
            return MinerChecked(hotkey=hotkey, uid=uid, valid=False,
                                invalid_reason=f"check_error:{type(exc).__name__}",
                                checks=(CheckOutcome(name="error", ok=False, detail=safe_text(exc, max_chars=300)),))
    field = unsafe_field(result)
    return _unrecordable(result, field) if field else result


def _recordable(drafts: list[Draft]) -> list[Draft]:
    """The drafts that can be encoded; any other is logged and left out, so the batch still lands."""
    out = []
    for d in drafts:
        try:
            check_key(d.key)
            encode_body(d.body)
        except EventError as exc:
            log.error("event %s left out of the checker pass: %s", safe_text(d.key, max_chars=120), exc)
            continue
        out.append(d)
    return out


def _same_result(a: MinerChecked, b: MinerChecked) -> bool:
    return msgspec.structs.replace(a, heartbeat=False) == msgspec.structs.replace(b, heartbeat=False)


def _digest(body: Any) -> str:
    return hashlib.sha256(encode_body(body)).hexdigest()[:12]


async def observe_allowlist(ctx: ServiceContext, block: int) -> AllowlistVerified | None:
    """Read and verify the allowlist; record it (or the rejection) when it changed."""
    from leoma.mirror.allowlist import AllowlistRejected as Rejected, read_allowlist

    latest = None
    for row in ctx.log.rows(kinds=["allowlist_verified", "allowlist_rejected"], origin=ctx.hotkey, descending=True,
                            limit=1):
        latest = decode_body(row.body, row.v)
    if ctx.source is None:
        body: Any = AllowlistRejected(reason="no_source_bucket: LEOMA_SOURCE_URL is not set")
    else:
        try:
            found = await read_allowlist(ctx.chain, ctx.source, ctx.netuid)
            body = AllowlistVerified(owner_hotkey=found.owner_hotkey, digest=found.digest, interval=found.interval,
                                     validators=found.validators)
        except Rejected as exc:
            body = AllowlistRejected(reason=f"{exc.reason}: {exc}"[:500])
        except LeomaError as exc:
            body = AllowlistRejected(reason=f"unreadable: {exc}"[:500])
    if body != latest:
        tag = body.digest if isinstance(body, AllowlistVerified) else "rejected/" + _digest(body)
        ctx.log.append(body, key=f"allowlist/{block}/{tag}", block=block)
        if isinstance(body, AllowlistRejected):
            log.warning("allowlist rejected: %s", body.reason)
    return body if isinstance(body, AllowlistVerified) else None


async def check_miners(ctx: ServiceContext) -> list[MinerChecked]:
    """One checker pass; returns every committed miner's result (duplicates marked), by uid."""
    block, _ = await ctx.chain.head()
    meta = await ctx.chain.metagraph(ctx.netuid)
    # The owner's allowlist anchor is a plain commitment too; it is not a miner's model.
    commits = {hk: h for hk, h in (await ctx.chain.commitments(ctx.netuid)).items()
               if not (hk == meta.owner_hotkey and h.latest.text.startswith(COMMITMENT_PREFIX))}
    blacklist, why = await fetch_blacklist(ctx)
    if why and ctx.settings.api_url:
        log.warning("block=%s checking without a blacklist: %s", block, why)
    drafts: list[Draft] = []

    observed = MetagraphObserved(
        netuid=ctx.netuid, owner_hotkey=meta.owner_hotkey, hotkeys=meta.hotkeys, coldkeys=meta.coldkeys,
        stakes_rao=meta.stakes, validator_permit=meta.validator_permit, last_update=meta.last_update,
    )
    last_meta = None
    for row in ctx.log.rows(kinds=["metagraph_observed"], origin=ctx.hotkey, descending=True, limit=1):
        last_meta = decode_body(row.body, row.v)
    if observed != last_meta:
        drafts.append(Draft(f"metagraph/{block}", block, observed))

    seen_commitments = latest_own(ctx, "commitment_observed")
    for hotkey in meta.hotkeys:
        history = commits.get(hotkey)
        if history is None:
            continue
        # Recorded as observed, made encodable; whether it is usable is the check's business.
        body = CommitmentObserved(netuid=ctx.netuid, hotkey=hotkey, commit_block=history.commit_block,
                                  commit_count=history.count, data=safe_text(history.latest.text, max_chars=4096))
        if seen_commitments.get(hotkey) != body:
            drafts.append(Draft(f"commitment/{hotkey}/{history.commit_block}", block, body))

    sem = asyncio.Semaphore(ctx.settings.max_concurrent_miners)
    jobs = [
        _guarded(ctx, sem, uid, hotkey, commits[hotkey].entries, blacklist)
        for uid, hotkey in zip(meta.uids, meta.hotkeys)
        if hotkey in commits and hotkey not in meta.hotkeys[:uid]  # a hotkey twice on the metagraph: first uid
    ]
    results = list(await asyncio.gather(*jobs))
    dupes = duplicates(results)
    results = [
        msgspec.structs.replace(
            r, valid=False, invalid_reason=dupes[r.hotkey],
            checks=r.checks + (CheckOutcome(name="duplicate", ok=False, detail=dupes[r.hotkey]),),
        ) if r.hotkey in dupes else r
        for r in results
    ]

    previous = latest_own(ctx, "miner_checked")
    epoch = block // ctx.consensus.epoch.length
    for r in results:
        before = previous.get(r.hotkey)
        if before is None or not _same_result(before, r):
            drafts.append(Draft(f"checked/{r.hotkey}/{block}/{_digest(r)}", block, r))
        beat = f"checked/{r.hotkey}/epoch/{epoch}"
        if ctx.log.get(ctx.hotkey, beat) is None:
            drafts.append(Draft(beat, block, msgspec.structs.replace(r, heartbeat=True)))
    drafts = _recordable(drafts)
    if drafts:
        result = ctx.log.append_many(drafts)
        for c in result.conflicts:  # only possible if the chain rewrote history under one key
            log.warning("conflicting event refused: %s", c.key)
    valid = sum(r.valid for r in results)
    log.info("block=%s checked %d miners: %d valid, %d invalid", block, len(results), valid, len(results) - valid)
    try:
        await observe_allowlist(ctx, block)
    except ConflictError as exc:
        log.warning("allowlist event refused: %s", exc)
    from leoma.services.reporter import report_miners

    await report_miners(ctx, results)
    return results
