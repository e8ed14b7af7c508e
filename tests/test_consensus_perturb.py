"""Every leaf of `consensus.toml` decides something: perturb each one, alone, and watch it change.

One row per leaf: the perturbed value, the probe that observes the behaviour the leaf governs
(the payload a miner receives, the request the judge receives, a reply accepted or refused, a
clip chosen, a window, a ranking, a burn, a hold), and optionally `base`: other leaves set for
both sides so the leaf is in a position to matter. Every probe runs the production path (the
Chutes client built as a validator builds it, the Judge against the Gemini stand-in, the
sampler's and checker's own functions, the pure epoch decision, the weight setter over the
simulated chain). A refusal (the consensus does not load, or the judge cannot be built) is an
observable too: it is what a validator does with such a value.

`test_every_leaf_has_a_perturbation_case` fails when a leaf is added without a row: adding a
section to `Consensus` means adding one row per new leaf here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest

from leoma.errors import ConfigError, LeomaError
from leoma.log import consensus as cons
from leoma.log.consensus import DEFAULT, Consensus, replace_leaf, schema_leaves
from leoma.ops.config import Settings

Probe = Callable[[Consensus, "Env"], Any]


@dataclass
class Row:
    value: Any
    probe: Probe
    base: dict[str, Any] = field(default_factory=dict)
    also: dict[str, Any] = field(default_factory=dict)
    """Leaves changed together with this one because a rule ties them (weights add up to 1)."""


@dataclass
class Env:
    """What the probes share: a temporary directory and the local world (lazily started)."""

    tmp: Path
    world: Any
    source: bytes
    made: int = 0

    def fresh(self, name: str) -> Path:
        """A new directory for one probe run (probes never share state)."""
        self.made += 1
        path = self.tmp / f"{name}-{self.made}"
        path.mkdir()
        return path


# -- probes: the Chutes request and the reply checks ---------------------------------------------


def _video(width: int, height: int, frames: int) -> bytes:
    import numpy as np

    from leoma.adapters.video import encode_mp4

    grid = np.indices((height, width)).sum(axis=0) % 256
    return encode_mp4([np.stack([(grid + 8 * i) % 256] * 3, axis=-1).astype("uint8") for i in range(frames)], 16)


_REPLIES: dict[tuple[int, int, int], bytes] = {}


async def _ask_miner(c: Consensus, reply: bytes) -> tuple[dict[str, Any], tuple[str, str, str]]:
    """A validator's Chutes client asks a chute for a video; the payload the chute received,
    and what the validator made of the reply (status, failure, first words of the detail)."""
    from leoma.adapters.chutes import ChuteInfo
    from leoma.services.context import chutes_client

    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(json.loads(request.content))
        return httpx.Response(200, content=reply, headers={"content-type": "video/mp4"})

    settings = Settings(chute_url_template="http://chute.test/{slug}/generate")
    async with chutes_client(settings, c, transport=httpx.MockTransport(handler), retry_budget=0.0) as client:
        result = await client.generate(ChuteInfo(chute_id="c1", hot=True, slug="miner"), "a prompt", b"\x89PNG")
    seen.pop("image", None)
    return seen, (result.status, result.failure, " ".join(result.detail.split()[:3]))


def reply(width: int = 832, height: int = 480, frames: int = 9) -> Probe:
    key = (width, height, frames)

    def probe(c: Consensus, env: Env) -> Any:
        if key not in _REPLIES:
            _REPLIES[key] = _video(width, height, frames)
        return asyncio.run(_ask_miner(c, _REPLIES[key]))[1]

    return probe


def payload(c: Consensus, env: Env) -> Any:
    return asyncio.run(_ask_miner(c, reply_bytes()))[0]


def reply_bytes() -> bytes:
    key = (832, 480, 9)
    if key not in _REPLIES:
        _REPLIES[key] = _video(*key)
    return _REPLIES[key]



# -- probes: the video gates (issue 18) -----------------------------------------------------------

_GATED = dict(decoded=True, codec="h264", frames=81, declared_frames=81, fps_milli=16000, duration_ms=5062,
              width=832, height=480, first_frame_psnr_cdb=4000, motion_c=900, max_cut_milli=10,
              hashes=("0" * 64,) * 8, source_distance=20)


def gate(**measured: Any) -> Probe:
    """The gate verdict (`projections.gates.gate_reason`) on measurements near the leaf's bound."""

    def probe(c: Consensus, env: Env) -> Any:
        from leoma.log.events import GateMeasurements
        from projections.gates import gate_reason

        return gate_reason(GateMeasurements(**{**_GATED, **measured}), c)

    return probe


