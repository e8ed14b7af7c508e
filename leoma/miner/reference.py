"""The reference miner (`leoma miner serve-reference`): the `/generate` contract over plain HTTP.

It speaks exactly the chute's contract (`leoma.miner.chute`) on your machine, with the faithful
miner of the devnet behind it: it animates the first frame by moving the camera the way the
prompt says. It is not a video model; it is the smallest server a validator accepts, the thing
to replace with a real model, and what `leoma devnet` miners run. The video renderer is passed
in, so the miner tools do not depend on the devnet. Start it, then send it what a validator sends:

    leoma miner serve-reference --port 8000
    curl -s localhost:8000/generate -H 'content-type: application/json' \\
         -d '{"prompt": "the camera pans left", "image": "<base64 png>"}' -o out.mp4
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import msgspec

from leoma.errors import AdapterError, ConfigError, LeomaError

__all__ = [
    "GenerateRequest",
    "reference_app",
]


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The `/generate` body, as the chute template accepts it (see the module docstring)."""

    prompt: str
    image: str
    negative_prompt: str = "low quality, blurry, distorted"
    num_frames: int = 81
    fps: int = 16
    seed: int | None = None
    guidance_scale: float = 5.0
    num_inference_steps: int = 30
    frames: int | None = None
    resolution: str | None = None
    fast: bool | None = None

    def problem(self) -> str | None:
        """Why the request is out of range (None when it is fine)."""
        checks = [
            (1 <= self.num_frames <= 161, "num_frames must be 1-161"),
            (self.frames is None or 1 <= self.frames <= 161, "frames must be 1-161"),
            (1 <= self.fps <= 30, "fps must be 1-30"),
            (1.0 <= self.guidance_scale <= 20.0, "guidance_scale must be 1-20"),
            (1 <= self.num_inference_steps <= 100, "num_inference_steps must be 1-100"),
            (self.resolution in (None, "480p"), "only resolution 480p (832x480) is served"),
        ]
        return next((msg for ok, msg in checks if not ok), None)


REFERENCE_BEHAVIOURS = ("faithful", "static", "noisy", "wrong_resolution")
"""Devnet behaviours that differ in the video itself (the others are about HTTP, not pictures)."""


RenderVideo = Callable[..., bytes]
"""`render(behaviour, prompt, first_frame_png, *, frames, fps, seed) -> mp4 bytes`: a miner's model."""


def reference_app(behaviour: str = "faithful", *, render: RenderVideo, max_frames: int = 33) -> Any:
    """A starlette app serving `POST /generate` with `render` as the model behind it.

    The caller supplies the model (the CLI passes the devnet's reference miner,
    `leoma.devnet.world.render_reference_video`), so the miner tools do not depend on the devnet.
    Renders at most `max_frames` frames (a CPU cannot afford 81 at 832x480 quickly; validators
    check the resolution, not the length).
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    if behaviour not in REFERENCE_BEHAVIOURS:
        raise ConfigError(f"unknown reference behaviour {behaviour!r}; choose one of {', '.join(REFERENCE_BEHAVIOURS)}")
    if max_frames < 1:
        raise ConfigError(f"max_frames must be at least 1, not {max_frames}")
    decoder = msgspec.json.Decoder(GenerateRequest)

    async def generate(request: Any) -> Any:
        try:
            args = decoder.decode(await request.body())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return JSONResponse({"detail": f"bad request: {exc}"}, status_code=422)
        problem = args.problem()
        if problem:
            return JSONResponse({"detail": problem}, status_code=422)
        try:
            image = await _first_frame(args.image)
        except (ValueError, LeomaError) as exc:
            return JSONResponse({"detail": f"image: {exc}"}, status_code=422)
        frames = min(args.frames or args.num_frames, max_frames)
        try:
            video = await asyncio.to_thread(render, behaviour, args.prompt, image, frames=frames,
                                            fps=args.fps, seed=args.seed if args.seed is not None else 42)
        except LeomaError as exc:
            return JSONResponse({"detail": f"image: {exc}"}, status_code=422)
        return Response(video, media_type="video/mp4")

    async def health(_request: Any) -> Any:
        return JSONResponse({"ok": True, "behaviour": behaviour})

    return Starlette(routes=[Route("/generate", generate, methods=["POST"]), Route("/", health)])


async def _first_frame(image: str) -> bytes:
    if image.startswith(("http://", "https://")):
        import httpx

        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.get(image)
            if resp.status_code != 200:
                raise AdapterError(f"HTTP {resp.status_code} fetching {image}: the conditioning image must be reachable")
            return resp.content
    return base64.b64decode(image, validate=True)
