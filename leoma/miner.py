"""Miner tools: deploy a model to Chutes (`push`), see where a miner stands (`status`), and the
reference miner a new miner starts from (`reference_app`).

**Deploying** (`push`). A miner's model is served by a *chute*: a small Chutes app that loads the
model from Hugging Face at a pinned revision and answers `POST /generate` with an 832x480 mp4.
`render_chute` writes that app from our template; `push` first refuses everything a validator
would reject (the repository name must start with `leoma` and end with the miner's hotkey, the
revision must be a full 40-hex commit SHA that Hugging Face resolves, the repository must hold
LFS weight files), then runs `chutes deploy <module>:chute --accept-fee`, and finds the new
chute's id through the Chutes API so the miner can commit it with `leoma miner commit`.

**The `/generate` contract.** A JSON body with `prompt` (text) and `image` (the first frame:
base64 or an http(s) URL), and optionally `negative_prompt`, `num_frames` (1-161, default 81),
`fps` (1-30, default 16), `seed`, `guidance_scale` (1-20, default 5.0) and
`num_inference_steps` (1-100, default 30). Validators send `frames`, `resolution` and `fast`
as well (seed-spec §12.22: the seed's template ignored them); this template accepts them:
`frames` is a synonym for `num_frames`, `resolution` must be `480p` (the only output size) and
`fast` is accepted and has no effect. The answer is `video/mp4`, 832x480; a validator checks the
resolution, so anything else is a fail on the miner's record.

**The reference miner** (`leoma miner serve-reference`) speaks exactly this contract over plain
HTTP on your machine, with the faithful miner of the devnet behind it: it animates the first
frame by moving the camera the way the prompt says. It is not a video model; it is the smallest
server a validator accepts, the thing to replace with a real model, and what `leoma devnet`
miners run. Start it, then send it what a validator sends:

    leoma miner serve-reference --port 8000
    curl -s localhost:8000/generate -H 'content-type: application/json' \\
         -d '{"prompt": "the camera pans left", "image": "<base64 png>"}' -o out.mp4

**Standing** (`status`) gathers, from whatever is reachable, what a miner needs to know: its
commitment on chain, each validation check with its reason, whether its chute is hot, its last
tasks with the judge's verdicts and reasoning, and its rank with the rate it needs to dominate
the miners that committed before it. A source that is unavailable is named, never fatal.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from string import Template
from typing import Any

import msgspec

from leoma.errors import AdapterError, ConfigError, LeomaError
from leoma.events import CheckOutcome

__all__ = [
    "CHUTE_IMAGE",
    "DeployResult",
    "GenerateRequest",
    "PushResult",
    "deploy",
    "find_chute_id",
    "log_error_line",
    "naming_problem",
    "preflight",
    "push",
    "reference_app",
    "render_chute",
    "revision_problem",
]

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
CHUTE_IMAGE = "leoma/video-gen:1.0"
"""The seed's container image for the chute (diffusers, torch, CUDA)."""
# A Chutes CLI log line: `2026-01-14 14:43:26.979 | ERROR    | module:fn:12 - message`.
_LOG_LINE = re.compile(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}) \| (\w+)\s*\|(.*)")


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


# -- deploying -------------------------------------------------------------------------------


class DeployResult(msgspec.Struct, frozen=True, kw_only=True):
    """What `chutes deploy` did: its exit code, the first ERROR line (if any) and its output."""

    ok: bool
    exit_code: int
    error: str = ""
    output: str = ""


def log_error_line(output: str) -> str:
    """The message of the first ERROR/CRITICAL log line in Chutes CLI output ("" if none)."""
    for line in output.splitlines():
        m = _LOG_LINE.search(line)
        if m and m.group(2).upper() in ("ERROR", "CRITICAL"):
            return m.group(3).strip().lstrip("- ").strip() or line.strip()
    return ""


