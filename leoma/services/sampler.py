"""The sampler: on this validator's turn, open a task, call every valid miner, judge, publish.

A task `T` (the rotation index) is a sequence of events, each appended as the step happens:

    task/<T>/opened            TaskOpened: the clip (chosen from the hash of block T*interval), the prompt
    response/<T>/<miner>       MinerResponded: accepted (video stored) or failed (miner | infra)
    verdict/<T>/<miner>        VerdictRecorded, or judgefail/<T>/<miner> JudgeFailed
    task/<T>/closed            TaskClosed, after the seed-format verdict file is published

The log is the task's memory: after a crash `sample_turn` resumes the open task, never calls a
miner that already answered, publishes the verdict file once (it is write-once in the bucket)
and closes the task exactly once. When the rotation's blocks run out the task is closed with
what is done (`reason="turn over"`). The pass rule and the scores come from `leoma.adapters.judge` and
the consensus config; nothing here decides a verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

from leoma.adapters import gates, video
from leoma.errors import AdapterError, ObjectExists, StorageError, VideoError
from leoma.log.consensus import fraction
from leoma.log.events import (
    AllowlistVerified,
    JudgeFailed,
    MinerChecked,
    MinerResponded,
    TaskClosed,
    TaskOpened,
    VerdictRecorded,
    decode_body,
)
from leoma.log.textsafe import safe_text
from leoma.mirror import seedformat
from leoma.services.context import ServiceContext
from projections.gates import CopyCandidate, copies, gate_reason
from projections.miners import MinersView
from projections.rotation import failover_step_at, rightful_sampler_at

__all__ = [
    "choose_source_key",
    "clip_seed",
    "evaluation_entries",
    "open_tasks",
    "sample_turn",
    "task_events",
]

log = logging.getLogger("leoma.sampler")

PRESENTATION_ORDER = "single-video benchmark"
REPLY_DECODES = 2
"""Miner replies read into memory and decoded at once, at most (the machine's cores, not the
miners): while they wait, answered replies sit in temporary files, so how many miners answer and
how large their replies are never sizes the validator's memory."""
TURN_OVER = "turn over"


# -- reading the own log ---------------------------------------------------------------------


def _own(ctx: ServiceContext, kinds: Sequence[str]) -> list[tuple[Any, Any]]:
    return [(row, decode_body(row.body, row.v)) for row in ctx.log.rows(kinds=list(kinds), origin=ctx.hotkey)]


def open_tasks(ctx: ServiceContext) -> list[TaskOpened]:
    """Own tasks that were opened and not closed, oldest first."""
    closed = {b.task_id for _, b in _own(ctx, ["task_closed"])}
    return [b for _, b in _own(ctx, ["task_opened"]) if b.task_id not in closed]


def task_events(ctx: ServiceContext, task_id: int) -> dict[str, dict[str, Any]]:
    """Own `responses`, `verdicts` and `judgefails` of one task, each by miner hotkey."""
    out: dict[str, dict[str, Any]] = {"responses": {}, "verdicts": {}, "judgefails": {}}
    slot = {"miner_responded": "responses", "verdict_recorded": "verdicts", "judge_failed": "judgefails"}
    # Only what followed the task's opening, through the kind index: not the whole own history.
    for row in ctx.log.rows_since_key(ctx.hotkey, f"task/{task_id}/opened", list(slot)):
        body = decode_body(row.body, row.v)
        if body.task_id == task_id:  # type: ignore[attr-defined]
            out[slot[row.kind]][body.miner] = body  # type: ignore[attr-defined]
    return out


def _latest_allowlist(ctx: ServiceContext) -> tuple[int, Any]:
    for row in ctx.log.rows(kinds=["allowlist_verified", "allowlist_rejected"], origin=ctx.hotkey,
                            descending=True, limit=1):
        return row.block, decode_body(row.body, row.v)
    return -1, None