def copy_found(c: Consensus, env: Env) -> Any:
    from projections.gates import CopyCandidate, copies

    near = ("0" * 63 + "f",) * 8  # 4 bits from the earlier output in every frame
    return copies([CopyCandidate("a", 1, 1, ("0" * 64,) * 8), CopyCandidate("b", 2, 2, near)], c.gates.copy_max_bits)


def reply_deadline(c: Consensus, env: Env) -> Any:
    from leoma.services.sampler import reply_deadline_block

    return reply_deadline_block(100, 200, c.gates.reply_deadline_share)


def hashed_frames(c: Consensus, env: Env) -> Any:
    from leoma.adapters import gates

    return len(gates.measure(reply_bytes(), b"", hash_frames=c.gates.hash_frames).hashes)


def gate_version(c: Consensus, env: Env) -> Any:
    return c.gates.version  # the prompt_version every verdict reached without the judge carries

# -- probes: the judge ---------------------------------------------------------------------------


async def _judge_calls(c: Consensus, env: Env, replies: list[dict[str, Any]] | None = None,
                       faults: list[str] | None = None) -> dict[str, Any]:
    from leoma.adapters.judge import Judge, JudgeSettings

    world = env.world
    world.judge_faults[:] = faults if faults is not None else ["garbage"]
    world.judge_replies[:] = []
    out: dict[str, Any] = {}
    async with Judge("k", base_url=world.url, retry_sleep=0.0, settings=JudgeSettings.from_consensus(c)) as judge:
        out["description"] = await judge.describe(b"clip")
        out["describe"] = world.last_judge_request
        world.judge_faults[:] = faults if faults is not None else []
        world.judge_replies[:] = list(replies or [_scores(80)])
        result = await judge.evaluate(b"\x89PNG", "The camera pans left.", b"video")
        out["evaluate"] = world.last_judge_request
        out["verdict"] = msgspec.to_builtins(result)
    world.judge_faults[:] = []
    world.judge_replies[:] = []
    return out


def _scores(base: int, **aspects: int) -> dict[str, Any]:
    scores = {a: base for a in cons.ASPECTS} | aspects
    return {"overall_score": 50, "confidence": 90, "aspect_scores": scores, "major_issues": [], "strengths": [],
            "reasoning": "fixed scores"}


def judge_request(which: str, *path: str) -> Probe:
    """The part of the request the judge's stand-in received for `which` ("describe"/"evaluate")."""

    def probe(c: Consensus, env: Env) -> Any:
        node: Any = asyncio.run(_judge_calls(c, env))[which]
        for part in path:
            node = node[part] if not isinstance(node, list) else node[int(part)]
        return node

    return probe


def video_fps(which: str) -> Probe:
    def probe(c: Consensus, env: Env) -> Any:
        request = asyncio.run(_judge_calls(c, env))[which]
        parts = [p for content in request["contents"] for p in content["parts"]]
        return [p.get("videoMetadata") for p in parts if "videoMetadata" in p]

    return probe


def verdict(*replies: dict[str, Any]) -> Probe:
    """What Judge.evaluate made of fixed judge replies (passed, overall score)."""

    def probe(c: Consensus, env: Env) -> Any:
        out = []
        for r in replies:
            v = asyncio.run(_judge_calls(c, env, replies=[r]))["verdict"]
            out.append((v["passed"], v["overall_score"]))
        return out

    return probe


def attempts(c: Consensus, env: Env) -> Any:
    v = asyncio.run(_judge_calls(c, env, faults=["garbage"] * 10))["verdict"]
    return v["attempts"]


# -- probes: the sampler (source candidates and the clip) ----------------------------------------


