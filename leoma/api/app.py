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
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from leoma.adapters.directory import DirectoryStore
from leoma.api import media, pages, reads, views, writes
from leoma.api.http import hotkey_param, int_query, json_response, svc
from leoma.api.service import ApiService
from leoma.errors import HttpError

__all__ = ["create_app", "STATIC_DIR"]

log = logging.getLogger("leoma.api")
STATIC_DIR = Path(__file__).with_name("static")


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
    rows = reads.miner_rows(service)
    for m in found["miners"]:
        row = rows.get(m["miner_hotkey"])
        m["uid"], m["model_name"] = (row.uid, row.model_name or None) if row is not None else (None, None)
    return json_response(found)


async def miner_history(request: Request) -> Response:
    service = svc(request)
    hotkey = hotkey_param(request)
    state = service.refresh()
    found = pages.miner_history(state, hotkey, state.decision(), int_query(request, "limit", pages.HISTORY_TASKS, 1, 5000))
    row = reads.miner_rows(service).get(hotkey)
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
    Route("/health", reads.health),
    Route("/overview", reads.overview),
    Route("/miners/list", reads.miners_list),
    Route("/miners/valid", reads.miners_valid),
    Route("/miners/all", reads.miners_all),
    Route("/miners/active", reads.miners_active),
    Route("/miners/report", writes.miners_report, methods=["POST"]),
    Route("/miners/uid/{uid:int}", reads.miner_by_uid),
    Route("/miners/info/{hotkey}", reads.miner_info),
    Route("/miners/{hotkey}/tasks", reads.miner_tasks),
    Route("/miners/{hotkey}", reads.miner_signed),
    Route("/samples", writes.samples_post, methods=["POST"]),
    Route("/samples/batch", writes.samples_batch, methods=["POST"]),
    Route("/samples/list", reads.samples_list),
    Route("/samples/task", reads.samples_task),
    Route("/samples/validator/{hotkey}", reads.samples_validator),
    Route("/samples/miner/{hotkey}", reads.samples_miner),
    Route("/scores", reads.scores),
    Route("/scores/validators", reads.scores_validators),
    Route("/scores/rank", reads.scores_rank),
    Route("/scores/stats", reads.scores_stats),
    Route("/scores/history", reads.scores_history),
    Route("/scores/miner/{hotkey}", reads.scores_miner),
    Route("/scores/validator/{hotkey}", reads.scores_validator),
    Route("/blacklist", reads.blacklist, methods=["GET"]),
    Route("/blacklist", writes.blacklist_add, methods=["POST"]),
    Route("/blacklist/miners", reads.blacklist_miners),
    Route("/blacklist/{hotkey}", reads.blacklist_entry, methods=["GET"]),
    Route("/blacklist/{hotkey}", writes.blacklist_remove, methods=["DELETE"]),
    Route("/tasks", reads.tasks_query),
    Route("/tasks/recent", reads.tasks_recent),
    Route("/tasks/{task_id:int}", reads.task_detail),
    Route("/tasks/{task_id:int}/miner/{hotkey}", reads.task_miner_detail),
    Route("/weights", reads.weights),
    Route("/epochs", reads.epochs),
    Route("/rotation/interval", writes.rotation_interval, methods=["POST"]),
    Route("/validators", reads.validators_list, methods=["GET"]),
    Route("/validators", writes.validators_add, methods=["POST"]),
    Route("/validators/{hotkey}", reads.validator_detail, methods=["GET"]),
    Route("/validators/{hotkey}", writes.validators_remove, methods=["DELETE"]),
    Route("/admin/history", reads.admin_history),
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
