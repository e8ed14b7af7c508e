"""The outside world on 127.0.0.1: Chutes, reference miners, Hugging Face and Gemini in one app.

One starlette app served by uvicorn speaks

* the Chutes management API — `GET /chutes/`, `GET /chutes/{id}`;
* chute invocation — `POST /chutes-gen/{slug}/generate` (use `World.generate_url_template`);
* Hugging Face's model info — `GET /api/models/{org}/{name}[/revision/{rev}]`;
* Gemini's `POST /{version}/models/{model}:generateContent`, answered by
  `leoma.devnet.judge_standin` from real measurements of the video it is sent.

The production adapters (`ChutesClient`, `HubClient`, `Judge`) are pointed at `World.url` and
cannot tell the difference. Reference miners (`BEHAVIOURS`) really animate the frame they are
given. To fit 2 CPU cores a miner renders `frames` frames (default 33, about 2 s at 16 fps)
even though the request asks for 81; the validator checks resolution, not length, as the seed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from typing import Any

import msgspec

from leoma.adapters.judge import DEFAULT_WEIGHTS

__all__ = ["BEHAVIOURS", "ReferenceMiner", "World"]

BEHAVIOURS = (
    "faithful",
    "static",
    "noisy",
    "wrong_resolution",
    "slow",
    "flaky",
    "cold",
    "copycat",
    "garbage",
    "reject",
    # Hostile miners (issue 18): each must be refused with its reason.
    "one_frame",
    "frozen",
    "corrupt_tail",
    "slowloris",
    "proxy_of_faithful",
    "source_clip",
    "lone_surrogate",
    "oversize",
)
HOSTILE = ("one_frame", "frozen", "corrupt_tail", "slowloris", "proxy_of_faithful", "source_clip", "lone_surrogate")
"""The hostile behaviours: `proxy_of_faithful` calls another miner's chute (`copies=`, default
"faithful") and returns its bytes; `source_clip` finds the task's `original_clip.mp4` in the
validators' public buckets (`World.bucket_roots`) and serves it; `lone_surrogate` commits a
model name holding an escaped lone surrogate; `slowloris` drips its reply a byte at a time;
`oversize` streams `World.oversize_bytes` of junk without a content-length (benchmarks)."""


class ReferenceMiner(msgspec.Struct, frozen=True, kw_only=True):
    """One miner of the devnet: its chute, its Hugging Face repo and how it behaves."""

    name: str
    behaviour: str
    chute_id: str
    slug: str
    repo_id: str
    revision: str
    lfs_shas: tuple[str, ...]
    hotkey: str = ""
    copies: str = ""
    """The miner whose chute a `proxy_of_faithful` calls (or whose weights a `copycat` serves)."""


def _hex(*parts: str, n: int = 64) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(obj), status_code=status, media_type="application/json", headers=headers)


class World:
    """The local outside world. `await start()` / `await stop()`, or `with world.running():`."""

    def __init__(
        self,
        *,
        frames: int = 33,
        fps: int = 16,
        speed: int = 4,
        slow_seconds: float = 3.0,
        chutes_api_key: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        self.frames = frames
        self.fps = fps
        self.speed = speed
        self.slow_seconds = slow_seconds
        self.chutes_api_key = chutes_api_key
        self.host = host
        self.miners: dict[str, ReferenceMiner] = {}
        self.counts: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        # Queued judge misbehaviour: "garbage", "blocked", "missing", "http500" — one per call.
        self.judge_faults: list[str] = []
        self.last_judge_parts: list[str] = []
        self.last_judge_request: dict[str, Any] = {}
        """The JSON body of the last `generateContent` (what the judge was asked, and how)."""
        self.judge_replies: list[dict[str, Any]] = []
        """Queued replies the judge gives instead of measuring (one per call): exact scores for tests."""
        self.judge_busy_seconds = 0.0  # time the stand-in spent measuring (benchmarks subtract it)
        self.judge_weights: dict[str, str] = dict(DEFAULT_WEIGHTS)
        self.bucket_roots: tuple[Any, ...] = ()
        """Directories holding validators' buckets, where a `source_clip` miner looks for the task's clip."""
        self.drip_seconds = 0.2
        self.oversize_bytes = 500_000_000
        self.url = ""
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    # -- miners -------------------------------------------------------------------------------

    def add_miner(self, behaviour: str, *, name: str = "", hotkey: str = "", copies: str = "") -> ReferenceMiner:
        """Register a reference miner; a `copycat` shares the weights of `copies` (a miner name)."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; choose one of {', '.join(BEHAVIOURS)}")
        name = name or f"{behaviour}{len(self.miners)}"
        if name in self.miners:
            raise ValueError(f"a miner named {name!r} already exists")
        source = name
        if behaviour == "proxy_of_faithful":
            copies = copies or "faithful"
        if behaviour == "copycat":
            if copies not in self.miners:
                raise ValueError("a copycat needs `copies=` naming an existing miner")
            source = copies
        shas = (
            self.miners[copies].lfs_shas
            if behaviour == "copycat"
            else (_hex(source, "transformer"), _hex(source, "vae"))
        )
        repo = f"devnet/leoma-{name}{('-' + hotkey.lower()) if hotkey else ''}"
        if behaviour == "lone_surrogate":
            # json.dumps escapes it as \\ud800: the commitment is pure ASCII and valid JSON.
            repo = f"devnet/leoma-\ud800{name}{('-' + hotkey.lower()) if hotkey else ''}"
        miner = ReferenceMiner(
            name=name,
            behaviour=behaviour,
            chute_id=_hex(name, "chute", n=32),
            slug=f"devnet-{name}",
            repo_id=repo,
            revision=_hex(name, "revision", n=40),
            lfs_shas=shas,
            hotkey=hotkey,
            copies=copies if behaviour in ("copycat", "proxy_of_faithful") else "",
        )
        self.miners[name] = miner
        return miner

    @property
    def generate_url_template(self) -> str:
        """What to give `ChutesClient(generate_url_template=...)`."""
        return self.url + "/chutes-gen/{slug}/generate"

    def _by(self, field: str, value: str) -> ReferenceMiner | None:
        return next((m for m in self.miners.values() if getattr(m, field) == value), None)

    def _note(self, request: Any) -> None:
        keep = ("authorization", "x-goog-api-key")
        self.requests.append(
            (request.method, request.url.path, {k: v for k, v in request.headers.items() if k in keep})
        )

    # -- Chutes -------------------------------------------------------------------------------

    def _chute_json(self, m: ReferenceMiner) -> dict[str, Any]:
        return {
            "chute_id": m.chute_id,
            "name": m.repo_id,
            "tagline": m.repo_id,
            "readme": m.repo_id,
            "slug": m.slug,
            "revision": m.revision,
            "hot": m.behaviour != "cold",
            "cords": [{"path": "/generate", "method": "POST"}],
            "instances": [],
        }

    async def chutes_list(self, request: Any) -> Any:
        self._note(request)
        return _json({"items": [self._chute_json(m) for m in self.miners.values()], "total": len(self.miners)})

    async def chute_info(self, request: Any) -> Any:
        self._note(request)
        if self.chutes_api_key and request.headers.get("authorization") != self.chutes_api_key:
            return _json({"detail": "unauthorized"}, 401)
        m = self._by("chute_id", request.path_params["chute_id"])
        if m is None:
            return _json({"detail": "chute not found"}, 404)
        return _json(self._chute_json(m))

    async def generate(self, request: Any) -> Any:
        from starlette.responses import Response

        self._note(request)
        m = self._by("slug", request.path_params["slug"])
        if m is None:
            return _json({"detail": "no such chute"}, 404)
        n = self.counts[m.name] = self.counts.get(m.name, 0) + 1
        if self.chutes_api_key and request.headers.get("authorization") != f"Bearer {self.chutes_api_key}":
            return _json({"detail": "unauthorized"}, 401)
        if m.behaviour == "cold":
            return _json({"detail": "No instances available (cold)"}, 503)
        if m.behaviour == "flaky" and n % 3 != 0:
            # Deterministic: requests 1, 4, 7... get 429, 2, 5, 8... get 502, every third succeeds.
            return _json({"detail": "gateway trouble"}, 429 if n % 3 == 1 else 502)
        try:
            body = await request.json()
            image = base64.b64decode(body["image"], validate=True)
            prompt = str(body["prompt"])
        except (ValueError, KeyError, TypeError):
            return _json({"detail": "request needs prompt and base64 image"}, 422)
        if m.behaviour == "reject":
            return _json({"detail": "input rejected by the model"}, 422)
        if m.behaviour == "garbage":
            return Response(b"this is not a video " * 64, media_type="video/mp4")
        if m.behaviour == "slowloris":
            return self._slowloris(request)
        if m.behaviour == "oversize":
            return self._oversize()
        if m.behaviour == "proxy_of_faithful":
            return await self._proxy(m, body, request)
        if m.behaviour == "source_clip":
            clip = await asyncio.to_thread(self._find_source_clip, image)
            if clip is None:
                return _json({"detail": "no clip found"}, 404)
            video = await asyncio.to_thread(self._serve_clip, clip)
            return Response(video, media_type="video/mp4")
        if m.behaviour == "slow":
            # Sleep in steps so a client that gave up frees the handler (and shutdown stays quick).
            deadline = time.monotonic() + self.slow_seconds
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    return _json({"detail": "client went away"}, 499)
                await asyncio.sleep(0.05)
        video = await asyncio.to_thread(self._render, m, prompt, image, n)
        return Response(video, media_type="video/mp4")

    def _slowloris(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        async def drip() -> Any:
            # One byte at a time, for as long as the client keeps listening (at most 10 minutes).
            for _ in range(int(600 / self.drip_seconds)):
                if await request.is_disconnected():
                    return
                yield b"\x00"
                await asyncio.sleep(self.drip_seconds)

        return StreamingResponse(drip(), media_type="video/mp4")

    def _oversize(self) -> Any:
        from starlette.responses import StreamingResponse

        chunk = b"\x00" * (1 << 20)

        async def junk() -> Any:
            left = self.oversize_bytes
            while left > 0:
                yield chunk[: min(left, len(chunk))]
                left -= len(chunk)

        return StreamingResponse(junk(), media_type="video/mp4")

    async def _proxy(self, m: ReferenceMiner, body: dict[str, Any], request: Any) -> Any:
        import httpx
        from starlette.responses import Response

        target = self.miners.get(m.copies)
        if target is None:
            return _json({"detail": f"no miner {m.copies!r} to proxy"}, 502)
        headers = {k: v for k, v in request.headers.items() if k == "authorization"}
        async with httpx.AsyncClient(timeout=60.0) as client:
            resp = await client.post(self.generate_url_template.format(slug=target.slug), json=body, headers=headers)
        return Response(resp.content, status_code=resp.status_code, media_type="video/mp4")

    def _find_source_clip(self, image_png: bytes) -> bytes | None:
        from pathlib import Path

        for root in self.bucket_roots:
            for frame in sorted(Path(root).rglob("first_frame.png")):
                try:
                    if frame.read_bytes() == image_png and (frame.parent / "original_clip.mp4").exists():
                        return (frame.parent / "original_clip.mp4").read_bytes()
                except OSError:
                    continue
        return None

    def _serve_clip(self, clip: bytes) -> bytes:
        from leoma.adapters.video import decode_frames, encode_mp4

        frames = decode_frames(clip, size=(832, 480))[: self.frames]
        return encode_mp4(frames, self.fps, preset="ultrafast")

    def _render(self, m: ReferenceMiner, prompt: str, image_png: bytes, n: int) -> bytes:
        return render_reference_video(m.behaviour, prompt, image_png, frames=self.frames, fps=self.fps,
                                      speed=self.speed, seed=n)

    # -- Hugging Face -------------------------------------------------------------------------

    async def hf_model(self, request: Any) -> Any:
        self._note(request)
        repo = f"{request.path_params['org']}/{request.path_params['name']}"
        rev = request.path_params.get("rev", "main")
        m = self._by("repo_id", repo)
        if m is None:
            return _json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
        if rev not in ("main", m.revision):
            return _json({"error": "Invalid rev id"}, 404, {"X-Error-Code": "RevisionNotFound"})
        blobs = request.query_params.get("blobs") == "true"
        siblings: list[dict[str, Any]] = [{"rfilename": "model_index.json", "size": 512, "blobId": _hex(repo, n=40)}]
        for part, sha in zip(("transformer", "vae"), m.lfs_shas):
            s: dict[str, Any] = {"rfilename": f"{part}/diffusion_pytorch_model.safetensors"}
            if blobs:
                s |= {"size": 1000, "blobId": sha[:40], "lfs": {"sha256": sha, "size": 1000, "pointerSize": 134}}
            siblings.append(s)
        return _json({"id": repo, "modelId": repo, "sha": m.revision, "private": False, "siblings": siblings})

    # -- Gemini -------------------------------------------------------------------------------

    async def gemini(self, request: Any) -> Any:
        self._note(request)
        model, _, action = request.path_params["model_action"].partition(":")
        if action != "generateContent":
            return _json({"error": {"code": 404, "message": f"no action {action}", "status": "NOT_FOUND"}}, 404)
        body = await request.json()
        self.last_judge_request = {"model": model, **body}
        fault = self.judge_faults.pop(0) if self.judge_faults else ""
        if fault == "http500":
            return _json({"error": {"code": 500, "message": "internal", "status": "INTERNAL"}}, 500)
        if fault == "blocked":
            return _json({"candidates": [{"finishReason": "SAFETY", "index": 0}], "modelVersion": model})
        texts, blobs = [], []
        self.last_judge_parts = []
        for content in body.get("contents", []):
            for part in content.get("parts", []):
                if "text" in part:
                    texts.append(part["text"])
                    self.last_judge_parts.append("text")
                inline = part.get("inlineData") or part.get("inline_data")
                if inline:
                    mime = inline.get("mime_type") or inline.get("mimeType") or ""
                    blobs.append((mime, _b64(inline["data"])))
                    self.last_judge_parts.append(mime)
        if fault == "garbage":
            text = "I am sorry, I cannot grade this video."
        elif self.judge_replies:
            text = json.dumps(self.judge_replies.pop(0))
        else:
            started = time.perf_counter()
            text = await asyncio.to_thread(self._judge, texts, blobs, fault == "missing")
            self.judge_busy_seconds += time.perf_counter() - started
        return _json({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2},
            "modelVersion": model,
        })

    def _judge(self, texts: list[str], blobs: list[tuple[str, bytes]], drop_aspects: bool) -> str:
        from leoma.adapters.video import decode_frames, png_to_array
        from leoma.devnet import judge_standin

        videos = [b for mime, b in blobs if mime.startswith("video/")]
        images = [b for mime, b in blobs if mime.startswith("image/")]
        if not videos:
            return "No video was provided."
        # Gray is taken as the mean of RGB on both sides, so video range (16-235) and PNG range
        # (0-255) cannot masquerade as a fidelity error.
        frames = [f.mean(axis=2) for f in decode_frames(videos[0], size=judge_standin.ANALYSIS_SIZE)]
        if not images:
            return judge_standin.describe_clip(frames)
        img = _resize(png_to_array(images[0]), *judge_standin.ANALYSIS_SIZE).mean(axis=2)
        prompt = _quoted_prompt("\n".join(texts))
        verdict = judge_standin.evaluate_video(img, prompt, frames, self.judge_weights)
        if drop_aspects:
            verdict.pop("aspect_scores")
        return json.dumps(verdict)

    # -- serving ------------------------------------------------------------------------------

    def app(self) -> Any:
        """The starlette application."""
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(
            routes=[
                Route("/chutes/", self.chutes_list),
                Route("/chutes/{chute_id}", self.chute_info),
                Route("/chutes-gen/{slug}/generate", self.generate, methods=["POST"]),
                Route("/api/models/{org}/{name}", self.hf_model),
                Route("/api/models/{org}/{name}/revision/{rev}", self.hf_model),
                Route("/{version}/models/{model_action}", self.gemini, methods=["POST"]),
            ]
        )

    def _make_server(self) -> Any:
        import uvicorn

        config = uvicorn.Config(self.app(), host=self.host, port=0, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2)
        return uvicorn.Server(config)

    def _bound(self) -> None:
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"

    async def start(self) -> World:
        """Serve on a free port of 127.0.0.1 inside the running event loop."""
        self._server = self._make_server()
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self._bound()
        return self

    async def stop(self) -> None:
        """Stop serving and wait for the server to finish."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None

    def start_thread(self) -> World:
        """Serve from a background thread (for synchronous callers)."""
        self._server = self._make_server()
        self._thread = threading.Thread(target=self._server.run, name="leoma-world", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the local world did not start")
            time.sleep(0.01)
        self._bound()
        return self

    def stop_thread(self) -> None:
        """Stop the background-thread server."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
            self._thread = None