async def current_allowlist(ctx: ServiceContext, block: int) -> AllowlistVerified | None:
    """The verified allowlist, re-read from chain and bucket every `allowlist_refresh_blocks`."""
    seen_at, body = _latest_allowlist(ctx)
    if body is None or block - seen_at >= ctx.consensus.rotation.allowlist_refresh_blocks:
        from leoma.services.checker import observe_allowlist

        fresh = await observe_allowlist(ctx, block)
        if fresh is not None:
            return fresh
        # A failed re-read keeps the last verified allowlist (the seed's rule).
        for row in ctx.log.rows(kinds=["allowlist_verified"], origin=ctx.hotkey, descending=True, limit=1):
            return decode_body(row.body, row.v)  # type: ignore[return-value]
        return None
    return body if isinstance(body, AllowlistVerified) else None


# -- choosing the clip -----------------------------------------------------------------------


def clip_seed(block_hash: str) -> bytes:
    """The task's seed: sha256 of the raw bytes of the rotation's first block hash."""
    text = block_hash[2:] if block_hash.startswith("0x") else block_hash
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = block_hash.encode()
    return hashlib.sha256(raw).digest()


def choose_source_key(keys: Sequence[str], seed: bytes) -> int:
    """Index of the first source video to try among the sorted candidate keys."""
    digest = hashlib.sha256(seed + b"/source").digest()
    return int.from_bytes(digest[:8], "big") % len(keys)


async def _candidates(ctx: ServiceContext) -> list[str]:
    v = ctx.consensus.video
    assert ctx.source is not None
    keys = [info.key async for info in ctx.source.list()
            if info.key.endswith(".mp4") and v.min_source_bytes < info.size < v.max_source_bytes]
    return sorted(keys)


async def _pick_clip(ctx: ServiceContext, seed: bytes) -> tuple[str, Any, bytes] | None:
    keys = await _candidates(ctx)
    if not keys:
        log.warning("the source bucket holds no candidate video")
        return None
    v = ctx.consensus.video
    start = choose_source_key(keys, seed)
    for i in range(len(keys)):
        key = keys[(start + i) % len(keys)]
        try:
            data = await ctx.source.get(key, max_bytes=v.max_source_bytes)  # type: ignore[union-attr]
            choice = await asyncio.to_thread(
                video.choose_clip, data, seed=seed, clip_seconds=v.clip_seconds,
                scene_threshold=float(fraction(v.scene_threshold)), margin=float(fraction(v.boundary_margin)),
                safe_offset=float(fraction(v.safe_start_offset)),
            )
        except (StorageError, VideoError) as exc:
            log.warning("source %s skipped: %s", key, exc)
            continue
        if choice is not None:
            return key, choice, data
    log.warning("no source video has a one-shot segment long enough")
    return None


# -- media ----------------------------------------------------------------------------------


async def _task_media(ctx: ServiceContext, opened: TaskOpened) -> tuple[bytes, bytes]:
    """The clip and first frame of a task: from memory, else the own bucket, else re-cut."""
    cache = ctx.state.setdefault("media", {})
    if opened.task_id in cache:
        return cache[opened.task_id]
    assert ctx.own is not None
    T = opened.task_id
    try:
        clip = await ctx.own.get(seedformat.original_clip_key(T))
        frame = await ctx.own.get(seedformat.first_frame_key(T))
    except StorageError:
        assert ctx.source is not None
        data = await ctx.source.get(opened.source_key, max_bytes=ctx.consensus.video.max_source_bytes)
        clip = await asyncio.to_thread(video.cut_clip, data, opened.clip_start_ms / 1000, opened.clip_ms / 1000)
        frame = await asyncio.to_thread(video.first_frame_png, clip)
    cache[T] = (clip, frame)
    return clip, frame


async def _put_once(ctx: ServiceContext, key: str, data: bytes, content_type: str | None = None) -> None:
    """Put `data` unless an object of the same size is already there (resumes re-upload nothing)."""
    assert ctx.own is not None
    info = await ctx.own.head(key)
    if info is not None and info.size == len(data):
        return
    await ctx.own.put(key, data, content_type=content_type)


