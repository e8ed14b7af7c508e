"""Video handling with PyAV (no system ffmpeg): probing, one-shot clip selection, cutting,
first frames, frame sampling, resolution checks and encoding.

Everything here works on bytes in memory. `probe` is the gate for untrusted bytes (a miner's
reply): it refuses oversize files, non-video data and decompression bombs from the container
headers and one decoded frame, before anyone decodes the whole thing. PyAV and numpy are
imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Iterable

import msgspec

from leoma.errors import VideoError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ClipChoice",
    "VideoInfo",
    "VideoLimits",
    "choose_clip",
    "cut_clip",
    "decode_frames",
    "encode_mp4",
    "first_frame_png",
    "png_to_array",
    "probe",
    "reply_limits",
    "resolution_ok",
    "sample_frames",
    "scene_cuts",
]


class VideoInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the container headers (and one decoded frame) say about a video."""

    codec: str
    width: int
    height: int
    fps: float
    duration: float
    frame_count: int
    size_bytes: int


class VideoLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Refusal limits for untrusted video bytes (defaults fit a 5 s 480p miner reply with room)."""

    max_bytes: int = 200_000_000
    max_pixels: int = 1920 * 1088
    max_frames: int = 2_000
    max_seconds: float = 600.0


class ClipChoice(msgspec.Struct, frozen=True, kw_only=True):
    """A chosen one-shot clip: where it starts, and the segment and cuts it was chosen from."""

    start: float
    seconds: float
    segment_start: float
    segment_end: float
    duration: float
    cuts: tuple[float, ...]


DEFAULT_LIMITS = VideoLimits()


def reply_limits(pinned: Any) -> VideoLimits:
    """The refusal limits for a miner's reply, from the consensus's `[video]` section: its
    `max_response_bytes`, `max_pixels` and `max_frames` (every validator refuses the same videos)."""
    return VideoLimits(max_bytes=pinned.max_response_bytes, max_pixels=pinned.max_pixels, max_frames=pinned.max_frames)


def _open(data: bytes) -> Any:
    import av

    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise VideoError(f"not a video: the container could not be opened ({exc})") from exc


def probe(data: bytes, *, limits: VideoLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Read a video's metadata without decoding it all; raise `VideoError` naming what is wrong.

    Refuses: more than `limits.max_bytes`, bytes that are not a container with a video stream,
    a frame size above `limits.max_pixels`, a declared frame count or duration beyond the limits,
    and a first frame that does not decode.
    """
    import av

    if len(data) > limits.max_bytes:
        raise VideoError(f"video too large: {len(data)} bytes > cap {limits.max_bytes}")
    if not data:
        raise VideoError("not a video: empty body")
    with _open(data) as container:
        if not container.streams.video:
            raise VideoError(f"not a video: container {container.format.name!r} has no video stream")
        if container.format.name.endswith("_pipe") or container.format.name == "image2":
            raise VideoError(f"not a video: {container.format.name!r} is a still image")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError(f"not a video: stream reports size {width}x{height}")
        if width * height > limits.max_pixels:
            raise VideoError(f"frame too large: {width}x{height} exceeds {limits.max_pixels} pixels")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if container.duration:
            duration = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = 0.0
        frames = int(stream.frames or 0) or int(round(duration * fps))
        if duration > limits.max_seconds:
            raise VideoError(f"video too long: {duration:.1f} s > {limits.max_seconds} s")
        if frames > limits.max_frames:
            raise VideoError(f"too many frames: {frames} > {limits.max_frames}")
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"not a video: the first frame does not decode ({exc})") from exc
        if first is None:
            raise VideoError("not a video: the stream holds no frame")
        return VideoInfo(
            codec=str(ctx.name),
            width=width,
            height=height,
            fps=round(fps, 3),
            duration=round(duration, 3),
            frame_count=frames,
            size_bytes=len(data),
        )


