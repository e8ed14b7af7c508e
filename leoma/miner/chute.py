"""The chute a miner's model is served by, and what a validator would refuse before it is deployed.

A chute is a small Chutes app that loads the model from Hugging Face at a pinned revision and
answers `POST /generate` with an 832x480 mp4. `render_chute` writes that app from our template;
`preflight` refuses everything a validator would reject (the repository name must start with
`leoma` and end with the miner's hotkey, the revision must be a full 40-hex commit SHA that
Hugging Face resolves, the repository must hold LFS weight files). Deploying it is
`leoma.miner.deploy`; the reference miner that speaks the same contract is `leoma.miner.reference`.

**The `/generate` contract.** A JSON body with `prompt` (text) and `image` (the first frame:
base64 or an http(s) URL), and optionally `negative_prompt`, `num_frames` (1-161, default 81),
`fps` (1-30, default 16), `seed`, `guidance_scale` (1-20, default 5.0) and
`num_inference_steps` (1-100, default 30). Validators send `frames`, `resolution` and `fast`
as well (seed-spec §12.22: the seed's template ignored them); this template accepts them:
`frames` is a synonym for `num_frames`, `resolution` must be `480p` (the only output size) and
`fast` is accepted and has no effect. The answer is `video/mp4`, 832x480; a validator checks the
resolution, so anything else is a fail on the miner's record.
"""

from __future__ import annotations

import re
from string import Template
from typing import Any

from leoma.errors import AdapterError, ConfigError

__all__ = [
    "CHUTE_IMAGE",
    "naming_problem",
    "preflight",
    "render_chute",
    "revision_problem",
]

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
CHUTE_IMAGE = "leoma/video-gen:1.0"
"""The seed's container image for the chute (diffusers, torch, CUDA)."""


# -- the chute -------------------------------------------------------------------------------

_CHUTE_TEMPLATE = Template('''\
"""A Leoma miner chute (rendered by `leoma miner push`): image + prompt -> 832x480 mp4."""

import asyncio
import base64
import io
import tempfile
from typing import Optional

from pydantic import BaseModel, Field
from fastapi import HTTPException
from fastapi.responses import Response
from chutes.chute import Chute, NodeSelector

MODEL_NAME = $model_literal
MODEL_REVISION = $revision_literal
WIDTH, HEIGHT = 832, 480


class GenerateArgs(BaseModel):
    prompt: str
    image: str = Field(description="first frame: base64 bytes or an http(s) URL")
    negative_prompt: str = "low quality, blurry, distorted"
    num_frames: int = Field(default=81, ge=1, le=161)
    fps: int = Field(default=16, ge=1, le=30)
    seed: Optional[int] = None
    guidance_scale: float = Field(default=5.0, ge=1.0, le=20.0)
    num_inference_steps: int = Field(default=30, ge=1, le=100)
    # What validators send (the seed's template dropped these silently):
    frames: Optional[int] = Field(default=None, ge=1, le=161, description="synonym of num_frames; wins when given")
    resolution: Optional[str] = Field(default=None, description="only 480p (832x480) is produced")
    fast: Optional[bool] = Field(default=None, description="accepted; has no effect")


chute = Chute(
    username=$user_literal,
    name=MODEL_NAME,
    tagline=MODEL_NAME,
    readme=MODEL_NAME,
    revision=MODEL_REVISION,
    image=$image_literal,
    node_selector=NodeSelector(gpu_count=1, min_vram_gb_per_gpu=80),
    concurrency=4,
    shutdown_after_seconds=86400,
    allow_external_egress=False,
)


@chute.on_startup()
async def load_model(self):
    import torch
    from diffusers import DiffusionPipeline

    self.pipe = DiffusionPipeline.from_pretrained(MODEL_NAME, revision=MODEL_REVISION, torch_dtype=torch.bfloat16)
    self.pipe.to("cuda")
    self.lock = asyncio.Lock()  # one generation at a time on the GPU


def _first_frame(image: str):
    from PIL import Image

    if image.startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(image, timeout=30) as resp:
            data = resp.read()
    else:
        try:
            data = base64.b64decode(image, validate=True)
        except ValueError:
            raise HTTPException(status_code=422, detail="image must be base64 or an http(s) URL")
    return Image.open(io.BytesIO(data)).convert("RGB").resize((WIDTH, HEIGHT))


@chute.cord(public_api_path="/generate", method="POST", stream=False, output_content_type="video/mp4")
async def generate(self, args: GenerateArgs) -> Response:
    import torch
    from diffusers.utils import export_to_video

    if args.resolution not in (None, "480p"):
        raise HTTPException(status_code=422, detail="only resolution 480p (832x480) is served")
    frames = args.frames or args.num_frames
    image = _first_frame(args.image)
    generator = torch.Generator(device="cuda").manual_seed(args.seed if args.seed is not None else 42)
    async with self.lock:
        result = await asyncio.to_thread(
            self.pipe,
            image=image,
            prompt=args.prompt,
            negative_prompt=args.negative_prompt,
            num_frames=frames,
            height=HEIGHT,
            width=WIDTH,
            guidance_scale=args.guidance_scale,
            num_inference_steps=args.num_inference_steps,
            generator=generator,
        )
    with tempfile.NamedTemporaryFile(suffix=".mp4") as out:
        export_to_video(result.frames[0], out.name, fps=args.fps)
        return Response(content=open(out.name, "rb").read(), media_type="video/mp4")
''')


