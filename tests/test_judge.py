"""leoma.adapters.judge: the seed's normalisation vectors (§5.6) and the real google-genai client against
the local world's Gemini stand-in, including every way a judge reply can be unusable."""

from __future__ import annotations

import pytest

from leoma.adapters import judge, video
from leoma.adapters.judge import (
    Judge,
    JudgeFailure,
    JudgeSettings,
    MalformedReply,
    Verdict,
    clamp_score,
    normalise_verdict,
)
from leoma.devnet.clips import render_source
from leoma.devnet.world import World
from leoma.errors import AdapterError

ASPECTS6 = dict(zip(judge.ASPECTS, (88, 84, 82, 85, 87, 80)))


# -- pure normalisation: every vector of seed-spec §5.6 ----------------------------------------

# The pass rule is the weighted aspects (consensus `judge.aspect_weights`), never the model's own
# overall score: the seed's vectors keep their verdicts, the overall is the weighted one.

def test_vector_pass():
    v = normalise_verdict({"overall_score": 86, "confidence": 89, "aspect_scores": ASPECTS6})
    assert (v.passed, v.overall_score, v.model_overall_score, v.confidence) == (True, 85, 86, 89)


def test_vector_critical_floor_fails():
    v = normalise_verdict({"overall_score": 78, "confidence": 89,
                           "aspect_scores": {**ASPECTS6, "first_frame_fidelity": 42}})
    # 85 - 0.25 * (88 - 42) = 73.5 exactly, half to even -> 74
    assert (v.passed, v.overall_score, v.critical_floor) == (False, 74, 42)


def test_the_models_overall_score_never_decides():
    weak = {a: 60 for a in judge.ASPECTS}
    v = normalise_verdict({"overall_score": 100, "confidence": 100, "aspect_scores": weak})
    assert (v.passed, v.overall_score, v.model_overall_score) == (False, 60, 100)
    strong = {a: 90 for a in judge.ASPECTS}
    assert normalise_verdict({"overall_score": 0, "aspect_scores": strong}).passed


def test_the_aspect_weights_decide():
    scores = dict(zip(judge.ASPECTS, (100, 100, 0, 100, 0, 0)))  # 0.25+0.25+0.2 = 70
    assert not normalise_verdict({"aspect_scores": scores}).passed
    heavy = {"first_frame_fidelity": "3/10", "prompt_adherence": "3/10", "motion_quality": "0",
             "temporal_consistency": "1/5", "visual_quality": "1/10", "camera_composition": "1/10"}
    assert normalise_verdict({"aspect_scores": scores}, weights=heavy).overall_score == 80
    assert normalise_verdict({"aspect_scores": scores}, weights=heavy).passed


def test_vector_not_json_is_a_parse_error():
    # The seed turned this into a failed verdict; we retry and then exclude (JudgeFailure).
    with pytest.raises(MalformedReply, match="Parse error"):
        judge.parse_reply("not-json")


def test_vector_string_overall_rounds_half_to_even():
    v = normalise_verdict({"overall_score": "74.5", "aspect_scores": {
        "first_frame_fidelity": 50, "prompt_adherence": 99, "temporal_consistency": 50.4}})
    # missing aspects count 0: 12.5 + 24.75 + 10 = 47.25 -> 47
    assert (v.model_overall_score, v.overall_score, v.passed) == (74, 47, False)
    assert v.aspect_scores["temporal_consistency"] == 50


def test_vector_weighted_sum_when_no_overall():
    v = normalise_verdict({"aspect_scores": {a: 80 for a in judge.ASPECTS}})
    assert (v.overall_score, v.passed) == (80, True)


def test_vector_half_rounds_up_to_even_fifty():
    v = normalise_verdict({"overall_score": 75, "aspect_scores": {
        "first_frame_fidelity": 49.5, "prompt_adherence": 90, "temporal_consistency": 90,
        "motion_quality": 80, "visual_quality": 80, "camera_composition": 80}})
    assert (v.aspect_scores["first_frame_fidelity"], v.overall_score, v.passed) == (50, 77, True)


def test_vector_no_aspects_floor_zero():
    v = normalise_verdict({"overall_score": 90, "confidence": 80})
    assert (v.overall_score, v.critical_floor, v.passed) == (0, 0, False)
    assert judge.missing_fields({"overall_score": 90, "confidence": 80}) == [
        f"aspect_scores.{a}" for a in judge.ASPECTS]


@pytest.mark.parametrize("value, expected", [
    (74.5, 74), (75.5, 76), (49.5, 50), (0.5, 0), ("74.5", 74), (150, 100), (-3, 0),
    ("abc", 7), (None, 7), (float("nan"), 7), (float("inf"), 7), ([1], 7),
])
def test_clamp(value, expected):
    assert clamp_score(value, 7) == expected