def _b64(data: str) -> bytes:
    # google-genai sends URL-safe base64; the REST API documents the standard alphabet. Take both.
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def _quoted_prompt(text: str) -> str:
    """The benchmark prompt our evaluate instruction quotes after `BENCHMARK PROMPT:`."""
    _, _, rest = text.partition("BENCHMARK PROMPT:")
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return rest[1:end] if end > 0 else rest[1:]
    return rest.split("\n\n", 1)[0]


def _resize(img: Any, width: int, height: int) -> Any:
    import av

    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray(format="rgb24")


def render_reference_video(behaviour: str, prompt: str, image_png: bytes, *, frames: int = 33, fps: int = 16,
                           speed: int = 4, seed: int = 0) -> bytes:
    """A reference miner's video: the first frame animated as `behaviour` does (an mp4).

    `faithful` moves the camera the way the prompt names, `static` repeats the frame, `noisy`
    adds heavy noise, `flaky` moves in jerks, `wrong_resolution` crops to 640x480. This is the
    whole "model" of the reference miners, and the template `leoma miner serve-reference` serves.
    """
    import numpy as np

    from leoma.adapters.video import encode_mp4, png_to_array
    from leoma.devnet.clips import CONTENT_SHIFT
    from leoma.devnet.judge_standin import direction_in

    img = png_to_array(image_png)
    if img.shape[:2] != (480, 832):
        img = _resize(img, 832, 480)
    direction = direction_in(prompt) or "static"
    dx, dy = CONTENT_SHIFT[direction]
    if behaviour == "static":
        dx = dy = 0
    travel = speed * frames
    pad = np.pad(img, ((travel, travel), (travel, travel), (0, 0)), mode="edge")
    out = []
    offset = 0
    for i in range(frames):
        if behaviour == "flaky":  # a weaker model: the camera moves in jerks
            offset = i * speed + (speed if i % 2 else 0) * (1 if i < frames - 1 else 0)
        else:
            offset = i * speed
        y0, x0 = travel - dy * offset, travel - dx * offset
        out.append(pad[y0 : y0 + 480, x0 : x0 + 832])
    if behaviour == "noisy":
        rng = np.random.default_rng(seed)
        out = [
            np.clip(f.astype(np.int16) + rng.normal(0, 60, f.shape).astype(np.int16), 0, 255).astype(np.uint8)
            for f in out
        ]
    if behaviour == "wrong_resolution":
        out = [np.ascontiguousarray(f[:, 96:736]) for f in out]
    if behaviour == "one_frame":
        out = out[:1]
    if behaviour == "frozen":
        # "Repeat the first frame", flickering by one gray level so no two neighbouring frames are equal.
        lifted = np.clip(img.astype(np.int16) + 1, 0, 255).astype(np.uint8)
        out = [img if i % 2 == 0 else lifted for i in range(frames)]
    if behaviour == "corrupt_tail":
        return _corrupt_tail(out, fps, seed)
    return encode_mp4(out, fps, preset="ultrafast")


def _corrupt_tail(frames: list[Any], fps: int, seed: int) -> bytes:
    """An mp4 whose index is at the front and whose last 40% of bytes are garbage: it opens and
    its first frame decodes (so a resolution probe accepts it), the rest does not."""
    import os
    import tempfile

    import av
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "video.mp4")
        with av.open(path, mode="w", format="mp4", options={"movflags": "faststart"}) as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = 832, 480, "yuv420p"
            stream.options = {"preset": "ultrafast", "crf": "23"}
            for arr in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        with open(path, "rb") as f:
            data = bytearray(f.read())
    cut = int(len(data) * 0.6)
    data[cut:] = np.random.default_rng(seed).integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
    return bytes(data)