def _context(c: Consensus, env: Env, **parts: Any) -> Any:
    from leoma.services.context import ServiceContext

    base: dict[str, Any] = dict(settings=Settings(), consensus=c, log=None, chain=None, signer=None, source=None,
                                own=None, chutes=None, hub=None)
    return ServiceContext(**(base | parts))


def _source_store(env: Env) -> Any:
    from leoma.adapters.storage import open_store

    root = env.tmp / "source"
    if not root.exists():
        root.mkdir()
        (root / "big.mp4").write_bytes(b"\0" * 1_500_000)
        (root / "small.mp4").write_bytes(b"\0" * 600_000)
        (root / "real.mp4").write_bytes(env.source)
    return open_store(f"file://{root}")


def candidates(c: Consensus, env: Env) -> Any:
    from leoma.services import sampler

    async def go() -> list[str]:
        store = _source_store(env)
        try:
            return await sampler._candidates(_context(c, env, source=store))
        finally:
            await store.close()

    return asyncio.run(go())


def clip(c: Consensus, env: Env) -> Any:
    """The clip the sampler picks from the one real source video (seed fixed)."""
    from leoma.adapters.storage import open_store
    from leoma.services import sampler

    async def go() -> Any:
        root = env.tmp / "only-source"
        if not root.exists():
            root.mkdir()
            (root / "real.mp4").write_bytes(env.source)
        store = open_store(f"file://{root}")
        try:
            picked = await sampler._pick_clip(_context(c, env, source=store), hashlib.sha256(b"seed").digest())
        finally:
            await store.close()
        return None if picked is None else msgspec.to_builtins(picked[1])

    return asyncio.run(go())


SMALL_SOURCES = {"video.min_source_bytes": 0}


# -- probes: the checker ---------------------------------------------------------------------------


def commit_check(c: Consensus, env: Env) -> Any:
    from leoma.services.checker import check_one

    entries = tuple(SimpleNamespace(block=100 + i, text="{}") for i in range(3))
    checked = asyncio.run(check_one(_context(c, env), 5, "miner-hotkey", entries, frozenset()))
    return checked.invalid_reason


def allowlist_rereads(c: Consensus, env: Env) -> Any:
    """How many allowlist reads the sampler recorded, 150 blocks after the last verified one."""
    from leoma.log.eventlog import EventLog
    from leoma.log.events import AllowlistVerified
    from leoma.services.sampler import current_allowlist

    path = env.fresh("allowlist") / "events.db"
    with EventLog(path, own="val-A") as log:
        log.append(AllowlistVerified(owner_hotkey="owner", digest="d" * 64, interval=50, validators=("val-A",)),
                   key="allowlist/100", block=100)
        ctx = _context(c, env, log=log, signer=SimpleNamespace(ss58_address="val-A"))
        asyncio.run(current_allowlist(ctx, 250))
        return log.count(kind="allowlist_rejected")


def publish_interval(c: Consensus, env: Env) -> Any:
    """The interval `leoma validator publish` gives an allowlist when the owner names none."""
    import importlib

    return importlib.import_module("leoma_cmd.chain_cmds").default_interval(c)


# -- probes: the epoch decision ---------------------------------------------------------------------


def _story() -> Any:
    from tests import test_projections_epoch as story

    return story


def decision(*fields: str, scenario: str = "story") -> Probe:
    """Fields of the pure epoch decision over a fixed log (`scenario`)."""

    def probe(c: Consensus, env: Env) -> Any:
        from projections.epoch import score_epoch
        from tests.builders import NETUID

        story = _story()
        rows = SCENARIOS[scenario]()
        d = score_epoch(rows, own="val-A", epoch=11, epoch_block=story.EPOCH_BLOCK, netuid=NETUID, consensus=c)
        out = msgspec.to_builtins(d)
        return {f: out.get(f) for f in fields}

    return probe