# -- the steps ------------------------------------------------------------------------------


async def _open_task(ctx: ServiceContext, task_id: int, interval: int, step: int, block: int,
                     miners: tuple[str, ...]) -> TaskOpened | None:
    task_hash = await ctx.chain.block_hash(task_id * interval)
    seed = clip_seed(task_hash)
    picked = await _pick_clip(ctx, seed)
    if picked is None:
        return None
    key, choice, data = picked
    clip = await asyncio.to_thread(video.cut_clip, data, choice.start, choice.seconds)
    frame = await asyncio.to_thread(video.first_frame_png, clip)
    prompt = safe_text(await ctx.need_judge().describe(clip), max_chars=4000)  # AdapterError: nothing recorded, retried next poll
    opened = TaskOpened(
        task_id=task_id, interval=interval, sampler=ctx.hotkey, failover_step=step, block_hash=task_hash,
        source_key=key, clip_start_ms=round(choice.start * 1000), clip_ms=round(choice.seconds * 1000),
        prompt=prompt, prompt_model=ctx.consensus.judge.description_model,
        prompt_version=ctx.consensus.judge.describe_prompt, miners=miners,
    )
    ctx.log.append(opened, key=f"task/{task_id}/opened", block=block)
    ctx.state.setdefault("media", {})[task_id] = (clip, frame)
    ctx.state.setdefault("sources", {})[task_id] = choice
    log.info("task=%s block=%s opened: %s from %s, %d miners", task_id, block, f"{choice.start:.3f}s", key, len(miners))
    return opened


def _latest_checks(ctx: ServiceContext) -> dict[str, MinerChecked]:
    view = MinersView.fold(ctx.log.rows(kinds=list(MinersView.KINDS), origin=ctx.hotkey), own=ctx.hotkey,
                           netuid=ctx.netuid)
    return view.latest_checks()


def reply_deadline_block(opened_block: int, end: int, share: str) -> int:
    """The block by which miners must have answered: `share` of the turn left when the task opened.

    What remains after it is the judge's time, so a slow miner can cost only itself.
    """
    left = max(0, end - opened_block)
    return opened_block + max(1, math.ceil(left * fraction(share)))


async def _call_miners(ctx: ServiceContext, opened: TaskOpened, frame: bytes, block: int,
                       deadline_block: int | None = None) -> None:
    """Call every miner that has not answered; whoever has not answered by `deadline_block` is a `timeout`."""
    T = opened.task_id
    done = task_events(ctx, T)["responses"]
    pending = [m for m in opened.miners if m not in done]
    if not pending:
        return
    checks = _latest_checks(ctx)
    sem = asyncio.Semaphore(ctx.settings.max_concurrent_miners)
    decodes = asyncio.Semaphore(REPLY_DECODES)
    source = await _source_hashes(ctx, opened)
    image = await asyncio.to_thread(gates.conditioning_gray, frame)
    arrived: set[str] = set()  # answered before the deadline: judged even if their decode waits past it

    async def one(miner: str) -> None:
        async with sem:
            check = checks.get(miner)
            info = await ctx.chutes.chute_info(check.chute_id) if check and check.chute_id else None
            if info is None:
                reply_body = MinerResponded(task_id=T, miner=miner, status="failed", failure_class="infra",
                                            detail="chute not available (no chute info)")
            else:
                reply = await ctx.chutes.generate(info, opened.prompt, frame, timeout=ctx.settings.request_timeout,
                                                  spooled=True)
        if info is not None:
            arrived.add(miner)
            async with decodes:
                reply = await ctx.chutes.open_reply(reply)
                reply_body = await _record_reply(ctx, T, miner, reply, image, source)
                del reply  # the body goes before the next decode starts
                _return_freed_memory()
        ctx.log.append(reply_body, key=f"response/{T}/{miner}", block=block)
        log.info("task=%s miner=%s %s %s %s %s", T, miner[:12], reply_body.status, reply_body.failure_class,
                 reply_body.reason, reply_body.detail[:120])

    tasks = {m: asyncio.create_task(one(m)) for m in pending}
    poll = max(0.05, min(1.0, ctx.settings.sampler_poll_interval))
    try:
        while True:
            _, running = await asyncio.wait(tasks.values(), timeout=poll)
            if not running:
                break
            if deadline_block is not None and (await ctx.chain.head())[0] >= deadline_block:
                break
    finally:
        late = [m for m, t in tasks.items() if not t.done() and m not in arrived]
        for m in late:
            tasks[m].cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    for m, t in tasks.items():
        if not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    answered = task_events(ctx, T)["responses"]
    for m in late:
        if m in answered:
            continue
        body = MinerResponded(task_id=T, miner=m, status="failed", failure_class="miner", reason="timeout",
                              detail=f"no complete reply by the turn's reply deadline (block {deadline_block})")
        ctx.log.append(body, key=f"response/{T}/{m}", block=block)
        log.info("task=%s miner=%s timeout at the reply deadline", T, m[:12])


