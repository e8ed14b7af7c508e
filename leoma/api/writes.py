"""The signed write routes: validators' miner reports and samples, and the owner's admin actions.

Writes become events of the API's own origin and nothing else: `admin_acted` for validator and
blacklist changes (so the admin history is auditable) and `miner_report_received` for the
validators' miner reports. Samples are checked and acknowledged, and the validator's mirror
(which holds the same verdicts, signed into its hash chain) is imported at once: the log never
holds a second, unchained copy of a verdict.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from leoma.api import registry, views
from leoma.api.auth import is_ss58
from leoma.api.http import decode, hotkey_param, json_response, signed, svc
from leoma.api.service import ApiService
from leoma.api.state import (
    BLACKLIST_ADD,
    BLACKLIST_REMOVE,
    ROTATION_INTERVAL,
    VALIDATOR_ADD,
    VALIDATOR_REMOVE,
    ApiState,
)
from leoma.errors import HttpError
from leoma.log.eventlog import Draft
from leoma.log.events import AdminActed, MinerChecked, MinerReportReceived


MAX_REPORT_MINERS = 2048
MAX_BATCH = 100
REPORT_CHUNK = 32  # miners per event: keeps each body well under the log's 64 KiB cap
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


def _record_admin(service: ApiService, admin: str, request: Request, body: AdminActed) -> None:
    """An admin's action as an `admin_acted` event of the API's own origin."""
    # The signature is unique (replays are refused), so it names the action's event.
    sig = request.headers.get("X-Signature", "")[-32:]
    key = f"admin/{body.action}/{body.target}/{request.headers.get('X-Timestamp', '')}/{sig}"
    service.log.append(body, key=key[:512], block=service.refresh().head_block())


async def blacklist_add(request: Request) -> Response:
    service = svc(request)
    admin, body = await signed(request, admin=True)
    item = decode(body, BlacklistAdd)
    if not is_ss58(item.hotkey):
        raise HttpError(422, "hotkey: Invalid SS58 address format")
    _record_admin(service, admin, request, AdminActed(admin=admin, action=BLACKLIST_ADD, target=item.hotkey,
                                                     reason=item.reason or ""))
    entry = next(e for e in views.blacklist(service.refresh()) if e["hotkey"] == item.hotkey)
    return json_response(entry)


async def blacklist_remove(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request)
    admin, _ = await signed(request, admin=True)
    if hotkey not in service.refresh().blacklist:
        raise HttpError(404, "Miner not blacklisted")
    _record_admin(service, admin, request, AdminActed(admin=admin, action=BLACKLIST_REMOVE, target=hotkey))
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
    _record_admin(service, admin, request, AdminActed(admin=admin, action=VALIDATOR_ADD, target=hotkey, uid=uid,
                                                     stake_rao=stake_rao or 0))
    return json_response({"success": True, "uid": uid, "hotkey": hotkey, "stake": (stake_rao or 0) / views.RAO_PER_TAO,
                          "added_by": admin})


async def validators_remove(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request, "hotkey")
    admin, _ = await signed(request, admin=True)
    if hotkey not in service.refresh().registry:
        raise HttpError(404, "Validator not registered")
    _record_admin(service, admin, request, AdminActed(admin=admin, action=VALIDATOR_REMOVE, target=hotkey))
    return json_response({"success": True, "message": f"Removed validator {hotkey[:8]}... from allowlist",
                          "removed_by": admin})


async def rotation_interval(request: Request) -> Response:
    service = svc(request)
    admin, body = await signed(request, admin=True)
    item = decode(body, IntervalSet)
    _record_admin(service, admin, request, AdminActed(admin=admin, action=ROTATION_INTERVAL, target="interval",
                                                     uid=item.interval))
    return json_response({"interval": item.interval})