def _failover() -> list[Any]:
    # Task 30's primary (val-A, 30 % 2 == 0) never opens it; val-B opens it 30 blocks into the slot.
    from tests.builders import LogBuilder

    story = _story()
    b = LogBuilder()
    vals = ["val-A", "val-B"]
    for v in vals:
        b.allowlist(v, vals, interval=story.INTERVAL, block=1)
        b.metagraph(v, story.HOTKEYS, block=2)
        b.checked(v, "champ", uid=3, block=3, commit_block=100)
    b.opened("val-B", 30, block=30 * story.INTERVAL + 30, interval=story.INTERVAL, miners=("champ",))
    b.verdict("val-B", 30, "champ", True, block=30 * story.INTERVAL + 40)
    return b.rows()


def _migration(case: str) -> Callable[[], list[Any]]:
    """Small logs where one migration-profile switch matters (interval 10, decided at block 230)."""

    def rows() -> list[Any]:
        from tests.builders import LogBuilder

        b = LogBuilder()
        vals = ["val-A"] if case == "float" else ["val-A", "val-B"]
        b.allowlist("val-A", vals, interval=10, block=1)
        b.metagraph("val-A", ["owner", "m1", "m2", "m3"], block=1)
        b.checked("val-A", "m1", uid=1, block=2, commit_block=5)
        b.checked("val-A", "m2", uid=2, block=2, commit_block=6)
        b.checked("val-A", "m3", uid=3, block=2, commit_block=4, valid=False, reason="chute_not_running")
        if case == "float":  # m1 passes 11 of 20, m2 12 of 20: 0.60 vs 0.55 at margin 0.05
            for t in range(1, 21):
                b.opened("val-A", t, block=t * 10, interval=10)
                b.verdict("val-A", t, "m1", t <= 11, block=t * 10)
                b.verdict("val-A", t, "m2", t <= 12, block=t * 10)
            return b.rows()
        for t in range(2, 22):
            sampler = vals[t % 2]
            b.opened(sampler, t, block=t * 10, interval=10)
            if case == "settle" and t == 21:
                continue  # opened, never judged: the seed saw no verdict file
            b.verdict(sampler, t, "m1", True, block=t * 10)
            if case != "completeness" or t % 4:
                b.verdict(sampler, t, "m2", t % 3 == 0, block=t * 10)
            if case == "unpayable":
                b.verdict(sampler, t, "m3", True, block=t * 10)
        if case == "producers":  # val-B opens val-A's task 22 one block in: not its turn
            b.opened("val-B", 22, block=221, interval=10)
            b.verdict("val-B", 22, "m1", True, block=221)
        return b.rows()

    return rows


def migration(case: str, *fields: str) -> Probe:
    """Fields of the pure epoch decision over a `_migration(case)` log, decided at block 250."""

    def probe(c: Consensus, env: Env) -> Any:
        from projections.epoch import score_epoch
        from tests.builders import NETUID

        d = score_epoch(_migration(case)(), own="val-A", epoch=1, epoch_block=250, netuid=NETUID, consensus=c)
        out = msgspec.to_builtins(d)
        return {f: out.get(f) for f in fields}

    return probe


SCENARIOS: dict[str, Callable[[], list[Any]]] = {
    "story": lambda: _story().story().rows(),
    "empty": lambda: [],
    "failover": _failover,
}


# -- probes: the weight setter over the simulated chain ---------------------------------------------


def _weight_world(tmp: Path) -> Any:
    from leoma.adapters.signing import keypair_from_uri
    from leoma.adapters.simchain import SimChain
    from tests.builders import LogBuilder

    owner = keypair_from_uri("//Owner").ss58_address
    alice = keypair_from_uri("//Alice")
    miner = keypair_from_uri("//Miner0").ss58_address
    sim = SimChain.create(tmp / "chain.jsonl", owner=owner, clock="manual", start_block=1000, netuid=99,
                          weights_rate_limit=1)
    sim.register(owner)
    sim.register(alice.ss58_address, stake=10**12, validator_permit=True)
    uid = sim.register(miner)
    me = alice.ss58_address
    b = LogBuilder()
    b.allowlist(me, [me], interval=50, block=1001, owner=owner)
    b.metagraph(me, [owner, me, miner], block=1001, netuid=99)
    b.checked(me, miner, uid=uid, block=1002, commit_block=900)
    for task in range(20, 34):
        b.opened(me, task, block=task * 50 + 1, interval=50, miners=(miner,))
        b.verdict(me, task, miner, True, block=task * 50 + 4)
    return sim, b.to_log(tmp / "alice.db", own=me), alice