async def _source_hashes(ctx: ServiceContext, opened: TaskOpened) -> tuple[int, ...]:
    cache = ctx.state.setdefault("source_hashes", {})
    if opened.task_id not in cache:
        clip, _ = await _task_media(ctx, opened)
        try:
            cache[opened.task_id] = await asyncio.to_thread(gates.clip_hashes, clip)
        except Exception as exc:  # our own clip: never the miners' fault; the source check is skipped
            log.warning("task=%s source clip hashes failed: %s", opened.task_id, exc)
            cache[opened.task_id] = ()
    return cache[opened.task_id]  # type: ignore[no-any-return]


async def _record_reply(ctx: ServiceContext, T: int, miner: str, reply: Any, frame: Any = b"",
                        source: tuple[int, ...] = ()) -> MinerResponded:
    if reply.status != "ok":
        return MinerResponded(task_id=T, miner=miner, status="failed", failure_class=reply.failure or "miner",
                              detail=safe_text(reply.detail, max_chars=500), latency_ms=reply.latency_ms,
                              sha256=reply.sha256, width=reply.width, height=reply.height,
                              reason=getattr(reply, "reason", "") if (reply.failure or "miner") == "miner" else "")
    g = ctx.consensus.gates
    measured = await asyncio.to_thread(gates.measure, reply.video, frame, hash_frames=g.hash_frames,
                                       max_frames=ctx.consensus.video.max_frames, source=source)
    reason = gate_reason(measured, ctx.consensus)
    common: dict[str, Any] = {"task_id": T, "miner": miner, "latency_ms": reply.latency_ms, "sha256": reply.sha256,
                              "width": reply.width, "height": reply.height, "frames": measured.frames,
                              "gates": measured}
    if reason:
        # Refused before the judge: no judge call, no stored video; the verdict says which gate.
        return MinerResponded(**common, status="failed", failure_class="miner", reason=reason,
                              detail=_gate_detail(reason, measured))
    key = seedformat.generated_video_key(T, miner)
    try:
        await ctx.own.put(key, reply.video, content_type="video/mp4")  # type: ignore[union-attr]
    except StorageError as exc:
        # Our bucket failed, not the miner: recorded as infra so the miner is neither blamed nor re-called.
        return MinerResponded(task_id=T, miner=miner, status="failed", failure_class="infra",
                              detail=safe_text(f"could not store the video: {exc}", max_chars=500),
                              latency_ms=reply.latency_ms, sha256=reply.sha256, width=reply.width, height=reply.height)
    _keep_video(ctx, T, miner, reply.video)
    return MinerResponded(**common, status="accepted", object_key=key)


VIDEO_CACHE_BYTES = 16_000_000
"""Accepted videos kept in memory for the judge, at most; the rest are read back from the bucket,
so 64 miners' videos never sit in memory at once."""