def deploy(source: str, api_key: str, *, executable: str = "chutes", timeout: float = 3600.0,
           env: Mapping[str, str] | None = None) -> DeployResult:
    """Write `source` as a module in a fresh temporary folder and `chutes deploy` it.

    The folder (never the current directory) is removed afterwards. A non-zero exit or an
    ERROR line in the output is a failure (the Chutes CLI sometimes logs an error and exits 0).
    """
    found = shutil.which(executable, path=(env or os.environ).get("PATH"))
    if found is None:
        raise ConfigError(f"the {executable!r} command is not installed: `pip install chutes` and register with "
                          "`chutes register`, or deploy the rendered app yourself")
    with tempfile.TemporaryDirectory(prefix="leoma-chute-") as folder:
        module = "leoma_chute"
        Path(folder, f"{module}.py").write_text(source, encoding="utf-8")
        child_env = {**(env if env is not None else os.environ), "CHUTES_API_KEY": api_key}
        try:
            proc = subprocess.run(
                [found, "deploy", f"{module}:chute", "--accept-fee"], cwd=folder, env=child_env, input="y\n",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            return DeployResult(ok=False, exit_code=-1, error=f"chutes deploy did not finish in {timeout:g}s")
    output = proc.stdout or ""
    error = log_error_line(output)
    if error:
        return DeployResult(ok=False, exit_code=proc.returncode, error=f"chutes deploy logged an error: {error}",
                            output=output)
    if proc.returncode != 0:
        tail = output.strip().splitlines()[-1:] or [""]
        return DeployResult(ok=False, exit_code=proc.returncode,
                            error=f"chutes deploy exited with code {proc.returncode}: {tail[0]}".rstrip(": "),
                            output=output)
    return DeployResult(ok=True, exit_code=0, output=output)


async def find_chute_id(chutes: Any, model_name: str) -> str | None:
    """The id of the newest chute whose name, tagline or readme is `model_name`, or None."""
    items = await chutes.list_chutes()
    # Newest first: by `created_at` when the API gives it, else the listing's order reversed (the seed's).
    indexed = list(enumerate(items))
    indexed.sort(key=lambda p: (str(p[1].get("created_at") or ""), p[0]), reverse=True)
    for _, item in indexed:
        if model_name in (item.get("name"), item.get("tagline"), item.get("readme")) and item.get("chute_id"):
            return str(item["chute_id"])
    return None


class PushResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of `push`; `commit_command` is what to run next."""

    success: bool
    model_name: str
    model_revision: str
    hotkey: str
    model_hash: str = ""
    chute_id: str = ""
    error: str = ""
    commit_command: str = ""


async def push(
    model_name: str,
    model_revision: str,
    *,
    hotkey: str,
    chute_user: str,
    api_key: str,
    chutes: Any,
    hub: Any,
    executable: str = "chutes",
    timeout: float = 3600.0,
    env: Mapping[str, str] | None = None,
) -> PushResult:
    """Check, render, deploy and find the chute id; never deploys what validators would reject.

    Raises `LeomaError` (with the reason) for refusals before deploying; a failed deploy or a
    chute that cannot be found comes back as `success=False` with `error`.
    """
    if not api_key:
        raise ConfigError("CHUTES_API_KEY is not set: give --chutes-api-key or set CHUTES_API_KEY")
    if not chute_user.strip():
        raise ConfigError("the Chutes username is not set: give --chute-user or set CHUTE_USER")
    model_hash = await preflight(model_name, model_revision, hotkey, hub)
    name, revision = model_name.strip(), model_revision.strip()
    base = dict(model_name=name, model_revision=revision, hotkey=hotkey, model_hash=model_hash)
    source = render_chute(name, revision, chute_user.strip())
    result = await asyncio.to_thread(deploy, source, api_key, executable=executable, timeout=timeout, env=env)
    if not result.ok:
        return PushResult(success=False, error=result.error, **base)
    try:
        chute_id = await find_chute_id(chutes, name)
    except Exception as exc:  # httpx raises several kinds; all mean the listing could not be read
        return PushResult(success=False, error=f"deployed, but the Chutes API listing failed: {exc}", **base)
    if not chute_id:
        return PushResult(success=False, error=f"deployed, but no chute named {name} is listed by the Chutes API yet; "
                          "look it up with `chutes chutes list` and commit it", **base)
    command = (f"leoma miner commit --model-name {name} --model-revision {revision} --chute-id {chute_id}")
    return PushResult(success=True, chute_id=chute_id, commit_command=command, **base)


# -- the reference miner ---------------------------------------------------------------------


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
                raise ValueError(f"HTTP {resp.status_code} fetching {image}")
            return resp.content
    return base64.b64decode(image, validate=True)


# -- standing --------------------------------------------------------------------------------


class CommitmentView(msgspec.Struct, frozen=True, kw_only=True):
    """The miner's commitment in force on chain, and what validators make of its text."""

    block: int
    count: int
    text: str
    model_name: str = ""
    model_revision: str = ""
    chute_id: str = ""
    problem: str = ""
    """The `invalid_reason` validators give it before any check runs ("" when none)."""


class CheckView(msgspec.Struct, frozen=True, kw_only=True):
    """The latest `miner_checked` for the miner in the local log."""

    validator: str
    block: int
    valid: bool
    invalid_reason: str = ""
    commit_block: int = 0
    model_name: str = ""
    model_revision: str = ""
    chute_id: str = ""
    model_hash: str = ""
    chute_hot: bool = False
    steps: tuple[CheckOutcome, ...] = ()


class ChuteView(msgspec.Struct, frozen=True, kw_only=True):
    """The chute as the Chutes API describes it now."""

    chute_id: str
    reachable: bool
    hot: bool = False
    slug: str = ""
    revision: str = ""


class TaskView(msgspec.Struct, frozen=True, kw_only=True):
    """One task the miner was asked to serve: its reply and the judge's word on it."""

    task_id: int
    validator: str
    block: int
    response: str = ""
    """`accepted`, `failed` or "" (no reply recorded)."""
    failure_class: str = ""
    detail: str = ""
    latency_ms: int = 0
    verdict: str = ""
    """`passed`, `failed`, `judge_failed` or "" (not judged yet)."""
    overall: int = 0
    reasoning: str = ""
    major_issues: tuple[str, ...] = ()


class RivalView(msgspec.Struct, frozen=True, kw_only=True):
    """An eligible miner that committed earlier: the rate needed to dominate it."""

    hotkey: str
    rate: str
    needed: str
    beaten: bool


class RankView(msgspec.Struct, frozen=True, kw_only=True):
    """Where the miner stands in the latest scored epoch (recorded, or freshly computed)."""

    source: str
    """`epoch_scored` (the validator's recorded decision) or `fresh` (computed now from the log)."""
    validator: str
    epoch: int
    winner: str
    rank: int
    eligible: bool
    reason: str = ""
    avg_rate: str = "0"
    completeness: str = "0"
    commit_block: int = -1
    needed_rate: str = ""
    """The rate that dominates every earlier eligible miner ("" when none is earlier)."""
    dominates: bool = False
    earlier: tuple[RivalView, ...] = ()


class MinerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `leoma miner status` shows; `unavailable` names each source that could not be read."""

    hotkey: str
    commitment: CommitmentView | None = None
    check: CheckView | None = None
    chute: ChuteView | None = None
    tasks: tuple[TaskView, ...] = ()
    rank: RankView | None = None
    unavailable: dict[str, str] = {}
    next_step: str = ""


async def read_commitment(chain: Any, netuid: int, hotkey: str) -> CommitmentView | None:
    """The hotkey's commitment in force (None when it has none)."""
    from projections.miners import commit_count_problem, commitment_problem, parse_commitment

    history = (await chain.commitments(netuid)).get(hotkey)
    if history is None:
        return None
    latest = history.latest
    parsed = parse_commitment(latest.text)
    problem = commit_count_problem(history.count) or commitment_problem(parsed, hotkey) or ""

    def text(field: str) -> str:
        value = parsed.get(field)
        return value if isinstance(value, str) else ""

    return CommitmentView(block=history.commit_block, count=history.count, text=latest.text,
                          model_name=text("model_name"), model_revision=text("model_revision"),
                          chute_id=text("chute_id"), problem=problem)


class _MinerOnly(msgspec.Struct):
    miner: str = ""
    hotkey: str = ""


_miner_only = msgspec.json.Decoder(_MinerOnly)
_TASK_KINDS = ("miner_responded", "verdict_recorded", "judge_failed")


def read_log(rows: Any, hotkey: str, *, validator: str | None = None, last_tasks: int = 10) -> tuple[
        CheckView | None, tuple[TaskView, ...], list[tuple[str, int, Any]]]:
    """From log rows: the latest check, the last tasks and the scored epochs `(origin, block, body)`."""
    from leoma.events import EpochScored, JudgeFailed, MinerChecked, MinerResponded, VerdictRecorded, decode_body

    check: tuple[int, int, str, MinerChecked] | None = None
    tasks: dict[tuple[str, int], dict[str, Any]] = {}
    epochs: list[tuple[str, int, Any]] = []
    parts: dict[tuple[str, int], list[tuple[str, bytes]]] = {}
    for row in rows:
        if validator is not None and row.origin != validator:
            continue
        if row.kind == "epoch_detail":
            # A decision's detail parts precede it in its origin's chain (leoma.decisions).
            data = row.body.encode() if isinstance(row.body, str) else bytes(row.body)
            epoch_of = int(row.key.split("/")[1]) if row.key.startswith("epoch/") else -1
            parts.setdefault((row.origin, epoch_of), []).append((row.key, data))
            continue
        if row.kind == "epoch_scored":
            body = decode_body(row.body, row.v)
            if isinstance(body, EpochScored):
                if body.details:
                    from leoma.decisions import join
                    from leoma.errors import LogError

                    try:
                        body = join(body, parts.pop((row.origin, body.epoch), []))
                    except LogError:
                        continue  # an incomplete import: the decision cannot be read yet
                epochs.append((row.origin, row.block, body))
            continue
        if row.kind not in _TASK_KINDS and row.kind != "miner_checked":
            continue
        try:
            who = _miner_only.decode(row.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            who = _MinerOnly()
        if hotkey not in (who.miner, who.hotkey):
            continue
        body = decode_body(row.body, row.v)
        if isinstance(body, MinerChecked):
            if check is None or (row.block, row.seq) >= check[:2]:
                check = (row.block, row.seq, row.origin, body)
            continue
        if not isinstance(body, (MinerResponded, VerdictRecorded, JudgeFailed)):
            continue  # the kinds filtered above decode to these three
        entry = tasks.setdefault((row.origin, body.task_id), {"task_id": body.task_id, "validator": row.origin,
                                                               "block": row.block})
        if isinstance(body, MinerResponded):
            entry.update(response=body.status, failure_class=body.failure_class, detail=body.detail,
                         latency_ms=body.latency_ms)
        elif isinstance(body, VerdictRecorded):
            entry.update(verdict="passed" if body.passed else "failed", overall=body.overall,
                         reasoning=body.reasoning, major_issues=tuple(body.major_issues))
        elif isinstance(body, JudgeFailed):
            entry.update(verdict="judge_failed", reasoning=body.reason)
    check_view = None
    if check is not None:
        c = check[3]
        check_view = CheckView(validator=check[2], block=check[0], valid=c.valid, invalid_reason=c.invalid_reason,
                               commit_block=c.commit_block, model_name=c.model_name,
                               model_revision=c.model_revision, chute_id=c.chute_id, model_hash=c.model_hash,
                               chute_hot=c.chute_hot,
                               steps=c.checks)
    newest = sorted(tasks.values(), key=lambda t: (-t["task_id"], t["validator"]))[:last_tasks]
    return check_view, tuple(TaskView(**t) for t in newest), epochs


def rank_view(scored: Any, hotkey: str, threshold: Fraction, *, validator: str, source: str) -> RankView | None:
    """The miner's place in an `EpochScored`, with the rate it needs against earlier miners."""
    from projections.ranking import Standing, explain

    me = next((a for a in scored.aggregates if a.hotkey == hotkey), None)
    if me is None:
        return None

    def standing(a: Any) -> Standing:
        return Standing(hotkey=a.hotkey, rate=Fraction(a.avg_rate), passed=a.passed,
                        commit_block=a.commit_block if a.commit_block >= 0 else None)

    # Only eligible miners compete; the miner itself is added to see what it would need.
    field = [standing(a) for a in scored.aggregates if a.eligible or a.hotkey == hotkey]
    why = explain(field, threshold, hotkey)
    needed = max((c.needed for c in why.comparisons), default=None)
    return RankView(
        source=source, validator=validator, epoch=scored.epoch, winner=scored.winner, rank=me.rank,
        eligible=me.eligible, reason=me.reason, avg_rate=me.avg_rate, completeness=me.completeness,
        commit_block=me.commit_block, needed_rate=str(needed) if needed is not None else "",
        dominates=why.dominates,
        earlier=tuple(RivalView(hotkey=c.earlier, rate=str(c.earlier_rate), needed=str(c.needed), beaten=c.beaten)
                      for c in why.comparisons),
    )


def _fresh_epoch(log: Any, own: str, netuid: int, consensus: Any) -> Any:
    from projections.epoch import KINDS, score_epoch

    rows = list(log.rows(kinds=KINDS))
    if not rows:
        return None
    block = max(r.block for r in rows)
    return score_epoch(rows, own=own, epoch=block // max(1, consensus.epoch.length), epoch_block=block,
                       netuid=netuid, consensus=consensus)


def next_step(status: MinerStatus) -> str:
    """The one thing the miner should do (or wait for) next, from what is known."""
    c, chk, chute = status.commitment, status.check, status.chute
    if c is None and "chain" not in status.unavailable:
        return "no commitment on chain: deploy with `leoma miner push`, then run the `leoma miner commit` it prints"
    if c is not None and c.problem:
        return f"validators reject your commitment ({c.problem}): fix it and commit again"
    if chute is not None and chute.reachable and not chute.hot:
        return f"chute {chute.chute_id} is cold: warm it up (GET /chutes/warmup/{chute.chute_id}) and keep it hot"
    if chk is None:
        return "not checked yet by this validator: checks run every few minutes after the commitment is revealed"
    if c is not None and 0 < chk.commit_block < c.block:
        return "your latest commitment is newer than the last check: wait for the next check"
    if not chk.valid:
        return f"the last check failed ({chk.invalid_reason}): fix that and, if the model changed, commit again"
    if not status.tasks:
        return "valid: wait for the next task (each validator samples on its rotation turn)"
    r = status.rank
    if r is None:
        return "valid and sampled: wait for the next scored epoch"
    if r.winner == status.hotkey:
        return "you are the winner of the latest epoch"
    if not r.eligible:
        return f"not eligible in the latest epoch ({r.reason})"
    if r.needed_rate:
        return f"to win, raise your average pass rate to {r.needed_rate} (now {r.avg_rate})"
    return "eligible; the earliest committer keeps the crown unless a later miner dominates it"


async def miner_status(
    hotkey: str,
    *,
    netuid: int,
    chain: Any = None,
    log: Any = None,
    chutes: Any = None,
    consensus: Any = None,
    validator: str | None = None,
    last_tasks: int = 10,
    unavailable: Mapping[str, str] | None = None,
) -> MinerStatus:
    """Gather the miner's standing from every source given; a source that fails is named, not fatal."""
    from leoma.consensus import DEFAULT

    consensus = consensus or DEFAULT
    missing: dict[str, str] = dict(unavailable or {})
    commitment = check = chute = rank = None
    tasks: tuple[TaskView, ...] = ()
    if chain is not None:
        try:
            commitment = await read_commitment(chain, netuid, hotkey)
        except Exception as exc:  # any failure of the chain must leave the other sources usable
            missing["chain"] = f"{type(exc).__name__}: {exc}"
    elif "chain" not in missing:
        missing["chain"] = "no network given"
    if log is not None:
        try:
            check, tasks, epochs = read_log(log.rows(), hotkey, validator=validator, last_tasks=last_tasks)
            own = validator or (check.validator if check else None)
            mine = [e for e in epochs if own is None or e[0] == own]
            # The newest decision that speaks of this miner (a newer one may predate its check).
            present = [e for e in mine if any(a.hotkey == hotkey for a in e[2].aggregates)]
            if mine:
                origin, _block, scored = max(present or mine, key=lambda e: (e[1], e[2].epoch))
                rank = rank_view(scored, hotkey, consensus.dominance_threshold, validator=origin, source="epoch_scored")
            elif own is not None:
                scored = _fresh_epoch(log, own, netuid, consensus)
                if scored is not None:
                    rank = rank_view(scored, hotkey, consensus.dominance_threshold, validator=own, source="fresh")
        except LeomaError as exc:
            missing["log"] = str(exc)
    elif "log" not in missing:
        missing["log"] = "no validator log given"
    chute_id = (commitment.chute_id if commitment else "") or (check.chute_id if check else "")
    if chutes is not None and chute_id:
        info = await chutes.chute_info(chute_id)
        chute = (ChuteView(chute_id=chute_id, reachable=True, hot=info.hot, slug=info.slug, revision=info.revision)
                 if info is not None else ChuteView(chute_id=chute_id, reachable=False))
        if info is None:
            missing["chutes"] = f"the Chutes API did not describe chute {chute_id}"
    elif chutes is None:
        missing.setdefault("chutes", "no Chutes API given")
    status = MinerStatus(hotkey=hotkey, commitment=commitment, check=check, chute=chute, tasks=tasks, rank=rank,
                         unavailable=dict(sorted(missing.items())))
    return msgspec.structs.replace(status, next_step=next_step(status))
