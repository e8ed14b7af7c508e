"""The judge: Gemini (google-genai) describes a source clip and scores a miner's video.

Two calls, each with a versioned prompt (`DESCRIBE_VERSION`, `EVALUATE_VERSION`) so a verdict
names the instructions it was reached under. Everything that shapes a call — models, prompt
texts (packaged files pinned by sha256), temperatures, token limits, media resolution, frame
rates, attempts — comes from the consensus through `JudgeSettings.from_consensus`.

The pure part — turning the model's JSON into a `Verdict` — is `normalise_verdict`, with the
one pass rule: the exact weighted sum of the six clamped aspect scores (consensus
`judge.aspect_weights`), rounded half to even, must reach `pass_threshold`, and the lowest
critical aspect must reach `critical_threshold`. The model's own `overall_score` is kept for
people (`model_overall_score`) and never decides: one number is the easiest thing for a video
to talk a model into, and the weights are what the consensus pins. A reply that is not usable JSON, is blocked, or misses fields
is retried and then reported as a `JudgeFailure`: the miner is left out of scoring for that
task, never failed for the judge's trouble.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from typing import Any, Mapping

import msgspec

from leoma.adapters import retry as retry_policy
from leoma.errors import AdapterError
from leoma.log.consensus import ASPECTS, CRITICAL_ASPECTS, DEFAULT as _PINNED, Consensus

__all__ = [
    "ASPECTS",
    "DEFAULT_WEIGHTS",
    "DESCRIBE_VERSION",
    "EVALUATE_VERSION",
    "Judge",
    "JudgeFailure",
    "JudgeSettings",
    "MalformedReply",
    "Verdict",
    "clamp_score",
    "normalise_verdict",
    "parse_reply",
]

log = logging.getLogger("leoma.adapters.judge")

DESCRIBE_VERSION = _PINNED.judge.describe_prompt
EVALUATE_VERSION = _PINNED.judge.evaluate_prompt

# The aspects, their weights and the critical ones are consensus values: one definition, pinned.
DEFAULT_WEIGHTS: dict[str, str] = dict(_PINNED.judge.aspect_weights)

# The packaged prompts of the packaged consensus (each checked against its pinned sha256).
DESCRIBE_INSTRUCTION = _PINNED.prompt("describe")
EVALUATE_SYSTEM = _PINNED.prompt("evaluate_system")
EVALUATE_INSTRUCTION = _PINNED.prompt("evaluate")

_SCORE = {"type": "integer", "minimum": 0, "maximum": 100}
RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "overall_score": _SCORE,
        "confidence": _SCORE,
        "aspect_scores": {
            "type": "object",
            "properties": {a: _SCORE for a in ASPECTS},
            "required": list(ASPECTS),
        },
        "major_issues": {"type": "array", "items": {"type": "string"}},
        "strengths": {"type": "array", "items": {"type": "string"}},
        "reasoning": {"type": "string"},
    },
    "required": ["overall_score", "confidence", "aspect_scores", "major_issues", "strengths", "reasoning"],
}


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The judge's normalised verdict on one generated video."""

    passed: bool
    overall_score: int
    confidence: int
    aspect_scores: dict[str, int]
    critical_floor: int
    major_issues: tuple[str, ...] = ()
    strengths: tuple[str, ...] = ()
    reasoning: str = ""
    prompt_version: str = EVALUATE_VERSION
    model_overall_score: int = -1
    """The model's own overall score (-1 when it gave none); shown, never decisive."""


class JudgeFailure(msgspec.Struct, frozen=True, kw_only=True):
    """The judge gave no usable answer; the miner is excluded from this task, not failed."""

    reason: str
    attempts: int
    prompt_version: str = EVALUATE_VERSION


class JudgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How verdicts are reached; build it with `from_consensus` (the defaults are the packaged
    consensus's values, so a test that names none runs what production runs)."""

    describe_model: str = _PINNED.judge.description_model
    evaluate_model: str = _PINNED.judge.evaluation_model
    weights: dict[str, str] = msgspec.field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    pass_threshold: int = _PINNED.judge.pass_threshold
    critical_threshold: int = _PINNED.judge.critical_threshold
    video_fps: int = _PINNED.judge.evaluation_fps
    describe_fps: int = _PINNED.judge.description_fps
    media_resolution: str = _PINNED.judge.media_resolution
    describe_attempts: int = _PINNED.judge.attempts
    evaluate_attempts: int = _PINNED.judge.attempts
    describe_temperature: str = _PINNED.judge.description_temperature
    evaluate_temperature: str = _PINNED.judge.evaluation_temperature
    describe_max_tokens: int = _PINNED.judge.description_max_tokens
    evaluate_max_tokens: int = _PINNED.judge.evaluation_max_tokens
    describe_version: str = DESCRIBE_VERSION
    evaluate_version: str = EVALUATE_VERSION
    describe_prompt: str = DESCRIBE_INSTRUCTION
    evaluate_prompt: str = EVALUATE_INSTRUCTION
    evaluate_system: str = EVALUATE_SYSTEM

    @classmethod
    def from_consensus(cls, consensus: Consensus, **changes: Any) -> JudgeSettings:
        """Every judge value of `consensus` (prompt texts checked against their pins); `changes`
        override fields (a test's model names)."""
        j = consensus.judge
        values: dict[str, Any] = dict(
            describe_model=j.description_model, evaluate_model=j.evaluation_model, weights=dict(j.aspect_weights),
            pass_threshold=j.pass_threshold, critical_threshold=j.critical_threshold, video_fps=j.evaluation_fps,
            describe_fps=j.description_fps, media_resolution=j.media_resolution, describe_attempts=j.attempts,
            evaluate_attempts=j.attempts, describe_temperature=j.description_temperature,
            evaluate_temperature=j.evaluation_temperature, describe_max_tokens=j.description_max_tokens,
            evaluate_max_tokens=j.evaluation_max_tokens, describe_version=j.describe_prompt,
            evaluate_version=j.evaluate_prompt, describe_prompt=consensus.prompt("describe"),
            evaluate_prompt=consensus.prompt("evaluate"), evaluate_system=consensus.prompt("evaluate_system"),
        )
        values.update(changes)
        return cls(**values)


class MalformedReply(AdapterError):
    """The judge's reply cannot be turned into a verdict (not JSON, not an object, fields missing)."""


def clamp_score(value: object, default: int = 0) -> int:
    """The seed's clamp: round half to even, limit to 0..100, `default` when not a finite number."""
    try:
        number = Fraction(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return default
    return max(0, min(100, round(number)))


def parse_reply(text: str) -> dict[str, Any]:
    """The JSON object in a judge reply (a ``` fence is unwrapped); `MalformedReply` otherwise."""
    body = text or ""
    if "```" in body:
        body = body.split("```", 2)[1]
        if body.startswith("json"):
            body = body[4:]
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MalformedReply(f"Parse error: judge reply is not JSON: {body[:100]!r}") from exc
    if not isinstance(obj, dict):
        raise MalformedReply(f"judge reply is JSON but not an object: {type(obj).__name__}")
    return obj


def missing_fields(obj: Mapping[str, Any]) -> list[str]:
    """Fields the pass rule needs that the reply lacks: the six aspect scores (a score that is
    not a number counts as missing). The model's overall score and confidence decide nothing."""
    missing: list[str] = []
    aspects = obj.get("aspect_scores")
    aspects = aspects if isinstance(aspects, dict) else {}
    missing += [f"aspect_scores.{a}" for a in ASPECTS if clamp_score(aspects.get(a), -1) < 0]
    return missing


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value[:20]) if isinstance(value, list) else ()


def normalise_verdict(
    obj: Mapping[str, Any],
    *,
    weights: Mapping[str, str | float] = DEFAULT_WEIGHTS,
    pass_threshold: int = 75,
    critical_threshold: int = 50,
) -> Verdict:
    """The pass rule (the only one): clamp every aspect score (the seed's clamp), take their
    weighted sum with `weights` in exact arithmetic, round it half to even: that is the overall
    score; pass iff it is >= `pass_threshold` and the lowest of fidelity, adherence and temporal
    consistency is >= `critical_threshold`. The model's own overall score is kept, not used."""
    raw = obj.get("aspect_scores")
    raw = raw if isinstance(raw, dict) else {}
    aspects = {a: clamp_score(raw.get(a), 0) for a in ASPECTS}
    weighted = sum((Fraction(str(weights[a])) * aspects[a] for a in ASPECTS), Fraction(0))
    overall = clamp_score(weighted)
    floor = min(aspects[a] for a in CRITICAL_ASPECTS)
    return Verdict(
        passed=overall >= pass_threshold and floor >= critical_threshold,
        overall_score=overall,
        model_overall_score=clamp_score(obj.get("overall_score"), -1),
        confidence=clamp_score(obj.get("confidence"), 0),
        aspect_scores=aspects,
        critical_floor=floor,
        major_issues=_strings(obj.get("major_issues")),
        strengths=_strings(obj.get("strengths")),
        reasoning=str(obj.get("reasoning") or "").strip(),
    )


def _reply_text(response: Any) -> str:
    """The reply's text, or `MalformedReply` when the model refused or was blocked."""
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        raise MalformedReply(f"the prompt was blocked: {feedback.block_reason}")
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        raise MalformedReply("the judge returned no candidate")
    reason = str(getattr(candidates[0], "finish_reason", "") or "")
    if any(word in reason.upper() for word in ("SAFETY", "BLOCK", "PROHIBITED", "RECITATION", "SPII")):
        raise MalformedReply(f"the reply was blocked: {reason}")
    return (response.text or "").strip()


class Judge:
    """Gemini through google-genai's async client; `base_url` points it at a stand-in."""

    def __init__(
        self,
        api_key: str,
        *,
        settings: JudgeSettings | None = None,
        base_url: str | None = None,
        api_version: str | None = None,
        retry_sleep: float = 5.0,
        timeout_ms: int = 120_000,
        sleep: retry_policy.Sleep | None = None,
    ) -> None:
        if not api_key:
            raise AdapterError("no Gemini API key: set GEMINI_API_KEY so the judge can be called")
        self.settings = settings or JudgeSettings()
        self.retry_sleep = retry_sleep
        """Mean pause between attempts; each is jittered in [1/2, 3/2] of it (`leoma.adapters.retry.judge_policy`)."""
        self._sleep = sleep
        self._api_key = api_key
        self._base_url = base_url
        self._api_version = api_version
        self._timeout_ms = timeout_ms
        self._client: Any = None

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections (the async client keeps a session open)."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aio.aclose()
            client.close()

    def _aio(self) -> Any:
        if self._client is None:
            from google import genai
            from google.genai import types

            options = types.HttpOptions(base_url=self._base_url, api_version=self._api_version, timeout=self._timeout_ms)
            self._client = genai.Client(api_key=self._api_key, http_options=options)
        return self._client.aio

    def _media_resolution(self) -> Any:
        from google.genai import types

        table = {
            "low": types.MediaResolution.MEDIA_RESOLUTION_LOW,
            "medium": types.MediaResolution.MEDIA_RESOLUTION_MEDIUM,
            "high": types.MediaResolution.MEDIA_RESOLUTION_HIGH,
        }
        if self.settings.media_resolution not in table:
            raise AdapterError(f"media resolution {self.settings.media_resolution!r} is not one of {', '.join(table)}")
        return table[self.settings.media_resolution]

    def _video_part(self, data: bytes, fps: int) -> Any:
        from google.genai import types

        return types.Part(
            inline_data=types.Blob(data=data, mime_type="video/mp4"),
            video_metadata=types.VideoMetadata(fps=fps),
        )

    def _policy(self, what: str, attempts: int) -> Any:
        return retry_policy.judge_policy(attempts=attempts, pause=self.retry_sleep, what=f"judge {what}",
                                         sleep=self._sleep)

    async def describe(self, clip_bytes: bytes) -> str:
        """The benchmark prompt for a source clip; `AdapterError` after the last failed attempt."""
        from google.genai import types

        s = self.settings
        config = types.GenerateContentConfig(
            temperature=float(Fraction(s.describe_temperature)), max_output_tokens=s.describe_max_tokens,
            media_resolution=self._media_resolution(),
        )
        contents = [s.describe_prompt, "SOURCE CLIP (full 5-second one-shot video):",
                    self._video_part(clip_bytes, s.describe_fps)]

        async def once() -> str:
            response = await self._aio().models.generate_content(
                model=self.settings.describe_model, contents=contents, config=config
            )
            text = " ".join(_reply_text(response).split())
            if not text:
                raise MalformedReply("empty description")
            return text

        try:
            return await self._policy("describe", self.settings.describe_attempts)(once)
        except Exception as exc:  # google-genai raises several unrelated types; all mean "try again"
            last = str(exc) if isinstance(exc, MalformedReply) else f"{type(exc).__name__}: {exc}"
        raise AdapterError(f"the judge could not describe the clip ({self.settings.describe_version}): {last}")

    async def evaluate(self, first_frame_png: bytes, prompt: str, video_bytes: bytes) -> Verdict | JudgeFailure:
        """Score a generated video; a `JudgeFailure` when no attempt gave a complete JSON verdict."""
        from google.genai import types

        s = self.settings
        config = types.GenerateContentConfig(
            system_instruction=s.evaluate_system,
            temperature=float(Fraction(s.evaluate_temperature)),
            max_output_tokens=s.evaluate_max_tokens,
            response_mime_type="application/json",
            response_json_schema=RESPONSE_SCHEMA,
            media_resolution=self._media_resolution(),
        )
        contents = [
            s.evaluate_prompt.replace("{prompt}", prompt.replace('"', "'")),
            "CONDITIONING FIRST FRAME:",
            types.Part.from_bytes(data=first_frame_png, mime_type="image/png"),
            "GENERATED VIDEO:",
            self._video_part(video_bytes, s.video_fps),
        ]
        attempts = self.settings.evaluate_attempts

        async def once() -> Verdict:
            response = await self._aio().models.generate_content(
                model=self.settings.evaluate_model, contents=contents, config=config
            )
            obj = parse_reply(_reply_text(response))
            missing = missing_fields(obj)
            if missing:
                raise MalformedReply(f"judge reply misses {', '.join(missing)}")
            verdict = normalise_verdict(
                obj, weights=s.weights, pass_threshold=s.pass_threshold, critical_threshold=s.critical_threshold
            )
            return msgspec.structs.replace(verdict, prompt_version=s.evaluate_version)

        try:
            return await self._policy("evaluate", attempts)(once)
        except Exception as exc:  # malformed replies and API errors alike are retried, then reported
            last = f"{type(exc).__name__}: {exc}"
        return JudgeFailure(reason=last[:500], attempts=attempts, prompt_version=s.evaluate_version)