def _keep_video(ctx: ServiceContext, T: int, miner: str, data: bytes) -> None:
    cache = ctx.state.setdefault("videos", {})
    if sum(len(v) for v in cache.values()) + len(data) <= VIDEO_CACHE_BYTES:
        cache[(T, miner)] = data


def _return_freed_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise, after the many-megabyte
    buffers of a decode or a judge request; RSS would then track the turn's history, not its need)."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc: nothing to do
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None

JUDGE_VIDEO_BYTES = 16_000_000
"""Bytes of videos on their way to the judge at once, at most (a larger video goes alone): the
judge's client holds several encoded copies of each, so this, not the miners' count or the size
of their videos, bounds what judging costs in memory."""


class ByteBudget:
    """At most `limit` bytes held at once by the `hold`s inside it; a hold larger than the whole
    budget waits until it is alone, so every hold gets its turn."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        """Wait until `size` bytes fit (or nothing else is held), hold them for the block."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
            self.peak = max(self.peak, self.held)
        try:
            yield
        finally:
            async with self._changed:
                self.held -= size
                self._changed.notify_all()


def _gate_detail(reason: str, m: Any) -> str:
    detail = {
        "gate:decode": f"does not decode completely: {m.decode_error}",
        "gate:codec": f"codec {m.codec!r}",
        "gate:frame_count": f"{m.frames} frames",
        "gate:fps": f"{m.fps_milli / 1000:g} fps",
        "gate:duration": f"{m.duration_ms} ms",
        "gate:resolution": f"{m.width}x{m.height}",
        "gate:first_frame": f"first frame {m.first_frame_psnr_cdb / 100:.2f} dB from the conditioning image",
        "gate:frozen": f"differs from a frozen first frame by only {m.motion_c / 100:.2f} gray levels",
        "gate:hard_cut": f"hard cut (scene score {m.max_cut_milli / 1000:.3f})",
        "returned_source_clip": f"later frames {m.source_distance} bits from the source clip",
    }.get(reason, reason)
    return safe_text(f"{reason}: {detail}", max_chars=500)


async def _write_metadata(ctx: ServiceContext, opened: TaskOpened, at: int) -> None:
    T = opened.task_id
    key = seedformat.metadata_key(T)
    assert ctx.own is not None
    if await ctx.own.head(key) is not None:
        return
    responses = task_events(ctx, T)["responses"]
    accepted = sorted(m for m, r in responses.items() if r.status == "accepted")
    choice = ctx.state.get("sources", {}).get(T)
    source: dict[str, Any] = {
        "bucket": ctx.settings.source_bucket_name, "key": opened.source_key,
        "clip_start_seconds": opened.clip_start_ms / 1000, "clip_duration_seconds": opened.clip_ms // 1000,
        "scene_detection_threshold": float(fraction(ctx.consensus.video.scene_threshold)),
    }
    if choice is not None:
        source |= {"full_duration_seconds": choice.duration, "one_shot_segment_start_seconds": choice.segment_start,
                   "one_shot_segment_end_seconds": choice.segment_end, "scene_cut_count": len(choice.cuts)}
    meta = {
        "task_id": T,
        "created_at": datetime.datetime.fromtimestamp(at).isoformat(),
        "source": source,
        "prompt": {"model": opened.prompt_model, "text": opened.prompt, "description_source": "full_clip_video"},
        "miners": accepted,
        "miner_latencies_ms": {m: responses[m].latency_ms for m in accepted},
        "block_hash": opened.block_hash,
    }
    await ctx.own.put(key, json.dumps(meta, indent=2).encode(), content_type="application/json")


GATES_JUDGE = "leoma-gates"
"""The `judge_model` of a verdict reached without the judge (a miner fault, a gate, a copy)."""