def weight_steps(*blocks: int) -> Probe:
    """What the weight setter does at each of `blocks` (epoch, submitted, withheld, burn reason)."""

    def probe(c: Consensus, env: Env) -> Any:
        from leoma.adapters.chain import Chain
        from leoma.services import weight_setter

        tmp = env.fresh("weights")
        sim, log, alice = _weight_world(tmp)

        async def go() -> list[Any]:
            out = []
            for block in blocks:
                sim.advance_to(block)
                async with Chain(f"sim:{sim.path}") as chain:
                    r = await weight_setter.step(log_=log, chain=chain, wallet=alice, netuid=99, consensus=c)
                out.append((r.epoch, r.submitted, bool(r.withheld), r.decision.burn_reason if r.decision else ""))
            return out

        try:
            return asyncio.run(go())
        finally:
            log.close()

    return probe


def anchored_epoch(anchor_block: int) -> Probe:
    """The anchored rule: anchor the log's head at `anchor_block`, then what epoch 10 decides on
    (the anchor's epoch, the cutoff observed, the window, the tasks refused as late, the burn)."""

    def probe(c: Consensus, env: Env) -> Any:
        from leoma.adapters.chain import Chain
        from leoma.mirror import anchors
        from leoma.services import weight_setter

        tmp = env.fresh("anchored")
        sim, log, alice = _weight_world(tmp)

        async def go() -> Any:
            sim.advance_to(anchor_block)
            head = log.head(alice.ss58_address)
            async with Chain(f"sim:{sim.path}") as chain:
                done = await anchors.anchor_step(log, chain, alice, 99, c, published=(head.origin_seq, head.hash))
                sim.advance_to(10 * 180 + 5)
                r = await weight_setter.step(log_=log, chain=chain, wallet=alice, netuid=99, consensus=c)
            seen = anchors.observed(log, 10)
            d = r.decision
            return (getattr(done, "epoch", None), seen.cutoff_block if seen else None, d.window if d else None,
                    len(d.late_tasks) if d else None, d.burn_reason if d else r.held)

        try:
            return asyncio.run(go())
        finally:
            log.close()

    return probe


# Epoch 10 scores at block 1800 (length 180); far later every task is past the lookback floor.
FAR = 10 * 180 + DEFAULT.window.max_lookback_blocks + 2 * 180


def loads(c: Consensus, env: Env) -> Any:
    """Whether the consensus loads (a refusal is observed by `observe`, with its message)."""
    return "loaded"


# -- the table -----------------------------------------------------------------------------------------

W = "judge.aspect_weights."

