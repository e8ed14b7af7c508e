"""Video gates and copy detection: the pure verdicts, real encoded videos of every cheat, and no
false positive on the honest reference miners over many clips."""

from __future__ import annotations

import functools

import msgspec
import pytest

from leoma.adapters import gates, video
from leoma.devnet.clips import CAMERA_WORDS, render_source
from leoma.devnet.world import World, render_reference_video
from leoma.log.consensus import DEFAULT
from leoma.log.events import GateMeasurements
from projections.gates import CopyCandidate, copies, gate_reason, output_distance

GOOD = GateMeasurements(decoded=True, codec="h264", frames=81, declared_frames=81, fps_milli=16000, duration_ms=5062,
                        width=832, height=480, first_frame_psnr_cdb=4000, motion_c=900, max_cut_milli=10,
                        hashes=("0" * 64,) * 8, source_distance=20)


def test_a_good_video_passes() -> None:
    assert gate_reason(GOOD, DEFAULT) == ""


@pytest.mark.parametrize("change, reason", [
    ({"decoded": False}, "gate:decode"),
    ({"codec": "mjpeg"}, "gate:codec"),
    ({"frames": 1}, "gate:frame_count"),
    ({"frames": 15}, "gate:frame_count"),
    ({"frames": 163}, "gate:frame_count"),
    ({"fps_milli": 30000}, "gate:fps"),
    ({"fps_milli": 16501}, "gate:fps"),
    ({"duration_ms": 100}, "gate:duration"),
    ({"duration_ms": 60000}, "gate:duration"),
    ({"width": 640}, "gate:resolution"),
    ({"height": 513}, "gate:resolution"),
    ({"first_frame_psnr_cdb": 2699}, "gate:first_frame"),
    ({"motion_c": 149}, "gate:frozen"),
    ({"max_cut_milli": 181}, "gate:hard_cut"),
    ({"source_distance": 10}, "returned_source_clip"),
    ({"source_distance": 0}, "returned_source_clip"),
])
def test_each_gate_fails_with_its_reason(change: dict, reason: str) -> None:
    assert gate_reason(msgspec.structs.replace(GOOD, **change), DEFAULT) == reason


@pytest.mark.parametrize("change", [{"frames": 16}, {"frames": 162}, {"fps_milli": 16500}, {"width": 864},
                                    {"first_frame_psnr_cdb": 2700}, {"motion_c": 150}, {"max_cut_milli": 180},
                                    {"source_distance": 11}, {"source_distance": -1}, {"declared_frames": 0}])
def test_gate_bounds_are_inclusive(change: dict) -> None:
    assert gate_reason(msgspec.structs.replace(GOOD, **change), DEFAULT) == ""


def test_the_later_committer_of_a_copy_fails_naming_the_earlier() -> None:
    a = ("f" * 64,) * 8
    near = ("f" * 63 + "0",) * 8  # 4 bits off in every frame
    far = ("0" * 64,) * 8
    found = copies([CopyCandidate("late", 7, 200, near), CopyCandidate("early", 3, 100, a),
                    CopyCandidate("other", 5, 150, far)], max_bits=6)
    assert found == {"late": (3, 4)}
    assert copies([CopyCandidate("late", 7, 200, near), CopyCandidate("early", 3, 100, a)], max_bits=3) == {}
    # same commit block: the lower uid is the earlier
    assert copies([CopyCandidate("x", 9, 100, a), CopyCandidate("y", 2, 100, a)], max_bits=0) == {"x": (2, 0)}
    assert output_distance(a, a[:4]) > 256  # different sample counts never match


# -- real videos ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def task_media(seed: int) -> tuple[bytes, bytes, str, tuple[int, ...]]:
    """A task as a validator cuts it: clip, first frame PNG, a prompt naming the motion, source hashes."""
    direction = ("left", "right", "up", "down")[seed % 4]
    small = seed % 2 == 0
    src = render_source(seed, shots=((direction, 7.5),), width=416 if small else 832, height=240 if small else 480,
                        speed=2 + seed % 3).video
    clip = video.cut_clip(src, 2.0, 5.0)
    return clip, video.first_frame_png(clip), f"The camera {CAMERA_WORDS[direction]} across the scene.", \
        gates.clip_hashes(clip)


def measured(behaviour: str, seed: int, *, frames: int = 17) -> GateMeasurements:
    clip, frame, prompt, source = task_media(seed)
    data = render_reference_video(behaviour, prompt, frame, frames=frames, seed=seed)
    return gates.measure(data, frame, source=source)


@pytest.mark.parametrize("seed", range(8))
def test_no_false_positive_on_the_honest_miners(seed: int) -> None:
    """The faithful reference miner (and the weak but honest ones) pass every gate, at both sizes,
    every direction and two lengths; the judge, not a gate, grades them."""
    for behaviour in ("faithful", "flaky", "noisy"):
        m = measured(behaviour, seed, frames=17 if seed % 3 else 33)
        assert gate_reason(m, DEFAULT) == "", (behaviour, m)