def _fail_verdict(ctx: ServiceContext, T: int, miner: str, reason: str, detail: str, block: int) -> None:
    body = VerdictRecorded(task_id=T, miner=miner, passed=False, overall=0, judge_model=GATES_JUDGE,
                           prompt_version=ctx.consensus.gates.version, reason=reason,
                           reasoning=safe_text(detail if detail.startswith(reason) else f"{reason}: {detail}",
                                               max_chars=2000))
    ctx.log.append(body, key=f"verdict/{T}/{miner}", block=block)
    log.info("task=%s miner=%s failed without a judge call: %s", T, miner[:12], reason)


def _copy_verdicts(ctx: ServiceContext, T: int, events: dict[str, dict[str, Any]], block: int) -> set[str]:
    """Fail the later committer of two near-identical outputs; returns the miners failed so."""
    checks = _latest_checks(ctx)
    candidates = [
        CopyCandidate(miner=m, uid=checks[m].uid if m in checks else -1,
                      commit_block=checks[m].commit_block if m in checks else 1 << 62, hashes=r.gates.hashes)
        for m, r in sorted(events["responses"].items())
        if r.status == "accepted" and r.gates is not None and r.gates.hashes
    ]
    found = copies(candidates, ctx.consensus.gates.copy_max_bits)
    for miner, (uid, distance) in sorted(found.items()):
        if miner not in events["verdicts"] and miner not in events["judgefails"]:
            _fail_verdict(ctx, T, miner, f"copied_output:{uid}",
                          f"output within {distance} bits of uid {uid}'s, an earlier committer", block)
    return set(found)


async def _evaluate(ctx: ServiceContext, opened: TaskOpened, frame: bytes, block: int) -> None:
    T = opened.task_id
    events = task_events(ctx, T)
    # Miner faults (a gate, a timeout, an error of its chute) fail the verdict without a judge call.
    for m, r in sorted(events["responses"].items()):
        if r.status == "failed" and r.failure_class == "miner" and m not in events["verdicts"]:
            _fail_verdict(ctx, T, m, r.reason or "miner_error", r.detail, block)
    copied = _copy_verdicts(ctx, T, events, block)
    todo = [m for m, r in sorted(events["responses"].items())
            if r.status == "accepted" and m not in events["verdicts"] and m not in events["judgefails"]
            and m not in copied]
    j = ctx.consensus.judge
    sem = asyncio.Semaphore(4)
    budget = ByteBudget(JUDGE_VIDEO_BYTES)

    async def one(miner: str) -> None:
        async with sem:
            clip = ctx.state.get("videos", {}).pop((T, miner), None)
            key = events["responses"][miner].object_key
            if clip is not None:
                size = len(clip)
            else:
                info = await ctx.own.head(key)  # type: ignore[union-attr]
                size = info.size if info is not None else 0
            async with budget.hold(size):
                if clip is None:
                    clip = await ctx.own.get(key)  # type: ignore[union-attr]
                result = await ctx.need_judge().evaluate(frame, opened.prompt, clip)
                del clip  # the video and the judge request's copies of it go before the next one
                _return_freed_memory()
            if hasattr(result, "passed"):
                body: Any = VerdictRecorded(
                    task_id=T, miner=miner, passed=result.passed, overall=result.overall_score,
                    confidence=result.confidence, aspects={safe_text(k, max_chars=64): v
                                                           for k, v in dict(result.aspect_scores).items()},
                    judge_model=j.evaluation_model, prompt_version=safe_text(result.prompt_version, max_chars=64),
                    reasoning=safe_text(result.reasoning, max_chars=2000),
                    major_issues=tuple(safe_text(s, max_chars=300) for s in result.major_issues),
                )
                ctx.log.append(body, key=f"verdict/{T}/{miner}", block=block)
            else:
                body = JudgeFailed(task_id=T, miner=miner, judge_model=j.evaluation_model,
                                   prompt_version=safe_text(result.prompt_version, max_chars=64),
                                   attempts=result.attempts, reason=safe_text(result.reason, max_chars=500))
                ctx.log.append(body, key=f"judgefail/{T}/{miner}", block=block)
                log.warning("task=%s miner=%s judge failed: %s", T, miner[:12], result.reason[:200])

    await asyncio.gather(*(one(m) for m in todo))


