"""The local world: procedural clips, the measuring judge stand-in, and the reference miners
ranked by the real adapters over 20 tasks."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np
import pytest

from leoma.adapters import video
from leoma.adapters.chutes import ChutesClient
from leoma.adapters.judge import Judge, JudgeFailure, JudgeSettings
from leoma.devnet import judge_standin
from leoma.devnet.clips import CONTENT_SHIFT, DIRECTIONS, render_source
from leoma.devnet.world import World


def _gray(frames):
    return [f.mean(axis=2) for f in frames]


def test_clips_are_deterministic():
    a = render_source(9, width=128, height=96)
    b = render_source(9, width=128, height=96)
    assert a.directions == b.directions and a.cut_times == b.cut_times
    fa, fb = video.decode_frames(a.video), video.decode_frames(b.video)
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_estimated_motion_matches_the_rendered_camera(direction):
    clip = render_source(1, shots=((direction, 1.0),), width=416, height=240, speed=2)
    m = judge_standin.measure(None, _gray(video.decode_frames(clip.video)))
    assert m.direction == direction
    dx, dy = CONTENT_SHIFT[direction]
    assert m.speed == pytest.approx(2.0 * (abs(dx) + abs(dy)), abs=0.3)


@pytest.mark.parametrize("prompt, direction", [
    ("The camera pans left slowly", "left"), ("camera panning to the right", "right"),
    ("It tilts up over the roofs", "up"), ("The camera tilts down", "down"),
    ("A static camera watches", "static"), ("A dog runs", None),
])
def test_direction_in_prompt(prompt, direction):
    assert judge_standin.direction_in(prompt) == direction


async def test_world_serves_in_the_running_loop():
    world = World()
    miner = world.add_miner("faithful", name="f")
    await world.start()
    try:
        async with ChutesClient(world.url, "", world.generate_url_template) as c:
            info = await c.chute_info(miner.chute_id)
        assert info is not None and info.slug == "devnet-f"
    finally:
        await world.stop()


def test_add_miner_refuses_bad_input():
    world = World()
    with pytest.raises(ValueError, match="unknown behaviour"):
        world.add_miner("telepathic")
    with pytest.raises(ValueError, match="copies"):
        world.add_miner("copycat")


RANKED = ("faithful", "static", "noisy", "flaky", "copycat", "wrong_resolution", "slow", "garbage", "reject", "cold")


@pytest.fixture(scope="module")
def ranked_world():
    w = World(frames=17, slow_seconds=60.0)
    for behaviour in RANKED:
        if behaviour == "copycat":
            w.add_miner("copycat", name="copycat", copies="faithful")
        else:
            w.add_miner(behaviour, name=behaviour)
    w.start_thread()
    yield w
    w.stop_thread()


@pytest.mark.slow
async def test_judge_ranks_the_faithful_miner_first(ranked_world):
    """Twenty tasks through the real adapters; faithful beats every miner with other weights.

    A miner's task score is its overall score when it produced an accepted video and 0 when it
    failed by its own fault; infra faults (the cold chute) and judge failures leave the task out.
    The copycat serves faithful's weights, so the judge cannot tell them apart (duplicate
    detection by weights hash is what removes it, see test_hub).
    """
    world = ranked_world
    scores: dict[str, list[int]] = defaultdict(list)
    explained = 0
    async with ChutesClient(world.url, "", world.generate_url_template, retry_base_delay=0.01) as chutes, \
            Judge("k", base_url=world.url, retry_sleep=0.0, settings=JudgeSettings()) as gemini:
        for task in range(20):
            direction = DIRECTIONS[task % 4]
            clip = render_source(100 + task, shots=((direction, 1.0),), width=416, height=240, speed=2).video
            prompt = await gemini.describe(clip)
            assert judge_standin.direction_in(prompt) == direction
            png = video.first_frame_png(clip)

            async def run(name: str) -> tuple[str, object]:
                info = await chutes.chute_info(world.miners[name].chute_id)
                # Only the slow miner gets a short deadline: it sleeps a minute, the rest never near it.
                reply = await chutes.generate(info, prompt, png, timeout=0.5 if name == "slow" else 120.0)
                if reply.status != "ok":
                    return name, reply
                return name, await gemini.evaluate(png, prompt, reply.video)

            for name, result in await asyncio.gather(*(run(n) for n in RANKED)):
                if isinstance(result, JudgeFailure) or getattr(result, "failure", "") == "infra":
                    continue
                if hasattr(result, "overall_score"):
                    assert "Measured:" in result.reasoning
                    assert result.passed or result.major_issues, result
                    explained += 1
                    scores[name].append(result.overall_score)
                else:
                    scores[name].append(0)
    mean = {name: sum(v) / len(v) for name, v in scores.items()}
    assert "cold" not in mean  # only infra faults: never scored
    assert explained == 20 * 5, mean  # faithful, static, noisy, flaky, copycat: judged every task
    assert mean["slow"] == mean["wrong_resolution"] == mean["garbage"] == mean["reject"] == 0
    for name, value in mean.items():
        if name not in ("faithful", "copycat"):
            assert mean["faithful"] > value, (name, mean)
    assert mean["copycat"] == mean["faithful"]
    assert all(s >= 75 for s in scores["faithful"])
