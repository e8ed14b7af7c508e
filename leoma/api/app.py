"""The owner's API: starlette routes over `ApiState`, signed writes recorded as events.

`ApiService` owns the API's `EventLog`, the fold (`ApiState`), the signature `Verifier` and the
mirror `Feeder`; `create_app(service)` builds the starlette app with the seed's routes
(seed-spec §7.3), CORS, a body-size limit and JSON errors (`{"detail": "..."}`).

Writes become events of the API's own origin and nothing else: `admin_acted` for validator and
blacklist changes (so the admin history is auditable) and `miner_report_received` for the
validators' miner reports. Samples POSTed by validators are checked and acknowledged, and the
validator's mirror (which holds the same verdicts, signed into its hash chain) is imported at
once: the log never holds a second, unchained copy of a verdict.

Beyond the seed's routes the dashboard has its own pages (`/task/T`, `/miner/SS58`) and reads
(`/tasks/T/view`, `/miners/SS58/history`, `/epochs/agreement`, built by `pages`), and
`/media/<validator>/<key>` streams directory-bucket objects with HTTP ranges (`media`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from leoma import __version__
from leoma.api import media, pages, registry, views
from leoma.api.auth import AuthError, Verifier, is_ss58
from leoma.api.settings import ApiSettings
from leoma.api.state import (
    BLACKLIST_ADD, BLACKLIST_REMOVE, ROTATION_INTERVAL, VALIDATOR_ADD, VALIDATOR_REMOVE, ApiState,
)
from leoma.consensus import Consensus
from leoma.events import AdminActed, MinerChecked, MinerReportReceived
from leoma.log import Draft, EventLog
from leoma.storage import DirectoryStore

__all__ = ["ApiService", "create_app", "STATIC_DIR"]

log = logging.getLogger("leoma.api")
STATIC_DIR = Path(__file__).with_name("static")
_enc = msgspec.json.Encoder()
MAX_REPORT_MINERS = 2048
MAX_BATCH = 100
REPORT_CHUNK = 32  # miners per event: keeps each body well under the log's 64 KiB cap


class HttpError(Exception):
    """A request refused with `status` and a message for the caller."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def json_response(value: Any, status: int = 200) -> Response:
    """`value` as JSON (msgspec)."""
    return Response(_enc.encode(value), status_code=status, media_type="application/json")


# -- request bodies (the seed's pydantic models, as msgspec structs) ---------------------------

Text64 = Annotated[str, msgspec.Meta(max_length=64)]
Text256 = Annotated[str, msgspec.Meta(max_length=256)]


class MinerReportEntry(msgspec.Struct, kw_only=True):
    uid: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
    miner_hotkey: Text64
    model_name: Text256 | None = None
    model_revision: Text64 | None = None
    model_hash: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    chute_id: Text256 | None = None
    chute_slug: Text256 | None = None
    block: Annotated[int, msgspec.Meta(ge=0)] | None = None
    is_valid: bool = False
    invalid_reason: Text256 | None = None


class MinerReport(msgspec.Struct, kw_only=True):
    miners: list[MinerReportEntry]


class SampleSubmission(msgspec.Struct, kw_only=True):
    task_id: Annotated[int, msgspec.Meta(ge=0)]
    miner_hotkey: Annotated[str, msgspec.Meta(max_length=48)]
    prompt: Annotated[str, msgspec.Meta(max_length=4096)]
    s3_bucket: Annotated[str, msgspec.Meta(max_length=255)] = ""
    s3_prefix: Annotated[str, msgspec.Meta(max_length=512)] = ""
    passed: bool
    confidence: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    reasoning: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    latency_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    original_artifacts: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    generated_artifacts: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    presentation_order: Text64 | None = None
    evaluation_signature: Text256 | None = None


class SampleBatch(msgspec.Struct, kw_only=True):
    samples: list[SampleSubmission]
    signature: Text256 | None = None


