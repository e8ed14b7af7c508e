"""The seed's read routes (seed-spec §7.3): miners, tasks, samples, scores, epochs, weights,
the blacklist, validators and the admin history, answered from `ApiState`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from leoma import __version__
from leoma.api import views
from leoma.api.auth import is_ss58
from leoma.api.http import hotkey_param, int_query, json_response, signed, svc
from leoma.api.service import ApiService
from leoma.errors import HttpError


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


def miner_rows(service: ApiService) -> dict[str, Any]:
    """The majority consensus of the validators' miner reports, by hotkey, as the miner routes serve it."""
    return views.consensus(service.refresh(), service.now(), service.settings.stale_seconds)


async def miners_list(request: Request) -> Response:
    return json_response(views.miners_list(miner_rows(svc(request))))


async def miners_valid(request: Request) -> Response:
    await signed(request)
    return json_response(views.miners_list(miner_rows(svc(request)), valid_only=True))


async def miners_all(request: Request) -> Response:
    await signed(request)
    return json_response(views.miners_list(miner_rows(svc(request))))


async def miners_active(request: Request) -> Response:
    service = svc(request)
    rows = miner_rows(service)
    return json_response(views.miners_active(service.state, rows, service.state.decision()))


async def miner_by_uid(request: Request) -> Response:
    uid = request.path_params["uid"]
    found = next((m for m in miner_rows(svc(request)).values() if m.uid == uid), None)
    if found is None:
        raise HttpError(404, "Miner not found")
    return json_response(views.miner_response(found))


def _miner(request: Request) -> Response:
    hotkey = hotkey_param(request)
    found = miner_rows(svc(request)).get(hotkey)
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
    rows = miner_rows(service)
    return json_response(views.overview(service.state, rows, service.state.decision(),
                                        service.settings.rotation_interval))


async def admin_history(request: Request) -> Response:
    limit = int_query(request, "limit", 200, 1, 5000)
    return json_response(views.admin_history(svc(request).refresh(), limit))