ROWS: dict[str, Row] = {
    "version": Row(2, loads),
    # rotation
    "rotation.interval": Row(37, publish_interval),
    "rotation.failover_grace_blocks": Row(40, decision("window", "burn_reason", scenario="failover")),
    "rotation.allowlist_refresh_blocks": Row(100, allowlist_rereads),
    # epoch
    "epoch.length": Row(360, weight_steps(10 * 180 + 5)),
    "epoch.burn_after_epochs_without_data": Row(10_000, weight_steps(10 * 180 + 5, FAR)),
    # window
    "window.tasks": Row(10, decision("window")),
    "window.settle_margin": Row(5, decision("window")),
    "window.max_lookback_blocks": Row(1000, decision("window")),
    "window.completeness": Row("1/2", decision("aggregates")),
    "window.min_distinct_validators": Row("1/4", decision("aggregates"), base={"window.completeness": "1/4"}),
    "window.settle": Row("produced", migration("settle", "window")),
    "window.producers": Row("ring-order", migration("producers", "window")),
    "window.completeness_tolerance": Row("1/5", migration("completeness", "aggregates")),
    # ranking
    "ranking.dominance_threshold": Row("0", decision("winner")),
    "ranking.max_commits_per_hotkey": Row(5, commit_check),
    "ranking.burn_uid": Row(5, decision("weights", scenario="empty")),
    "ranking.arithmetic": Row("float", migration("float", "winner")),
    "ranking.unpayable_winner": Row("burn", migration("unpayable", "winner", "weights")),
    # judge: models, prompts and generation settings, as the judge's endpoint receives them
    "judge.evaluation_model": Row("gemini-other", judge_request("evaluate", "model")),
    "judge.description_model": Row("gemini-other", judge_request("describe", "model")),
    "judge.describe_prompt": Row("describe/v0", judge_request("describe", "contents")),
    "judge.describe_prompt_sha256": Row("0" * 64, judge_request("describe", "contents")),
    "judge.evaluate_prompt": Row("evaluate/v0", judge_request("evaluate", "contents")),
    "judge.evaluate_prompt_sha256": Row("0" * 64, judge_request("evaluate", "contents")),
    "judge.evaluate_system_prompt": Row("evaluate-system/v0", judge_request("evaluate", "systemInstruction")),
    "judge.evaluate_system_prompt_sha256": Row("0" * 64, judge_request("evaluate", "systemInstruction")),
    "judge.evaluation_fps": Row(4, video_fps("evaluate")),
    "judge.description_fps": Row(4, video_fps("describe")),
    "judge.media_resolution": Row("low", judge_request("evaluate", "generationConfig", "mediaResolution")),
    "judge.evaluation_temperature": Row("9/10", judge_request("evaluate", "generationConfig", "temperature")),
    "judge.description_temperature": Row("9/10", judge_request("describe", "generationConfig", "temperature")),
    "judge.evaluation_max_tokens": Row(1, judge_request("evaluate", "generationConfig", "maxOutputTokens")),
    "judge.description_max_tokens": Row(1, judge_request("describe", "generationConfig", "maxOutputTokens")),
    "judge.attempts": Row(1, attempts),
    # judge: the pass rule
    "judge.pass_threshold": Row(85, verdict(_scores(80))),
    "judge.critical_threshold": Row(60, verdict(_scores(85, prompt_adherence=55))),
    # one aspect at 100, the rest at 70: moving 1/20 of weight onto it adds 1.5 points
    W + "first_frame_fidelity": Row("3/10", verdict(_scores(70, first_frame_fidelity=100)),
                                    also={W + "camera_composition": "0"}),
    W + "prompt_adherence": Row("3/10", verdict(_scores(70, prompt_adherence=100)),
                                also={W + "camera_composition": "0"}),
    W + "motion_quality": Row("1/5", verdict(_scores(70, motion_quality=100)),
                              also={W + "camera_composition": "0"}),
    W + "temporal_consistency": Row("1/4", verdict(_scores(70, temporal_consistency=100)),
                                    also={W + "camera_composition": "0"}),
    W + "visual_quality": Row("3/20", verdict(_scores(70, visual_quality=100)),
                              also={W + "camera_composition": "0"}),
    W + "camera_composition": Row("1/10", verdict(_scores(70, camera_composition=100)),
                                  also={W + "visual_quality": "1/20"}),
    # video: what a miner's reply must be
    "video.required_width": Row(640, reply()),
    "video.required_height": Row(360, reply()),
    "video.resolution_tolerance": Row(8, reply(width=856)),
    "video.max_response_bytes": Row(1000, reply()),
    "video.max_frames": Row(5, reply()),
    "video.max_pixels": Row(832 * 480 - 1, reply()),
    # video: which sources are candidates, and the clip cut from one
    "video.min_source_bytes": Row(1_000, candidates),
    "video.max_source_bytes": Row(1_200_000, candidates),
    "video.clip_seconds": Row(3, clip, base=SMALL_SOURCES),
    "video.scene_threshold": Row("99/100", clip, base=SMALL_SOURCES),
    "video.boundary_margin": Row("1", clip, base=SMALL_SOURCES),
    "video.safe_start_offset": Row("4", clip, base=SMALL_SOURCES),
    # the request every miner's chute receives
    "request.fps": Row(24, payload),
    "request.frames": Row(49, payload),
    "request.resolution": Row("720p", payload),
    "request.fast": Row(False, payload),
    # gates: what a miner's video must be before the judge sees it
    "gates.version": Row("gates/v0", gate_version),
    "gates.codecs": Row("hevc", gate()),
    "gates.min_frames": Row(82, gate()),
    "gates.max_frames": Row(80, gate()),
    "gates.fps_tolerance_milli": Row(100, gate(fps_milli=16400)),
    "gates.min_duration_ms": Row(6000, gate()),
    "gates.max_duration_ms": Row(5000, gate()),
    "gates.min_first_frame_psnr_cdb": Row(4100, gate()),
    "gates.min_motion_c": Row(1000, gate()),
    "gates.max_cut_milli": Row(5, gate()),
    "gates.hash_frames": Row(4, hashed_frames),
    "gates.copy_max_bits": Row(3, copy_found),
    "gates.source_max_bits": Row(25, gate()),
    "gates.reply_deadline_share": Row("1/2", reply_deadline),
    # anchors: decisions fixed by the chain
    "anchors.enabled": Row(True, weight_steps(10 * 180 + 5)),
    "anchors.cutoff_margin": Row(100, anchored_epoch(1750), base={"anchors.enabled": True}),
    "anchors.grace_blocks": Row(1000, anchored_epoch(1750), base={"anchors.enabled": True}),
}