def test_weighted_sum_is_exact():
    # 0.25*76 + (0.25 + 0.15 + 0.20 + 0.10 + 0.05)*74 = 74.5 exactly -> 74 (half to even),
    # whatever binary floats would have made of it.
    scores = dict(zip(judge.ASPECTS, (76, 74, 74, 74, 74, 74)))
    assert normalise_verdict({"aspect_scores": scores}).overall_score == 74


def test_thresholds_and_weights_are_parameters():
    obj = {"overall_score": 70, "aspect_scores": {a: 60 for a in judge.ASPECTS}}
    assert not normalise_verdict(obj).passed
    assert not normalise_verdict(obj, pass_threshold=70, critical_threshold=60).passed  # weighted is 60
    assert normalise_verdict(obj, pass_threshold=60, critical_threshold=60).passed


def test_fenced_json_and_lists():
    obj = judge.parse_reply('```json\n{"overall_score": 1, "major_issues": ["a", 2], "strengths": "x"}\n```')
    v = normalise_verdict(obj)
    assert (v.major_issues, v.strengths) == (("a", "2"), ())
    with pytest.raises(MalformedReply, match="not an object"):
        judge.parse_reply("[1, 2]")


def test_prompt_versions_are_exposed():
    assert judge.DESCRIBE_VERSION == "describe/v1" and judge.EVALUATE_VERSION == "evaluate/v1"


def test_no_api_key_is_refused():
    with pytest.raises(AdapterError, match="GEMINI_API_KEY"):
        Judge("")


# -- against the Gemini stand-in ------------------------------------------------------------------

@pytest.fixture(scope="module")
def world():
    w = World(frames=17)
    w.start_thread()
    yield w
    w.stop_thread()


@pytest.fixture(scope="module")
def clip():
    return render_source(5, shots=(("left", 2.0),), width=832, height=480).video


@pytest.fixture
async def gemini(world):
    world.judge_faults.clear()
    settings = JudgeSettings(evaluate_model="gemini-test-eval", describe_model="gemini-test-desc")
    async with Judge("test-key", base_url=world.url, retry_sleep=0.0, settings=settings) as j:
        yield j


async def test_describe_names_the_motion(gemini, clip, world):
    prompt = await gemini.describe(clip)
    assert prompt.startswith("The camera pans left")
    assert 50 <= len(prompt.split()) <= 90
    assert world.last_judge_parts == ["text", "text", "video/mp4"]
    assert world.requests[-1][1] == "/v1beta/models/gemini-test-desc:generateContent" or \
        world.requests[-1][1].endswith("/models/gemini-test-desc:generateContent")
    assert world.requests[-1][2]["x-goog-api-key"] == "test-key"


async def test_describe_gives_up_with_an_adapter_error(gemini, clip, world):
    world.judge_faults[:] = ["http500"] * 3
    with pytest.raises(AdapterError, match="describe/v1"):
        await gemini.describe(clip)


async def test_evaluate_the_source_itself_passes(gemini, clip, world):
    png = video.first_frame_png(clip)
    v = await gemini.evaluate(png, "The camera pans left across the tiles.", clip)
    assert isinstance(v, Verdict) and v.passed, v
    assert "Measured:" in v.reasoning
    # The frame goes as a PNG, labelled as one (the seed said JPEG).
    assert world.last_judge_parts == ["text", "text", "image/png", "text", "video/mp4"]


async def test_evaluate_wrong_direction_fails_with_reason(gemini, clip):
    png = video.first_frame_png(clip)
    v = await gemini.evaluate(png, "The camera tilts up slowly.", clip)
    assert isinstance(v, Verdict) and not v.passed
    assert v.aspect_scores["prompt_adherence"] < 50
    assert any("prompt asks for up" in issue for issue in v.major_issues)


@pytest.mark.parametrize("fault", ["garbage", "blocked", "missing", "http500"])
async def test_bad_replies_are_retried(gemini, clip, world, fault):
    world.judge_faults[:] = [fault, fault]
    v = await gemini.evaluate(video.first_frame_png(clip), "The camera pans left.", clip)
    assert isinstance(v, Verdict)
    assert world.judge_faults == []


@pytest.mark.parametrize("fault, reason", [
    ("garbage", "Parse error"), ("blocked", "blocked"), ("missing", "misses aspect_scores"), ("http500", "500"),
])
async def test_persistent_bad_replies_become_a_judge_failure(gemini, clip, world, fault, reason):
    world.judge_faults[:] = [fault] * 3
    result = await gemini.evaluate(video.first_frame_png(clip), "The camera pans left.", clip)
    assert isinstance(result, JudgeFailure)
    assert result.attempts == 3 and reason in result.reason
    assert result.prompt_version == "evaluate/v1"