def evaluation_entries(verdicts: dict[str, VerdictRecorded], responses: dict[str, MinerResponded]) -> list[dict[str, Any]]:
    """The seed's verdict-file entries (§5.6), sorted by miner hotkey (the seed's order was hash order)."""
    entries = []
    for miner in sorted(verdicts):
        v = verdicts[miner]
        aspects = json.dumps(v.aspects, separators=(",", ":"))
        issues = list(v.major_issues[:20])
        entries.append({
            "hotkey": miner,
            "passed": v.passed,
            "status": "passed" if v.passed else "failed",
            "confidence": v.confidence,
            "reasoning": f"{v.reasoning} | overall_score={v.overall} | aspect_scores={aspects}",
            "latency_ms": responses[miner].latency_ms if miner in responses else None,
            "original_artifacts": "[]",
            "generated_artifacts": json.dumps({
                "major_issues": issues, "strengths": [], "aspect_scores": v.aspects,
                "overall_score": v.overall, "raw_generated_artifacts": issues,
            }),
            "presentation_order": PRESENTATION_ORDER,
        })
    return entries


async def _publish(ctx: ServiceContext, opened: TaskOpened) -> tuple[str, str, list[dict[str, Any]], str]:
    """Publish the signed verdict file once; returns (key, sha256, entries, signature)."""
    T = opened.task_id
    events = task_events(ctx, T)
    entries = evaluation_entries(events["verdicts"], events["responses"])
    if not entries:
        return "", "", [], ""
    assert ctx.own is not None
    key = seedformat.verdict_key(T, ctx.hotkey)
    if await ctx.own.head(key) is None:
        data = seedformat.sign_verdict_file(entries, ctx.signer)
        try:
            await ctx.own.put(key, data, content_type=seedformat.VERDICT_CONTENT_TYPE, if_absent=True)
        except ObjectExists:
            pass  # published by an earlier run of this task: the first file stays
    data = await ctx.own.get(key)
    signature = str(json.loads(data).get("signature", ""))
    return key, hashlib.sha256(data).hexdigest(), entries, signature


async def _report(ctx: ServiceContext, opened: TaskOpened, entries: list[dict[str, Any]], signature: str) -> None:
    from leoma.services.reporter import report_samples

    samples = [{
        "task_id": opened.task_id, "miner_hotkey": e["hotkey"], "s3_bucket": ctx.settings.own_bucket_name,
        "s3_prefix": str(opened.task_id), "passed": e["passed"], "prompt": opened.prompt,
        "confidence": e["confidence"], "reasoning": e["reasoning"], "latency_ms": e["latency_ms"],
        "original_artifacts": e["original_artifacts"], "generated_artifacts": e["generated_artifacts"],
        "presentation_order": e["presentation_order"],
    } for e in entries]
    await report_samples(ctx, opened.task_id, samples, signature)