@pytest.mark.parametrize("seed", range(4))
def test_each_cheat_is_caught_on_real_videos(seed: int) -> None:
    clip, frame, prompt, source = task_media(seed)
    assert gate_reason(measured("one_frame", seed), DEFAULT) == "gate:frame_count"
    assert gate_reason(measured("frozen", seed), DEFAULT) == "gate:frozen"
    assert gate_reason(measured("static", seed), DEFAULT) == "gate:frozen"
    tail = measured("corrupt_tail", seed)
    assert gate_reason(tail, DEFAULT) == "gate:decode" and tail.decode_error
    returned = gates.measure(World(frames=17)._serve_clip(clip), frame, source=source)
    assert gate_reason(returned, DEFAULT) == "returned_source_clip"
    # the same video at another fps, and one animated from another picture
    frames = video.decode_frames(render_reference_video("faithful", prompt, frame, frames=17, seed=seed))
    assert gate_reason(gates.measure(video.encode_mp4(frames, 30), frame, source=source), DEFAULT) == "gate:fps"
    other = task_media(seed + 1)[1]
    assert gate_reason(gates.measure(render_reference_video("faithful", prompt, other, frames=17), frame,
                                     source=source), DEFAULT) == "gate:first_frame"


def test_a_hard_cut_inside_the_clip_fails() -> None:
    clip, frame, prompt, source = task_media(1)
    first = video.decode_frames(render_reference_video("faithful", prompt, frame, frames=17))
    # another shot, brighter: the kind of jump the seed's scene threshold calls a cut
    later = [f // 2 + 128 for f in video.decode_frames(render_reference_video("faithful", prompt, task_media(3)[1],
                                                                              frames=17))]
    data = video.encode_mp4(first[:9] + later[9:], 16)
    m = gates.measure(data, frame, source=source)
    assert m.max_cut_milli > DEFAULT.gates.max_cut_milli and gate_reason(m, DEFAULT) == "gate:hard_cut"


def test_not_a_video_and_a_png_fail_to_decode() -> None:
    frame = task_media(0)[1]
    for data in (b"this is not a video" * 10, b"", frame):
        m = gates.measure(data, frame)
        assert gate_reason(m, DEFAULT) in ("gate:decode", "gate:codec", "gate:frame_count"), m


def test_a_proxied_output_is_a_copy_and_honest_miners_are_not() -> None:
    _, frame, prompt, _ = task_media(2)
    faithful = render_reference_video("faithful", prompt, frame, frames=17)
    again = video.encode_mp4(video.decode_frames(faithful), 16, crf=30)  # re-served, re-encoded
    hashes = {name: gates.measure(data, frame).hashes for name, data in (
        ("faithful", faithful), ("proxy", faithful), ("reencoded", again),
        ("flaky", render_reference_video("flaky", prompt, frame, frames=17)),
        ("noisy", render_reference_video("noisy", prompt, frame, frames=17, seed=3)))}
    cands = [CopyCandidate(n, uid, uid * 10, h) for uid, (n, h) in enumerate(hashes.items())]
    found = copies(cands, DEFAULT.gates.copy_max_bits)
    assert set(found) == {"proxy", "reencoded"} and all(uid == 0 for uid, _ in found.values())


def test_measurements_are_integers_and_reproducible() -> None:
    _, frame, prompt, source = task_media(5)
    data = render_reference_video("faithful", prompt, frame, frames=17)
    a, b = gates.measure(data, frame, source=source), gates.measure(data, frame, source=source)
    assert a == b
    assert msgspec.json.decode(msgspec.json.encode(a), type=GateMeasurements) == a
    assert all(isinstance(getattr(a, f), (int, bool, str, tuple)) for f in a.__struct_fields__)


# -- the one-decode measurement against a plain reading of the gates' definitions -------------------


def plain_measure(data: bytes) -> tuple[int, int, int]:
    """Frames, motion and cut as the definitions read, written the slow and obvious way: every frame
    decoded to its luma plane, block means in float64, one Python step per frame."""
    import io

    import av
    import numpy as np

    w, h = gates.ANALYSIS_SIZE
    smalls = []
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            y = frame.to_ndarray(format="yuv420p")[: frame.height]
            bh, bw = (frame.height // 2) // h, (frame.width // 2) // w
            smalls.append(y[: 2 * h * bh: 2, : 2 * w * bw: 2].astype(np.float64).reshape(h, bh, w, bw).mean(axis=(1, 3)))
    n = len(smalls)
    motion = sum(float(np.abs(s - smalls[0]).mean()) for s in smalls[1:]) / (n - 1)
    cut = max(float(np.abs(b - a).mean()) for a, b in zip(smalls, smalls[1:]))
    return n, round(motion * 100), round(cut / 255.0 * 1000)


@pytest.mark.parametrize("seed", range(4))
def test_one_decode_measures_what_the_plain_definition_does(seed: int) -> None:
    """The fast path (block sums read from the decoded plane, whole-clip array operations) gives the
    same integers as the plain definition, on honest miners and on the cheats the gates catch, so
    every verdict and threshold stays where it was pinned."""
    clip, frame, prompt, source = task_media(seed)
    for behaviour in ("faithful", "flaky", "noisy", "frozen", "static"):
        data = render_reference_video(behaviour, prompt, frame, frames=17 if seed % 2 else 33, seed=seed)
        m = gates.measure(data, frame, source=source)
        assert (m.frames, m.motion_c, m.max_cut_milli) == plain_measure(data), behaviour
    cut = video.encode_mp4(video.decode_frames(render_reference_video("faithful", prompt, frame, frames=17))[:9]
                           + [f // 2 + 128 for f in video.decode_frames(
                               render_reference_video("faithful", prompt, task_media(seed + 1)[1], frames=17))][9:], 16)
    m = gates.measure(cut, frame, source=source)
    assert (m.frames, m.motion_c, m.max_cut_milli) == plain_measure(cut)