def resolution_ok(width: int, height: int, required: tuple[int, int] = (832, 480), tol: int = 32) -> bool:
    """The seed's resolution rule: each side within `tol` pixels of the required size."""
    return abs(width - required[0]) <= tol and abs(height - required[1]) <= tol


def decode_frames(
    data: bytes,
    *,
    size: tuple[int, int] | None = None,
    gray: bool = False,
    limits: VideoLimits = DEFAULT_LIMITS,
    still: bool = False,
) -> list[np.ndarray]:
    """Decode every frame (optionally scaled to `size`=(w, h) and/or grayscale) as numpy arrays.

    `still=True` accepts a single image (PNG) as well; otherwise the bytes must pass `probe`.
    """
    import av

    if not still:
        probe(data, limits=limits)
    elif len(data) > limits.max_bytes:
        raise VideoError(f"image too large: {len(data)} bytes > cap {limits.max_bytes}")
    fmt = "gray" if gray else "rgb24"
    out: list[np.ndarray] = []
    with _open(data) as container:
        if not container.streams.video:
            raise VideoError("not a video: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if len(out) >= limits.max_frames:
                    raise VideoError(f"too many frames: more than {limits.max_frames} decoded")
                if size is not None:
                    frame = frame.reformat(width=size[0], height=size[1], format=fmt)
                out.append(frame.to_ndarray(format=fmt))
        except av.error.FFmpegError as exc:
            raise VideoError(f"video does not decode: {exc}") from exc
    return out


def sample_frames(video_bytes: bytes, n: int, *, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """`n` RGB frames spread evenly over the video (first and last included when n >= 2)."""
    frames = decode_frames(video_bytes, size=size)
    if n <= 0 or not frames:
        return []
    if n == 1:
        return [frames[0]]
    last = len(frames) - 1
    return [frames[round(i * last / (n - 1))] for i in range(n)]


def png_to_array(png: bytes) -> np.ndarray:
    """Decode a PNG (or any single image) into an RGB array."""
    frames = decode_frames(png, still=True)
    if not frames:
        raise VideoError("image holds no frame")
    return frames[0]


def _png_bytes(frame: Any) -> bytes:
    import av

    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.width, frame.height, "rgb24"
    rgb = frame.reformat(format="rgb24")
    return b"".join(bytes(p) for p in [*ctx.encode(rgb), *ctx.encode(None)])


def first_frame_png(clip_bytes: bytes) -> bytes:
    """The first frame of a clip as PNG bytes (what a miner is conditioned on)."""
    import av

    probe(clip_bytes)
    with _open(clip_bytes) as container:
        try:
            frame = next(container.decode(video=0))
        except (StopIteration, av.error.FFmpegError) as exc:
            raise VideoError(f"clip has no decodable first frame ({exc})") from exc
        return _png_bytes(frame)


def encode_mp4(frames: Iterable[np.ndarray], fps: float, *, preset: str = "veryfast", crf: int = 23) -> bytes:
    """Encode HxWx3 uint8 RGB frames as an H.264 mp4 (yuv420p, no audio)."""
    import av

    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError("cannot encode a video with no frames")
    height, width = int(first.shape[0]), int(first.shape[1])
    if width % 2 or height % 2:
        raise VideoError(f"frame size {width}x{height} must be even for yuv420p")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        for arr in (first, *it):
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def cut_clip(source_bytes: bytes, start: float, seconds: float, *, limits: VideoLimits | None = None) -> bytes:
    """Re-encode `seconds` of video from `start` as H.264 mp4 without audio."""

    lim = limits or VideoLimits(max_frames=1_000_000, max_seconds=24 * 3600.0)
    info = probe(source_bytes, limits=lim)
    fps = info.fps or 16.0
    wanted = max(1, round(seconds * fps))
    frames: list[Any] = []
    with _open(source_bytes) as container:
        stream = container.streams.video[0]
        if start > 0 and stream.time_base:
            # Seek lands on the keyframe at or before `start`; frames before it are skipped below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time < start - 0.5 / fps:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= wanted:
                break
    if not frames:
        raise VideoError(f"no frames at {start:.3f}s in a {info.duration:.3f}s video")
    if frames[0].shape[1] % 2 or frames[0].shape[0] % 2:
        frames = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
    return encode_mp4(frames, fps)


def scene_cuts(source_bytes: bytes, *, threshold: float = 0.18) -> tuple[list[float], float]:
    """Scene-cut times (seconds, 3 decimals) and the video's duration.

    The score of a frame is the mean absolute difference from the previous frame on a small
    grayscale copy, scaled to 0..1 — the same idea as ffmpeg's `scene` score, so the seed's
    0.18 threshold keeps its meaning (hard cuts score high, pans and zooms score low).
    """
    import numpy as np

    lim = VideoLimits(max_frames=1_000_000, max_seconds=24 * 3600.0)
    info = probe(source_bytes, limits=lim)
    cuts: set[float] = set()
    prev: np.ndarray | None = None
    last_time = 0.0
    with _open(source_bytes) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            small = frame.reformat(width=64, height=36, format="gray").to_ndarray().astype(np.int16)
            when = frame.time if frame.time is not None else index / (info.fps or 16.0)
            last_time = when
            if prev is not None and float(np.abs(small - prev).mean()) / 255.0 > threshold:
                cuts.add(round(when, 3))
            prev = small
    duration = info.duration or last_time
    return sorted(c for c in cuts if 0 < c < duration), duration


def _unit(seed: bytes, label: bytes) -> float:
    """A number in [0, 1) derived from the task seed: same seed, same choice, on every validator."""
    digest = hashlib.sha256(seed + b"/" + label).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_clip(
    cuts: list[float],
    duration: float,
    *,
    seed: bytes,
    clip_seconds: float = 5,
    margin: float = 0.15,
    safe_offset: float = 2.0,
) -> ClipChoice | None:
    """The seed's one-shot rule (§5.2) on known cuts, with `seed` in place of `random`."""
    if duration < clip_seconds:
        return None
    bounds = [0.0, *cuts, duration]
    usable: list[tuple[float, float]] = []
    for lo, hi in zip(bounds, bounds[1:]):
        m = margin if hi - lo >= clip_seconds + 2 * margin else 0.0
        start = lo + m if lo > 0 else lo
        end = hi - m if hi < duration else hi
        if end - start >= clip_seconds:
            usable.append((start, end))
    if not usable:
        return None
    usable.sort(key=lambda seg: seg[1] - seg[0], reverse=True)
    best = usable[0][1] - usable[0][0]
    near = [seg for seg in usable if best - (seg[1] - seg[0]) <= 1.0]
    seg_start, seg_end = near[min(int(_unit(seed, b"segment") * len(near)), len(near) - 1)]
    max_start = seg_end - clip_seconds
    if max_start <= seg_start:
        start = seg_start
    else:
        start = seg_start + _unit(seed, b"start") * (max_start - seg_start)
    start = max(round(start, 3), seg_start + safe_offset)
    if start > seg_end - clip_seconds:
        return None
    return ClipChoice(
        start=round(start, 3),
        seconds=float(clip_seconds),
        segment_start=round(seg_start, 3),
        segment_end=round(seg_end, 3),
        duration=round(duration, 3),
        cuts=tuple(cuts),
    )


def choose_clip(
    source_bytes: bytes,
    *,
    seed: bytes,
    clip_seconds: float = 5,
    scene_threshold: float = 0.18,
    margin: float = 0.15,
    safe_offset: float = 2.0,
) -> ClipChoice | None:
    """Choose a one-shot clip of `clip_seconds` from a source video, deterministically from `seed`.

    Returns None when the video has no segment long enough (after the margin and safe-offset
    rules); raises `VideoError` when the bytes are not a usable video.
    """
    cuts, duration = scene_cuts(source_bytes, threshold=scene_threshold)
    return pick_clip(
        cuts, duration, seed=seed, clip_seconds=clip_seconds, margin=margin, safe_offset=safe_offset
    )