class BlacklistAdd(msgspec.Struct, kw_only=True):
    hotkey: Text64
    reason: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class ValidatorAdd(msgspec.Struct, kw_only=True):
    hotkey: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    uid: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    stake: Annotated[float, msgspec.Meta(ge=0)] | None = None


class IntervalSet(msgspec.Struct, kw_only=True):
    interval: Annotated[int, msgspec.Meta(gt=0, le=10_000_000)]


def decode(body: bytes, kind: type[Any]) -> Any:
    """Decode a JSON body into `kind`; 422 with msgspec's message (names the field) otherwise."""
    if not body.strip():
        raise HttpError(422, "Request body is empty: a JSON object is required")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise HttpError(422, f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise HttpError(422, f"Malformed JSON: {exc}") from None


# -- the service ---------------------------------------------------------------------------


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


# -- helpers -------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes whatever Content-Length claimed."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, "Request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def hotkey_param(request: Request, name: str = "hotkey") -> str:
    value = request.path_params[name]
    if not is_ss58(value):
        raise HttpError(400, "Invalid SS58 address format")
    return value


def int_query(request: Request, name: str, default: int | None, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise HttpError(422, f"Query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(422, f"Query parameter {name!r} must be a whole number, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise HttpError(422, f"Query parameter {name!r} must be between {lo} and {hi}, got {value}")
    return value


def svc(request: Request) -> ApiService:
    return request.app.state.service  # type: ignore[no-any-return]


async def signed(request: Request, *, admin: bool = False) -> tuple[str, bytes]:
    """Authenticate a request; returns the signer and the raw body."""
    service = svc(request)
    body = await read_body(request, service.settings.max_body_size)
    try:
        return service.verifier.verify(request.headers, body, admin=admin), body
    except AuthError as exc:
        raise HttpError(exc.status, exc.detail) from None


def _admin_event(service: ApiService, admin: str, request: Request, body: AdminActed) -> None:
    # The signature is unique (replays are refused), so it names the action's event.
    sig = request.headers.get("X-Signature", "")[-32:]
    key = f"admin/{body.action}/{body.target}/{request.headers.get('X-Timestamp', '')}/{sig}"
    service.log.append(body, key=key[:512], block=service.refresh().head_block())


# -- read routes ---------------------------------------------------------------------------


async def health(request: Request) -> Response:
    service = svc(request)
    try:
        state = service.refresh()
        ok = True
    except Exception:
        state, ok = service.state, False
    synced = bool(state.posted_reports or state.mirror_checks)
    last = service.feeder.last_sync if service.feeder is not None and service.feeder.last_sync else None
    return json_response({"status": "healthy" if ok else "degraded", "version": __version__, "database": ok,
                          "metagraph_synced": synced, "last_sync": views.iso(int(last)) if last else None,
                          "events": state.last_seq})


def _consensus(service: ApiService) -> dict[str, Any]:
    return views.consensus(service.refresh(), service.now(), service.settings.stale_seconds)


async def miners_list(request: Request) -> Response:
    return json_response(views.miners_list(_consensus(svc(request))))


async def miners_valid(request: Request) -> Response:
    await signed(request)
    return json_response(views.miners_list(_consensus(svc(request)), valid_only=True))


async def miners_all(request: Request) -> Response:
    await signed(request)
    return json_response(views.miners_list(_consensus(svc(request))))


async def miners_active(request: Request) -> Response:
    service = svc(request)
    rows = _consensus(service)
    return json_response(views.miners_active(service.state, rows, service.state.decision()))


async def miner_by_uid(request: Request) -> Response:
    uid = request.path_params["uid"]
    found = next((m for m in _consensus(svc(request)).values() if m.uid == uid), None)
    if found is None:
        raise HttpError(404, "Miner not found")
    return json_response(views.miner_response(found))


def _miner(request: Request) -> Response:
    hotkey = hotkey_param(request)
    found = _consensus(svc(request)).get(hotkey)
    if found is None:
        raise HttpError(404, "Miner not found")
    return json_response(views.miner_response(found))


async def miner_info(request: Request) -> Response:
    return _miner(request)


async def miner_signed(request: Request) -> Response:
    hotkey_param(request)
    await signed(request)
    return _miner(request)


async def miner_tasks(request: Request) -> Response:
    hotkey = hotkey_param(request)
    return json_response(views.miner_tasks(svc(request).refresh(), hotkey))


async def tasks_query(request: Request) -> Response:
    hotkey = request.query_params.get("miner_hotkey")
    if hotkey is None:
        raise HttpError(422, "Query parameter 'miner_hotkey' is required")
    if not is_ss58(hotkey):
        raise HttpError(400, "Invalid SS58 address format")
    return json_response(views.miner_tasks(svc(request).refresh(), hotkey))


async def tasks_recent(request: Request) -> Response:
    service = svc(request)
    limit = int_query(request, "limit", 10, 1, 100)
    state = service.refresh()
    out = []
    sign = service.media_for(request)
    for task_id in views.recent_tasks(state, limit):
        detail = await views.task_detail(state, task_id, sign)
        if detail is None:
            continue
        rec = views.task_record(state, task_id)
        for m in detail["miners"]:
            m["generated_video_url"] = (await sign(rec.origin, views.generated_video_key(task_id, m["miner_hotkey"]))
                                        if rec is not None else None)
        out.append(detail)
    return json_response(out)


async def task_detail(request: Request) -> Response:
    service = svc(request)
    detail = await views.task_detail(service.refresh(), request.path_params["task_id"], service.media_for(request))
    if detail is None:
        raise HttpError(404, "Task not found")
    return json_response(detail)


async def task_miner_detail(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request)
    detail = await views.task_miner_detail(service.refresh(), request.path_params["task_id"], hotkey,
                                           service.media_for(request))
    if detail is None:
        raise HttpError(404, "No evaluations for this task/miner")
    return json_response(detail)


async def samples_list(request: Request) -> Response:
    limit = int_query(request, "limit", 200, 1, 500)
    return json_response(views.samples(svc(request).refresh(), limit=limit))


async def samples_task(request: Request) -> Response:
    await signed(request)
    validator = request.query_params.get("validator_hotkey")
    if validator is None:
        raise HttpError(422, "Query parameter 'validator_hotkey' is required")
    if not is_ss58(validator):
        raise HttpError(400, "Invalid SS58 address format")
    task_id = int_query(request, "task_id", None, 0, 2**62)
    return json_response(views.samples(svc(request).refresh(), validator=validator, task_id=task_id, limit=10_000))


async def samples_validator(request: Request) -> Response:
    hotkey = hotkey_param(request)
    await signed(request)
    limit = int_query(request, "limit", 100, 1, 500)
    return json_response(views.samples(svc(request).refresh(), validator=hotkey, limit=limit))


async def samples_miner(request: Request) -> Response:
    hotkey = hotkey_param(request)
    await signed(request)
    limit = int_query(request, "limit", 100, 1, 500)
    return json_response(views.samples(svc(request).refresh(), miner=hotkey, limit=limit))


def _decision(service: ApiService) -> tuple[Any, int]:
    state = service.refresh()
    dec = state.decision()
    updated = state.origins[dec.reference].last_at if dec and dec.reference in state.origins else 0
    return dec, updated


async def scores(request: Request) -> Response:
    dec, updated = _decision(svc(request))
    return json_response(views.scores(dec, updated or svc(request).now()))


async def scores_validators(request: Request) -> Response:
    dec, updated = _decision(svc(request))
    return json_response(views.scores_validators(dec, updated))


async def scores_miner(request: Request) -> Response:
    hotkey = hotkey_param(request)
    dec, updated = _decision(svc(request))
    found = views.scores_miner(dec, hotkey, updated)
    if found is None:
        raise HttpError(404, "No scores for this miner in the current window")
    return json_response(found)


async def scores_validator(request: Request) -> Response:
    hotkey = hotkey_param(request)
    dec, updated = _decision(svc(request))
    found = views.scores_validator(dec, hotkey, updated)
    if found is None:
        raise HttpError(404, "No scores from this validator in the current window")
    return json_response(found)


async def scores_rank(request: Request) -> Response:
    dec, _ = _decision(svc(request))
    return json_response(views.scores_rank(dec))


async def scores_stats(request: Request) -> Response:
    service = svc(request)
    dec, _ = _decision(service)
    return json_response(views.scores_stats(service.state, dec))


async def scores_history(request: Request) -> Response:
    service = svc(request)
    state = service.refresh()
    return json_response(views.lead_history(state, state.reference(), int_query(request, "limit", 100, 1, 1000)))


async def epochs(request: Request) -> Response:
    return json_response(views.epochs(svc(request).refresh()))


async def weights(request: Request) -> Response:
    dec, _ = _decision(svc(request))
    return json_response(views.weights(dec))


async def blacklist(request: Request) -> Response:
    return json_response(views.blacklist(svc(request).refresh()))


async def blacklist_miners(request: Request) -> Response:
    return json_response(sorted(svc(request).refresh().blacklist))


async def blacklist_entry(request: Request) -> Response:
    hotkey = hotkey_param(request)
    entry = next((e for e in views.blacklist(svc(request).refresh()) if e["hotkey"] == hotkey), None)
    if entry is None:
        raise HttpError(404, "Miner not blacklisted")
    return json_response(entry)


async def validators_list(request: Request) -> Response:
    service = svc(request)
    state = service.refresh()
    return json_response(views.validators(state, state.decision(), service.now()))


async def validator_detail(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request)
    state = service.refresh()
    if hotkey not in views.validator_hotkeys(state):
        # The seed answered unknown hotkeys with an unregistered card; say so explicitly too.
        card = views.validator_detail(state, hotkey, state.decision(), service.now())
        card["known"] = False
        return json_response(card)
    card = views.validator_detail(state, hotkey, state.decision(), service.now())
    card["known"] = True
    if service.feeder is not None and hotkey in service.feeder.last:
        card["mirror"]["last_sync"] = msgspec.to_builtins(service.feeder.last[hotkey])
    return json_response(card)


async def overview(request: Request) -> Response:
    service = svc(request)
    rows = _consensus(service)
    return json_response(views.overview(service.state, rows, service.state.decision(),
                                        service.settings.rotation_interval))


async def admin_history(request: Request) -> Response:
    limit = int_query(request, "limit", 200, 1, 5000)
    return json_response(views.admin_history(svc(request).refresh(), limit))


# -- write routes --------------------------------------------------------------------------


def _check(entry: MinerReportEntry, i: int) -> MinerChecked:
    if not is_ss58(entry.miner_hotkey):
        raise HttpError(422, f"miners[{i}].miner_hotkey: Invalid SS58 address format")
    return MinerChecked(
        hotkey=entry.miner_hotkey, uid=entry.uid, commit_block=entry.block or 0, model_name=entry.model_name or "",
        model_revision=entry.model_revision or "", model_hash=entry.model_hash or "", chute_id=entry.chute_id or "",
        chute_slug=entry.chute_slug or "", valid=entry.is_valid, invalid_reason=entry.invalid_reason or "",
    )


async def miners_report(request: Request) -> Response:
    service = svc(request)
    validator, body = await signed(request)
    report = decode(body, MinerReport)
    if len(report.miners) > MAX_REPORT_MINERS:
        raise HttpError(400, f"Too many miners (max {MAX_REPORT_MINERS})")
    checks = [_check(e, i) for i, e in enumerate(report.miners)]
    # One report may span several events; they share a digest so the fold can merge the parts.
    digest = hashlib.sha256(body + request.headers.get("X-Timestamp", "").encode()).hexdigest()[:16]
    chunks = [checks[i:i + REPORT_CHUNK] for i in range(0, len(checks), REPORT_CHUNK)] or [[]]
    block = service.refresh().head_block()
    drafts = [Draft(f"report/{validator}/{digest}/{n + 1}of{len(chunks)}", block,
                    MinerReportReceived(validator=validator, miners=tuple(chunk)))
              for n, chunk in enumerate(chunks)]
    service.log.append_many(drafts)
    return json_response({"reported": len(checks)})


def _sample_ack(state: ApiState, validator: str, s: SampleSubmission) -> dict[str, Any]:
    rec = state.tasks.get(s.task_id, {}).get(validator)
    held = rec.verdicts.get(s.miner_hotkey) if rec else None
    return {"id": held[3] if held else None, "task_id": s.task_id, "validator_hotkey": validator,
            "miner_hotkey": s.miner_hotkey, "prompt": s.prompt, "passed": s.passed, "confidence": s.confidence,
            "reasoning": s.reasoning, "evaluated_at": views.iso(held[1]) if held else None,
            "latency_ms": s.latency_ms}


def _check_samples(items: list[SampleSubmission]) -> None:
    for i, s in enumerate(items):
        if not is_ss58(s.miner_hotkey):
            raise HttpError(422, f"samples[{i}].miner_hotkey: Invalid SS58 address format")


async def samples_post(request: Request) -> Response:
    service = svc(request)
    validator, body = await signed(request)
    item = decode(body, SampleSubmission)
    _check_samples([item])
    service.nudge(validator)
    return json_response(_sample_ack(service.refresh(), validator, item))


async def samples_batch(request: Request) -> Response:
    service = svc(request)
    validator, body = await signed(request)
    batch = decode(body, SampleBatch)
    if len(batch.samples) > MAX_BATCH:
        raise HttpError(400, f"Batch size exceeds limit of {MAX_BATCH} samples")
    _check_samples(batch.samples)
    if batch.signature and len({s.task_id for s in batch.samples}) != 1:
        raise HttpError(400, "A batch signature must cover the samples of exactly one task_id")
    if batch.samples:
        service.nudge(validator)
    state = service.refresh()
    return json_response([_sample_ack(state, validator, s) for s in batch.samples])


async def blacklist_add(request: Request) -> Response:
    service = svc(request)
    admin, body = await signed(request, admin=True)
    item = decode(body, BlacklistAdd)
    if not is_ss58(item.hotkey):
        raise HttpError(422, "hotkey: Invalid SS58 address format")
    _admin_event(service, admin, request, AdminActed(admin=admin, action=BLACKLIST_ADD, target=item.hotkey,
                                                     reason=item.reason or ""))
    entry = next(e for e in views.blacklist(service.refresh()) if e["hotkey"] == item.hotkey)
    return json_response(entry)


async def blacklist_remove(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request)
    admin, _ = await signed(request, admin=True)
    if hotkey not in service.refresh().blacklist:
        raise HttpError(404, "Miner not blacklisted")
    _admin_event(service, admin, request, AdminActed(admin=admin, action=BLACKLIST_REMOVE, target=hotkey))
    return json_response({"success": True, "message": f"Removed miner {hotkey[:8]}... from blacklist",
                          "removed_by": admin})


async def validators_add(request: Request) -> Response:
    service = svc(request)
    admin, body = await signed(request, admin=True)
    item = decode(body, ValidatorAdd)
    hotkey = item.hotkey.strip()
    if not is_ss58(hotkey):
        raise HttpError(400, "Invalid SS58 address format")
    if item.stake is not None and not math.isfinite(item.stake):
        raise HttpError(422, "stake must be a finite number of TAO")
    state = service.refresh()
    uid, stake_rao = item.uid, None
    meta = state.metagraph[2] if state.metagraph else None
    if meta is not None and hotkey in meta.hotkeys:
        m_uid = meta.hotkeys.index(hotkey)
        uid = m_uid if uid is None else uid
        if m_uid < len(meta.stakes_rao):
            stake_rao = meta.stakes_rao[m_uid]
    if uid is None:
        raise HttpError(404, "Hotkey not found on the subnet metagraph; pass uid explicitly to add it anyway.")
    try:
        registry.check_uid_free(state, uid, hotkey)
    except registry.UidTaken as exc:
        raise HttpError(409, str(exc)) from None
    if item.stake is not None:
        stake_rao = int(round(item.stake * views.RAO_PER_TAO))
    _admin_event(service, admin, request, AdminActed(admin=admin, action=VALIDATOR_ADD, target=hotkey, uid=uid,
                                                     stake_rao=stake_rao or 0))
    return json_response({"success": True, "uid": uid, "hotkey": hotkey, "stake": (stake_rao or 0) / views.RAO_PER_TAO,
                          "added_by": admin})


async def validators_remove(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request, "hotkey")
    admin, _ = await signed(request, admin=True)
    if hotkey not in service.refresh().registry:
        raise HttpError(404, "Validator not registered")
    _admin_event(service, admin, request, AdminActed(admin=admin, action=VALIDATOR_REMOVE, target=hotkey))
    return json_response({"success": True, "message": f"Removed validator {hotkey[:8]}... from allowlist",
                          "removed_by": admin})


async def rotation_interval(request: Request) -> Response:
    service = svc(request)
    admin, body = await signed(request, admin=True)
    item = decode(body, IntervalSet)
    _admin_event(service, admin, request, AdminActed(admin=admin, action=ROTATION_INTERVAL, target="interval",
                                                     uid=item.interval))
    return json_response({"interval": item.interval})


async def dashboard(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html")


async def task_html(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "task.html", media_type="text/html")


async def miner_html(request: Request) -> Response:
    hotkey_param(request)
    return FileResponse(STATIC_DIR / "miner.html", media_type="text/html")


# -- the dashboard's own reads: task page, miner history, agreement, media -------------------


async def task_view(request: Request) -> Response:
    service = svc(request)
    state = service.refresh()
    service.extras.refresh()
    found = await pages.task_page(state, service.extras, request.path_params["task_id"], service.media_for(request))
    if found is None:
        raise HttpError(404, "Task not found")
    rows = _consensus(service)
    for m in found["miners"]:
        row = rows.get(m["miner_hotkey"])
        m["uid"], m["model_name"] = (row.uid, row.model_name or None) if row is not None else (None, None)
    return json_response(found)


async def miner_history(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request)
    state = service.refresh()
    found = pages.miner_history(state, hotkey, state.decision(), int_query(request, "limit", pages.HISTORY_TASKS, 1, 5000))
    row = _consensus(service).get(hotkey)
    found["miner"] = views.miner_response(row) if row is not None else None
    return json_response(found)


async def epochs_agreement(request: Request) -> Response:
    limit = int_query(request, "limit", 60, 1, 1000)
    return json_response(pages.agreement_strip(svc(request).refresh(), limit))


async def media_object(request: Request) -> Response:
    """A directory bucket's object, with HTTP ranges, if the task's events name it (else 404)."""
    service = svc(request)
    validator, key = request.path_params["validator"], request.path_params["key"]
    store = service.feeder.stores.get(validator) if service.feeder is not None else None
    if not isinstance(store, DirectoryStore):
        raise HttpError(404, "No directory bucket for this validator (S3/R2 objects are served by presigned URLs)")
    path = media.media_file(service.refresh(), store, validator, key, service.named_keys)
    if path is None:
        raise HttpError(404, "Not an object of a task this validator opened")
    return FileResponse(path, media_type=media.content_type(key), headers={"Cache-Control": "public, max-age=3600"})


# -- the app -------------------------------------------------------------------------------

ROUTES = [
    Route("/", dashboard),
    Route("/dashboard", dashboard),
    Route("/task/{task_id:int}", task_html),
    Route("/miner/{hotkey}", miner_html),
    Route("/media/{validator}/{key:path}", media_object),
    Route("/epochs/agreement", epochs_agreement),
    Route("/miners/{hotkey}/history", miner_history),
    Route("/tasks/{task_id:int}/view", task_view),
    Route("/health", health),
    Route("/overview", overview),
    Route("/miners/list", miners_list),
    Route("/miners/valid", miners_valid),
    Route("/miners/all", miners_all),
    Route("/miners/active", miners_active),
    Route("/miners/report", miners_report, methods=["POST"]),
    Route("/miners/uid/{uid:int}", miner_by_uid),
    Route("/miners/info/{hotkey}", miner_info),
    Route("/miners/{hotkey}/tasks", miner_tasks),
    Route("/miners/{hotkey}", miner_signed),
    Route("/samples", samples_post, methods=["POST"]),
    Route("/samples/batch", samples_batch, methods=["POST"]),
    Route("/samples/list", samples_list),
    Route("/samples/task", samples_task),
    Route("/samples/validator/{hotkey}", samples_validator),
    Route("/samples/miner/{hotkey}", samples_miner),
    Route("/scores", scores),
    Route("/scores/validators", scores_validators),
    Route("/scores/rank", scores_rank),
    Route("/scores/stats", scores_stats),
    Route("/scores/history", scores_history),
    Route("/scores/miner/{hotkey}", scores_miner),
    Route("/scores/validator/{hotkey}", scores_validator),
    Route("/blacklist", blacklist, methods=["GET"]),
    Route("/blacklist", blacklist_add, methods=["POST"]),
    Route("/blacklist/miners", blacklist_miners),
    Route("/blacklist/{hotkey}", blacklist_entry, methods=["GET"]),
    Route("/blacklist/{hotkey}", blacklist_remove, methods=["DELETE"]),
    Route("/tasks", tasks_query),
    Route("/tasks/recent", tasks_recent),
    Route("/tasks/{task_id:int}", task_detail),
    Route("/tasks/{task_id:int}/miner/{hotkey}", task_miner_detail),
    Route("/weights", weights),
    Route("/epochs", epochs),
    Route("/rotation/interval", rotation_interval, methods=["POST"]),
    Route("/validators", validators_list, methods=["GET"]),
    Route("/validators", validators_add, methods=["POST"]),
    Route("/validators/{hotkey}", validator_detail, methods=["GET"]),
    Route("/validators/{hotkey}", validators_remove, methods=["DELETE"]),
    Route("/admin/history", admin_history),
]


class BodyLimit:
    """413 before reading when Content-Length is over the limit (a non-numeric header is ignored)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            for name, value in scope.get("headers", []):
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    await json_response({"detail": "Request body too large"}, 413)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(service: ApiService, *, sync: bool = False) -> Starlette:
    """The starlette app; with `sync`, the feeder imports validators' mirrors in the background."""
    settings = service.settings

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return json_response({"detail": exc.detail}, exc.status)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = "Not found" if status == 404 else ("Method not allowed" if status == 405 else str(exc))
        return json_response({"detail": detail}, status)

    async def internal(request: Request, exc: Exception) -> Response:
        if settings.production:
            log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        else:
            log.exception("%s %s failed", request.method, request.url.path)
        response = json_response({"detail": "An internal error occurred"}, 500)
        # This handler runs outside the CORS middleware: add its headers, as the seed did.
        origin = request.headers.get("origin")
        if origin and ("*" in settings.cors_origins or origin in settings.cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = None
        if sync and service.feeder is not None:
            task = asyncio.create_task(service.feeder.run(service.allowed, stop, settings.sync_seconds))
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            if service.feeder is not None:
                await service.feeder.close()

    app = Starlette(
        routes=[*ROUTES, Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")],
        middleware=[
            Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=True,
                       allow_methods=["*"], allow_headers=["*"]),
            Middleware(BodyLimit, limit=settings.max_body_size),
        ],
        exception_handlers={HttpError: http_error, 404: not_found, 405: not_found, Exception: internal},
        lifespan=lifespan,
    )
    app.state.service = service
    return app