def render_chute(model_name: str, model_revision: str, chute_user: str, *, image: str = CHUTE_IMAGE) -> str:
    """The Chutes app (Python source) serving `model_name` at `model_revision` as `chute`."""
    # repr() makes every value a Python literal: a name can never inject code into the app.
    return _CHUTE_TEMPLATE.substitute(
        model_literal=repr(model_name), revision_literal=repr(model_revision),
        user_literal=repr(chute_user), image_literal=repr(image),
    )


# -- refusals --------------------------------------------------------------------------------


def naming_problem(model_name: str, hotkey: str) -> str | None:
    """Why validators would reject this repository name for `hotkey` (None when it is fine)."""
    from projections.miners import commitment_problem

    reason = commitment_problem({"model_name": model_name, "model_revision": "x", "chute_id": "x"}, hotkey)
    repo = model_name.strip().rsplit("/", 1)[-1].strip()
    if reason == "model_name_must_start_with_leoma":
        return f"{reason}: the repository name {repo!r} must start with 'leoma' (e.g. leoma-{hotkey})"
    if reason == "model_name_must_end_with_hotkey":
        return f"{reason}: the repository name {repo!r} must end with your hotkey {hotkey} (case-insensitive)"
    if reason:
        return f"{reason}: give the Hugging Face repository as user/leoma-{hotkey}"
    if "/" not in model_name.strip():
        return f"the model name {model_name!r} must be a Hugging Face repository id: user/{repo}"
    return None


def revision_problem(model_revision: str) -> str | None:
    """Why validators would reject this revision before asking Hugging Face (None when fine)."""
    if FULL_SHA.match(model_revision.strip()):
        return None
    return (f"{model_revision!r} is not a full 40-character lowercase commit SHA; validators compare the revision "
            "with the commit Hugging Face resolves, so a branch, tag or short SHA fails as revision_mismatch:hf "
            "(find the SHA with `git rev-parse HEAD` in the model repository, or on its Hugging Face history page)")


async def preflight(model_name: str, model_revision: str, hotkey: str, hub: Any) -> str:
    """Refuse what validators would reject; returns the model's weights hash.

    Raises `ConfigError` for the name and revision rules and `AdapterError` when Hugging Face
    does not know the repository or revision or finds no LFS weight files.
    """
    for problem in (naming_problem(model_name, hotkey), revision_problem(model_revision)):
        if problem:
            raise ConfigError(problem)
    repo, revision = model_name.strip(), model_revision.strip()
    try:
        model_hash, sha = await hub.model_hash(repo, revision)
    except AdapterError as exc:
        raise AdapterError(
            f"hf_model_fetch_failed: {exc}. Validators would reject this commitment: push the model (weights as "
            "LFS files: .safetensors, .bin, .pt, .pth or .ckpt) and give the commit SHA Hugging Face shows"
        ) from None
    if sha != revision:
        raise ConfigError(f"revision_mismatch:hf={sha}: Hugging Face resolves {revision} to {sha}; commit that SHA")
    return model_hash
