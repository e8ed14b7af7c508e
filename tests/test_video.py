"""leoma.adapters.video: probing untrusted bytes, one-shot clip choice, cutting, frames, encoding."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from leoma.adapters import video
from leoma.devnet.clips import render_source
from leoma.errors import VideoError


@pytest.fixture(scope="module")
def source():
    # Dark/bright alternating shots of 2 s, 8 s and 3 s: cuts at 2.0 and 10.0.
    return render_source(7, width=416, height=240)


def _flat(n: int, width: int, height: int, fps: int = 16) -> bytes:
    return video.encode_mp4([np.full((height, width, 3), i * 3 % 255, np.uint8) for i in range(n)], fps)


def test_probe_reads_metadata(source):
    info = video.probe(source.video)
    assert (info.codec, info.width, info.height, info.fps) == ("h264", 416, 240, 16.0)
    assert info.duration == pytest.approx(13.0, abs=0.1)
    assert info.frame_count == 208
    assert info.size_bytes == len(source.video)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, I am a video, trust me " * 40, "not a video"),
        (bytes(range(256)) * 64, "not a video"),
    ],
)
def test_probe_refuses_non_video(data, reason):
    with pytest.raises(VideoError, match=reason):
        video.probe(data)


def test_probe_refuses_a_still_image(source):
    png = video.first_frame_png(source.video)
    with pytest.raises(VideoError, match="still image"):
        video.probe(png)


def test_probe_refuses_oversize_before_opening():
    with pytest.raises(VideoError, match="too large"):
        video.probe(b"\0" * 2000, limits=video.VideoLimits(max_bytes=1000))


def test_probe_refuses_too_many_pixels():
    bomb = _flat(2, 2048, 1152)  # tiny file, but 2.4 Mpixel frames
    assert len(bomb) < 50_000
    with pytest.raises(VideoError, match="frame too large"):
        video.probe(bomb)


def test_probe_refuses_too_many_frames():
    with pytest.raises(VideoError, match="too many frames"):
        video.probe(_flat(40, 64, 64), limits=video.VideoLimits(max_frames=10))


@pytest.mark.parametrize("w, h", [(832, 480), (832, 464), (854, 480), (800, 448)])
def test_resolution_accepts_seed_vectors(w, h):
    assert video.resolution_ok(w, h)


@pytest.mark.parametrize("w, h", [(799, 448), (800, 447), (640, 480), (1920, 1080), (0, 0)])
def test_resolution_rejects_seed_vectors(w, h):
    assert not video.resolution_ok(w, h)


def test_scene_cuts_found(source):
    cuts, duration = video.scene_cuts(source.video)
    assert cuts == list(source.cut_times) == [2.0, 10.0]
    assert duration == pytest.approx(13.0, abs=0.1)


def test_choose_clip_is_deterministic_and_inside_the_long_shot(source):
    a = video.choose_clip(source.video, seed=b"block-hash-1")
    b = video.choose_clip(source.video, seed=b"block-hash-1")
    assert a == b and a is not None
    # The long shot runs 2.0-10.0; margins make it 2.15-9.85; the safe offset starts it at >= 4.15.
    assert (a.segment_start, a.segment_end) == (2.15, 9.85)
    assert 4.15 <= a.start <= 9.85 - 5
    assert a.cuts == (2.0, 10.0)


def test_choose_clip_depends_on_the_seed():
    starts = {video.pick_clip([], 20.0, seed=bytes([i])).start for i in range(8)}
    assert len(starts) > 1


def test_pick_clip_too_short_video():
    assert video.pick_clip([], 4.9, seed=b"s") is None


def test_pick_clip_safe_offset_can_refuse():
    # Segment 2.0-7.5 is usable as 2.15-7.35; the 2 s safe offset pushes the start past 2.35.
    assert video.pick_clip([2.0, 7.5], 10.0, seed=b"s") is None


def test_pick_clip_first_segment_keeps_its_start():
    choice = video.pick_clip([9.0], 12.0, seed=b"s")
    assert choice is not None
    assert choice.segment_start == 0.0 and choice.segment_end == 8.85
    assert 2.0 <= choice.start <= 3.85


def test_choose_clip_none_when_every_shot_is_short():
    clip = render_source(3, shots=(("left", 2.0), ("right", 2.0), ("up", 2.0)), width=128, height=96)
    assert video.choose_clip(clip.video, seed=b"x") is None


def test_cut_clip_is_h264_without_audio(source):
    clip = video.cut_clip(source.video, 4.5, 5)
    info = video.probe(clip)
    assert (info.codec, info.width, info.height, info.frame_count) == ("h264", 416, 240, 80)
    with av.open(io.BytesIO(clip)) as c:
        assert not c.streams.audio


def test_first_frame_png_matches_the_clip(source):
    png = video.first_frame_png(source.video)
    assert png.startswith(b"\x89PNG")
    image = video.png_to_array(png)
    first = video.decode_frames(source.video)[0]
    assert image.shape == first.shape == (240, 416, 3)
    assert np.abs(image.astype(int) - first.astype(int)).mean() < 1.0


def test_sample_frames_spreads_over_the_video():
    frames = [np.full((32, 32, 3), i * 10, np.uint8) for i in range(20)]
    clip = video.encode_mp4(frames, 16, crf=0)
    picked = video.sample_frames(clip, 3)
    assert [int(round(f.mean() / 10)) for f in picked] == [0, 10, 19]
    assert video.sample_frames(clip, 0) == []


def test_encode_mp4_round_trip():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    data = video.encode_mp4(frames, 16)
    info = video.probe(data)
    assert (info.width, info.height, info.frame_count, info.fps) == (64, 48, 5, 16.0)


def test_encode_mp4_refuses_odd_sizes_and_no_frames():
    with pytest.raises(VideoError, match="even"):
        video.encode_mp4([np.zeros((5, 8, 3), np.uint8)], 16)
    with pytest.raises(VideoError, match="no frames"):
        video.encode_mp4([], 16)
