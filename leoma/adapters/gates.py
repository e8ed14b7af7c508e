"""Video gates and copy detection: measure a miner's video in one decode (PyAV + numpy).

A miner's bytes are decoded **completely, once**; while the frames go by we keep a small gray
copy of each (the scene-score size) and take every measurement from those copies:

* decode: every frame decodes without an error, and as many as the container declares;
* codec, frame count, fps, duration, resolution: from the stream and the decoded count;
* first frame vs the conditioning image: PSNR on a small copy (the gray of the mean of RGB on
  both sides, so video range and PNG range cannot pass for an error). PSNR, not SSIM: it is
  one line of numpy, exact to reproduce, and on the reference miners it separates a first frame
  that is the image (>= 30 dB) from one that is not (< 15 dB) with a wide margin;
* frozen: the mean absolute difference of every frame from the first ("repeat the first frame"
  scores only the encoder's noise);
* hard cut: the largest mean absolute difference between consecutive frames (the seed's scene
  score, per mille);
* perceptual hashes: a 256-bit DCT hash (32x32 DCT, top-left 16x16 against its median) of
  `hash_frames` evenly spaced frames. Two miners' videos that are the same video differ by a
  few bits; a video whose later frames are the source clip's sits a few bits from some source frame.

Everything recorded is an integer (`leoma.log.events.GateMeasurements`); the verdict is
`projections.gates.gate_reason`, a pure function of those integers and the consensus.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from leoma.log.events import GateMeasurements
from leoma.log.textsafe import safe_text

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ANALYSIS_SIZE", "clip_hashes", "conditioning_gray", "dct_hash", "hamming", "measure", "source_distance"]

ANALYSIS_SIZE = (104, 60)
"""Width and height of the gray copies every measurement is taken on (832x480 / 8)."""
HASH_SIDE = 32
HASH_KEEP = 16
PSNR_CAP_CDB = 10000
_PLANAR_LUMA = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray"})
_DCT: Any = None


def _dct_matrix() -> np.ndarray:
    global _DCT
    if _DCT is None:
        import numpy as np

        n = HASH_SIDE
        k = np.arange(n)[:, None]
        x = np.arange(n)[None, :]
        m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * math.sqrt(2 / n)
        m[0] /= math.sqrt(2)
        _DCT = m
    return _DCT  # type: ignore[no-any-return]


def dct_hash(gray: np.ndarray) -> int:
    """A 256-bit perceptual hash of a gray image (any size) as an int."""
    import numpy as np

    h, w = gray.shape
    rows = (np.arange(HASH_SIDE) * h) // HASH_SIDE
    cols = (np.arange(HASH_SIDE) * w) // HASH_SIDE
    small = gray[rows][:, cols].astype(np.float64)
    d = _dct_matrix()
    coeffs = (d @ small @ d.T)[:HASH_KEEP, :HASH_KEEP].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return (a ^ b).bit_count()


def _hex(h: int) -> str:
    return f"{h:064x}"


def _gray_small(frame: Any) -> np.ndarray:
    """The frame's luma as ANALYSIS_SIZE block means, read straight from the decoded plane.

    Every other row and column, summed in blocks (16 samples per cell at 832x480): a fraction
    of what a scaler costs, and enough averaging that encoder noise cannot pass for motion.
    """
    import numpy as np

    w, h = ANALYSIS_SIZE
    bh, bw = (frame.height // 2) // h, (frame.width // 2) // w
    if frame.format.name not in _PLANAR_LUMA or bh == 0 or bw == 0:
        return frame.reformat(width=w, height=h, format="gray").to_ndarray().astype(np.float32)  # type: ignore[no-any-return]
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    rows_end, cols_end = 2 * h * bh, 2 * w * bw
    acc = np.uint16 if bh * bw <= 256 else np.uint32
    # Rows first, whole and contiguous (every other row of each block), then every other column
    # of the row sums: the same samples as a strided 2x subsample, read in cache order.
    rows = y[0:rows_end:2 * bh, :cols_end].astype(acc)
    for i in range(1, bh):
        np.add(rows, y[2 * i:rows_end:2 * bh, :cols_end], out=rows)
    sums = rows[:, 0::2 * bw].copy()
    for j in range(1, bw):
        np.add(sums, rows[:, 2 * j::2 * bw], out=sums)
    return sums.astype(np.float32) / (bh * bw)  # type: ignore[no-any-return]


def _rgb_gray_small(frame: Any) -> np.ndarray:
    import numpy as np

    w, h = ANALYSIS_SIZE
    rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    return rgb.astype(np.float32).mean(axis=2)  # type: ignore[no-any-return]


def _motion_and_cut(smalls: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean absolute difference from the first frame (over every later frame) and the largest
    between consecutive frames, in gray levels.

    Whole-clip array operations, not a loop per frame; the sums are exact (the block means are
    multiples of 1/16 and float64 holds their totals without rounding), so the figures do not
    depend on how numpy orders a float32 reduction.
    """
    import numpy as np

    clip = np.stack(smalls)
    cells = clip[0].size
    from_first = np.abs(clip[1:] - clip[0]).sum(dtype=np.float64)
    consecutive = np.abs(np.diff(clip, axis=0)).reshape(len(clip) - 1, -1).sum(axis=1, dtype=np.float64)
    return float(from_first) / cells / (len(clip) - 1), float(consecutive.max()) / cells


