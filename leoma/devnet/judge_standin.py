"""A judge that measures instead of guessing: the devnet's answer to Gemini's `generateContent`.

It decodes the video it is sent and computes, on half-size grayscale frames:

* first-frame fidelity — mean absolute difference between the video's first frame and the
  conditioning image;
* global motion — per-step translation from phase correlation, its mean (speed and direction)
  and its jitter;
* temporal consistency — what is left of each frame after undoing the estimated motion;
* artifacts — high-frequency energy (Laplacian) of the video relative to the conditioning image;
* prompt adherence — the camera direction the prompt names ("pans left", ...) against the
  direction measured.

The scores are simple monotone maps of those measurements and the reasoning names every one,
so a test can say *why* a miner passed or failed.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Mapping

import msgspec

from leoma.devnet.clips import CAMERA_WORDS, CONTENT_SHIFT

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Measurements", "describe_clip", "direction_in", "estimate_shift", "evaluate_video", "measure"]

ANALYSIS_SIZE = (416, 240)
MOTION_FLOOR = 0.5  # px per frame at analysis size; below this the camera is "still"


class Measurements(msgspec.Struct, frozen=True, kw_only=True):
    """What the stand-in measured on one video (analysis-size pixels, 0..255 intensities)."""

    first_frame_mad: float
    speed: float
    direction: str
    jitter: float
    residual: float
    hf_ratio: float
    frames: int


def estimate_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Translation (dx, dy) of content from frame `a` to frame `b` by phase correlation."""
    import numpy as np

    wy = np.hanning(a.shape[0])[:, None]
    wx = np.hanning(a.shape[1])[None, :]
    fa = np.fft.rfft2((a - a.mean()) * wy * wx)
    fb = np.fft.rfft2((b - b.mean()) * wy * wx)
    cross = fb * np.conj(fa)
    cross /= np.abs(cross) + 1e-9
    corr = np.fft.irfft2(cross, s=a.shape)
    py, px = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy = py - a.shape[0] if py > a.shape[0] // 2 else py
    dx = px - a.shape[1] if px > a.shape[1] // 2 else px
    return float(dx), float(dy)


def _direction(dx: float, dy: float) -> str:
    if max(abs(dx), abs(dy)) < MOTION_FLOOR:
        return "static"
    for name, (cx, cy) in CONTENT_SHIFT.items():
        if name != "static" and (cx and abs(dx) >= abs(dy) and cx * dx > 0 or cy and abs(dy) > abs(dx) and cy * dy > 0):
            return name
    return "static"


def _laplacian_energy(frame: np.ndarray) -> float:
    import numpy as np

    f = frame.astype(np.float32)
    lap = 4 * f[1:-1, 1:-1] - f[:-2, 1:-1] - f[2:, 1:-1] - f[1:-1, :-2] - f[1:-1, 2:]
    return float(np.abs(lap).mean())