async def _run_task(ctx: ServiceContext, opened: TaskOpened, block: int) -> TaskClosed:
    T = opened.task_id
    end = (T + 1) * opened.interval
    stored = ctx.log.get(ctx.hotkey, f"task/{T}/opened")
    opened_at = stored.at if stored is not None else 0
    clip, frame = await _task_media(ctx, opened)
    await _put_once(ctx, seedformat.original_clip_key(T), clip, "video/mp4")
    await _put_once(ctx, seedformat.first_frame_key(T), frame, "image/png")
    turn_over = block >= end
    called = False
    if not turn_over:
        opened_block = stored.block if stored is not None else block
        deadline = reply_deadline_block(opened_block, end, ctx.consensus.gates.reply_deadline_share)
        await _call_miners(ctx, opened, frame, block, deadline)
        called = True
        block = (await ctx.chain.head())[0]
    await _write_metadata(ctx, opened, opened_at)
    if called:
        # Whoever answered by the reply deadline is judged, even when judging runs past the turn:
        # one slow miner never costs the others their verdicts.
        await _evaluate(ctx, opened, frame, block)
    key, digest, entries, signature = await _publish(ctx, opened)
    if entries:
        await _report(ctx, opened, entries, signature)
    closed = TaskClosed(
        task_id=T, verdict_key=key, verdict_sha256=digest, evaluated=len(entries),
        passed=sum(1 for e in entries if e["passed"]),
        reason=TURN_OVER if turn_over else ("" if entries else "no verdicts"),
    )
    event = ctx.log.append(closed, key=f"task/{T}/closed", block=block)
    for cache in ("media", "sources", "source_hashes"):
        ctx.state.get(cache, {}).pop(T, None)
    for k in [k for k in ctx.state.get("videos", {}) if k[0] == T]:
        del ctx.state["videos"][k]
    log.info("task=%s closed: %d evaluated, %d passed %s", T, closed.evaluated, closed.passed, closed.reason)
    return event.payload()  # type: ignore[return-value]


async def _produced_by_earlier(ctx: ServiceContext, validators: Sequence[str], task_id: int, step: int) -> bool:
    """Whether a validator ahead of us in this task's failover ring already opened or published it."""
    for k in range(step):
        earlier = validators[(task_id + k) % len(validators)]
        if ctx.log.get(earlier, f"task/{task_id}/opened") is not None:
            return True
        store = ctx.peers.get(earlier)
        if store is not None:
            try:
                if await store.head(seedformat.verdict_key(task_id, earlier)) is not None:
                    return True
            except StorageError as exc:  # the seed's rule: unreadable means not produced
                log.debug("peer %s unreadable: %s", earlier[:12], exc)
    return False


async def sample_turn(ctx: ServiceContext) -> TaskClosed | None:
    """Do this validator's sampling work at the current block; the closed task, or None.

    Resumes an own open task first. Otherwise opens task `block // interval` when the rotation
    says this validator is its rightful sampler now and nobody ahead of it produced it.
    """
    block, _ = await ctx.chain.head()
    pending = open_tasks(ctx)
    if pending:
        ctx.settings.require("GEMINI_API_KEY")
        if ctx.own is None:
            ctx.settings.require("LEOMA_OWN_BUCKET_URL")
        return await _run_task(ctx, pending[0], block)
    allow = await current_allowlist(ctx, block)
    if allow is None:
        log.info("block=%s no verified allowlist: not sampling", block)
        return None
    validators, interval = tuple(allow.validators), allow.interval
    task_id = block // interval
    grace = ctx.consensus.grace_blocks(interval)
    if rightful_sampler_at(validators, interval, grace, task_id, block) != ctx.hotkey:
        return None
    if ctx.log.get(ctx.hotkey, f"task/{task_id}/opened") is not None:
        return None  # already produced (and closed) by us
    step = failover_step_at(validators, interval, grace, task_id, block)
    if step > 0 and await _produced_by_earlier(ctx, validators, task_id, step):
        return None
    if ctx.judge is None:
        ctx.settings.require("GEMINI_API_KEY")
    if ctx.own is None:
        ctx.settings.require("LEOMA_OWN_BUCKET_URL")
    if ctx.source is None:
        ctx.settings.require("LEOMA_SOURCE_URL")
    view = MinersView.fold(ctx.log.rows(kinds=list(MinersView.KINDS), origin=ctx.hotkey), own=ctx.hotkey,
                           netuid=ctx.netuid)
    miners = view.valid_miners()
    if not miners:
        log.warning("task=%s block=%s no valid miners: not opening the task", task_id, block)
        return None
    try:
        opened = await _open_task(ctx, task_id, interval, step, block, tuple(miners))
    except AdapterError as exc:
        log.warning("task=%s could not be opened: %s", task_id, exc)
        return None
    if opened is None:
        return None
    return await _run_task(ctx, opened, block)