def conditioning_gray(png: bytes) -> np.ndarray:
    """The conditioning image as the first-frame gate sees it (compute once per task)."""
    import av

    with av.open(io.BytesIO(png), mode="r") as container:
        frame = next(container.decode(video=0))
        return _rgb_gray_small(frame)


def clip_hashes(clip: bytes, *, max_frames: int = 2000) -> tuple[int, ...]:
    """The perceptual hash of every frame of the task's source clip."""
    import av

    out: list[int] = []
    with av.open(io.BytesIO(clip), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            out.append(dct_hash(_gray_small(frame)))
            if len(out) >= max_frames:
                break
    return tuple(out)


def source_distance(hashes: Sequence[int], source: Sequence[int]) -> int:
    """Mean over the later half of the sampled frames of the distance to the nearest source-clip
    frame after the first (the first frame matches by design; a frozen video would match it too)."""
    later = hashes[len(hashes) // 2:] if len(hashes) > 1 else ()
    pool = source[1:]
    if not later or not pool:
        return -1
    total = sum(min(hamming(h, s) for s in pool) for h in later)
    return (total + len(later) // 2) // len(later)


def measure(
    video: bytes,
    image_png: bytes | np.ndarray,
    *,
    hash_frames: int = 8,
    max_frames: int = 2000,
    source: Sequence[int] = (),
) -> GateMeasurements:
    """Decode `video` once and measure everything the gates decide on.

    `image_png` is the conditioning image, as PNG bytes or as `conditioning_gray` of them.
    Never raises for bad bytes: a container that does not open or a frame that does not decode
    is recorded as `decoded=False` with the error (escaped), and the gates fail it.
    """
    import av
    import numpy as np

    smalls: list[np.ndarray] = []
    first_rgb: np.ndarray | None = None
    info: dict[str, Any] = {}
    error = ""
    try:
        with av.open(io.BytesIO(video), mode="r") as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            ctx = stream.codec_context
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if container.duration:
                duration = container.duration / av.time_base
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = 0.0
            info = {"codec": str(ctx.name), "width": int(ctx.width or 0), "height": int(ctx.height or 0),
                    "fps_milli": round(float(rate) * 1000) if rate else 0, "duration_ms": round(duration * 1000),
                    "declared_frames": int(stream.frames or 0)}
            for frame in container.decode(stream):
                if len(smalls) >= max_frames:
                    raise ValueError(f"more than {max_frames} frames")
                if first_rgb is None:
                    first_rgb = _rgb_gray_small(frame)
                smalls.append(_gray_small(frame))
    except (av.error.FFmpegError, ValueError, OSError, StopIteration) as exc:
        error = safe_text(f"{type(exc).__name__}: {exc}", max_chars=300)
    n = len(smalls)
    declared = int(info.get("declared_frames", 0))
    if not error and declared and n != declared:
        error = f"decoded {n} of the {declared} frames the container declares"
    m: dict[str, Any] = {**info, "frames": n, "decoded": not error and n > 0, "decode_error": error}
    if n == 0 or first_rgb is None:
        return GateMeasurements(**m)
    try:
        image = conditioning_gray(image_png) if isinstance(image_png, bytes) else image_png
        mse = float(np.mean((first_rgb - image) ** 2))
        m["first_frame_psnr_cdb"] = (PSNR_CAP_CDB if mse <= 0
                                     else min(PSNR_CAP_CDB, max(0, round(1000 * math.log10(255.0**2 / mse)))))
    except (av.error.FFmpegError, ValueError, OSError, StopIteration):
        m["first_frame_psnr_cdb"] = 0
    first = smalls[0]
    if n > 1:
        motion, cut = _motion_and_cut(smalls)
        m["motion_c"] = round(motion * 100)
        m["max_cut_milli"] = round(cut / 255.0 * 1000)
    k = max(2, hash_frames)
    picks = [smalls[round(i * (n - 1) / (k - 1))] for i in range(k)] if n > 1 else [first]
    hashes = [dct_hash(p) for p in picks]
    m["hashes"] = tuple(_hex(h) for h in hashes)
    if source:
        m["source_distance"] = source_distance(hashes, source)
    return GateMeasurements(**m)