def measure(image: np.ndarray | None, frames: list[np.ndarray]) -> Measurements:
    """Measure grayscale analysis-size `frames` against the conditioning `image` (same size)."""
    import numpy as np

    gray = [f.astype(np.float32) for f in frames]
    mad = float(np.abs(gray[0] - image.astype(np.float32)).mean()) if image is not None else 0.0
    steps = [estimate_shift(a, b) for a, b in zip(gray, gray[1:])]
    vec = np.array(steps) if steps else np.zeros((1, 2))
    mean_dx, mean_dy = (float(v) for v in vec.mean(axis=0))
    speed = float(np.hypot(mean_dx, mean_dy))
    jitter = float(np.linalg.norm(vec - vec.mean(axis=0), axis=1).mean())
    residuals = []
    m = 24  # ignore the border, where a shifted frame has no source pixels
    for (dx, dy), a, b in zip(steps, gray, gray[1:]):
        moved = np.roll(a, (int(dy), int(dx)), axis=(0, 1))
        residuals.append(float(np.abs(b[m:-m, m:-m] - moved[m:-m, m:-m]).mean()))
    base = _laplacian_energy(image) if image is not None else _laplacian_energy(gray[0])
    hf = float(np.mean([_laplacian_energy(f) for f in gray[:: max(1, len(gray) // 8)]]))
    return Measurements(
        first_frame_mad=round(mad, 2),
        speed=round(speed, 2),
        direction=_direction(mean_dx, mean_dy),
        jitter=round(jitter, 2),
        residual=round(float(np.mean(residuals)) if residuals else 0.0, 2),
        hf_ratio=round(hf / max(base, 1e-6), 2),
        frames=len(frames),
    )


def direction_in(prompt: str) -> str | None:
    """The camera direction a prompt names, or None."""
    text = prompt.lower()
    for name, words in CAMERA_WORDS.items():
        verb, _, where = words.partition(" ")
        if re.search(rf"\b{verb[:-1]}\w*\s+(to the\s+)?{where}\b", text):
            return name
    if re.search(r"\b(static|still|locked[- ]off)\s+camera\b|\bcamera\s+(is\s+)?(static|still)\b", text):
        return "static"
    return None


def _clamp(v: float) -> int:
    return int(max(0, min(100, round(v))))


def scores_for(m: Measurements, wanted: str | None) -> dict[str, int]:
    """Map measurements to the six aspect scores (each a monotone function of one measurement)."""
    if wanted is None:
        adherence = 60.0
    elif wanted == m.direction:
        adherence = 92.0
    elif m.direction == "static" or wanted == "static":
        adherence = 20.0
    else:
        adherence = 10.0
    motion = 25.0 if m.direction == "static" else 95.0 - 30.0 * m.jitter
    return {
        "first_frame_fidelity": _clamp(100 - 2.5 * m.first_frame_mad),
        "prompt_adherence": _clamp(adherence),
        "motion_quality": _clamp(motion if wanted != "static" else 100 - 30.0 * m.speed),
        "temporal_consistency": _clamp(100 - 5.0 * m.residual),
        "visual_quality": _clamp(100 - 60.0 * max(0.0, m.hf_ratio - 1.0)),
        "camera_composition": _clamp(85 if wanted in (None, m.direction) else 50),
    }


def evaluate_video(
    image: np.ndarray, prompt: str, frames: list[np.ndarray], weights: Mapping[str, str | float]
) -> dict[str, Any]:
    """The JSON verdict our judge asks for, computed from measurements."""
    m = measure(image, frames)
    wanted = direction_in(prompt)
    aspects = scores_for(m, wanted)
    overall = _clamp(sum(float(Fraction(str(weights[k]))) * v for k, v in aspects.items()))
    issues = []
    if aspects["first_frame_fidelity"] < 60:
        issues.append(f"opening frame differs from the conditioning frame (MAD {m.first_frame_mad})")
    if aspects["prompt_adherence"] < 50:
        issues.append(f"camera {CAMERA_WORDS[m.direction]} but the prompt asks for {wanted}")
    if aspects["temporal_consistency"] < 60:
        issues.append(f"frame-to-frame residual {m.residual} after motion compensation (flicker/noise)")
    if aspects["visual_quality"] < 60:
        issues.append(f"high-frequency energy {m.hf_ratio}x the conditioning frame (noise artifacts)")
    if m.jitter > 1.0 and m.direction != "static":
        issues.append(f"jerky motion (jitter {m.jitter} px/frame)")
    return {
        "overall_score": overall,
        "confidence": 80,
        "aspect_scores": aspects,
        "major_issues": issues,
        "strengths": [f"camera {CAMERA_WORDS[m.direction]}"] if aspects["prompt_adherence"] >= 90 else [],
        "reasoning": (
            f"Measured: first-frame MAD {m.first_frame_mad}; motion {m.speed} px/frame, camera "
            f"{CAMERA_WORDS[m.direction]} (prompt: {CAMERA_WORDS.get(wanted or '', 'no direction')}); "
            f"jitter {m.jitter}; residual {m.residual}; high-frequency ratio {m.hf_ratio}."
        ),
    }


def describe_clip(frames: list[np.ndarray]) -> str:
    """A 50-90 word benchmark prompt naming the clip's measured camera motion."""
    m = measure(None, frames)
    move = CAMERA_WORDS[m.direction]
    pace = "slowly" if m.speed < 1.5 else "steadily"
    if m.direction == "static":
        camera = "The camera holds still on a locked-off static camera framing for the whole clip"
    else:
        camera = f"The camera {move} {pace} and continuously from the first frame to the last"
    return (
        f"{camera}, so the textured blocks of the scene slide through the frame at an even pace "
        "without any cut, zoom or change of framing. Shapes keep their size, colour and outline "
        "while they travel; nothing appears, vanishes or deforms, and the motion never pauses or "
        "reverses. The setting is a flat procedural pattern of coloured tiles and rectangles seen "
        "head-on under even, constant light."
    )