def test_every_leaf_has_a_perturbation_case() -> None:
    leaves = schema_leaves()
    missing = [leaf for leaf in leaves if leaf not in ROWS]
    stale = [leaf for leaf in ROWS if leaf not in leaves]
    assert not missing, f"add a row to ROWS for each new consensus leaf: {', '.join(missing)}"
    assert not stale, f"ROWS names leaves the consensus no longer has: {', '.join(stale)}"
    assert list(cons.leaves(DEFAULT)) == leaves


# -- running a row ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from leoma.devnet.clips import render_source
    from leoma.devnet.world import World

    world = World(frames=9)
    world.start_thread()
    source = render_source(3, shots=(("left", 3.0), ("right", 9.0), ("up", 3.0)), width=320, height=192).video
    try:
        yield Env(tmp=tmp_path_factory.mktemp("perturb"), world=world, source=source)
    finally:
        world.stop_thread()


def _with(c: Consensus, changes: dict[str, Any]) -> Consensus:
    data = msgspec.to_builtins(c)
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        assert last in node, path
        node[last] = value
    return msgspec.convert(data, Consensus)


def observe(row: Row, c: Consensus | Exception, env: Env) -> Any:
    if isinstance(c, Exception):
        return ("refused", str(c))
    try:
        return row.probe(c, env)
    except (ConfigError, LeomaError) as exc:
        return ("refused", str(exc))


@pytest.mark.parametrize("leaf", sorted(ROWS))
def test_perturbing_a_leaf_changes_what_it_governs_and_the_digest(leaf: str, env: Env) -> None:
    row = ROWS[leaf]
    base = _with(DEFAULT, row.base)
    current = cons.leaves(base)[leaf]
    assert row.value != current, f"the perturbed value of {leaf} is its current value"
    try:
        perturbed: Consensus | Exception = _with(base, {leaf: row.value, **row.also})
    except (ConfigError, msgspec.ValidationError) as exc:
        perturbed = exc
    before = observe(row, base, env)
    assert not (isinstance(before, tuple) and before[:1] == ("refused",)), f"{leaf}: the base is refused: {before}"
    after = observe(row, perturbed, env)
    assert after != before, f"{leaf} = {row.value!r} changed nothing that it governs ({before!r})"
    if isinstance(perturbed, Consensus):
        assert perturbed.digest != base.digest, f"{leaf} is not covered by the digest"
    else:
        assert leaf.split(".")[-1] in str(perturbed) or "version" in str(perturbed), perturbed


def test_replace_leaf_validates_like_a_file() -> None:
    assert replace_leaf(DEFAULT, "window.tasks", 7).window.tasks == 7
    with pytest.raises(ConfigError, match="not a consensus leaf"):
        replace_leaf(DEFAULT, "window.nope", 1)
    with pytest.raises(ConfigError, match="aspect_weights must add up to 1"):
        replace_leaf(DEFAULT, W + "motion_quality", "1/2")


def test_async_probes_are_not_left_running() -> None:
    # The probes use asyncio.run; none may leave a loop set for the next test.
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()

