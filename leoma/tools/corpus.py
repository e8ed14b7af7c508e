"""The owner's source corpus: videos in the source bucket that samplers cut clips from (seed-spec §4.6).

Layout: `YYYY/MM/<id>.mp4` (`video/mp4`) next to `YYYY/MM/<id>.json` metadata
`{"source", "video_id", "url", "title", "channel", "duration", "upload_date", "ingested_at"}`.

* `add_local(store, paths, date=...)` checks local files with `leoma.adapters.video.probe` and uploads
  them; the id is the first 16 hex digits of the file's sha256, so re-adding a file is a no-op.
* `expand(store, count=...)` is the seed's YouTube discovery through the `yt-dlp` executable
  (optional: a clear error when it is not installed): search the queries, keep entries of a
  usable duration, read each video's metadata, download at most 720p, check the file, upload.

One bad file or video never stops the others: each becomes an entry in `errors`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Sequence
from datetime import date as Date
from pathlib import Path
from typing import Any

import msgspec

from leoma.adapters.storage import ObjectStore
from leoma.errors import AdapterError, VideoError

__all__ = ["CorpusResult", "DEFAULT_QUERIES", "add_local", "corpus_keys", "expand"]

DEFAULT_QUERIES: tuple[str, ...] = (
    "nature documentary 4k", "cooking tutorial", "travel vlog", "dance performance", "sports highlights",
    "city timelapse", "animal behavior", "art tutorial painting", "fitness workout", "music performance live",
    "ocean underwater footage", "drone footage landscape", "street food cooking", "crafts diy tutorial",
    "science experiment",
)
MIN_DURATION, MAX_DURATION = 5.0, 300.0
MIN_FILESIZE, MAX_FILESIZE = 100_000, 200_000_000
FORMAT = "bestvideo[height<=720]+bestaudio/best[height<=720]/best"


class CorpusResult(msgspec.Struct, kw_only=True):
    """The seed's result shape: counts, uploaded keys and one error per failed item."""

    total: int = 0
    success: int = 0
    failed: int = 0
    uploaded: list[str] = []
    errors: list[dict[str, str]] = []

    def fail(self, source: str, error: str) -> None:
        self.failed += 1
        self.errors.append({"url": source, "error": error})


def corpus_keys(video_id: str, day: Date) -> tuple[str, str]:
    """`(YYYY/MM/<id>.mp4, YYYY/MM/<id>.json)`."""
    prefix = f"{day.year:04d}/{day.month:02d}/{video_id}"
    return prefix + ".mp4", prefix + ".json"


def _check_file(data: bytes) -> tuple[str, float]:
    """`("", duration)` for an acceptable video, else `(reason, 0)` in the seed's words."""
    from leoma.adapters.video import VideoLimits, probe

    if len(data) > MAX_FILESIZE:
        return f"file_too_large:{len(data)}", 0.0
    if len(data) < MIN_FILESIZE:
        return f"file_too_small:{len(data)}", 0.0
    try:
        info = probe(data, limits=VideoLimits(max_bytes=MAX_FILESIZE, max_pixels=3840 * 2160,
                                              max_frames=10**6, max_seconds=MAX_DURATION + 1))
    except VideoError as exc:
        return f"not_a_video:{exc}", 0.0
    if info.duration < MIN_DURATION:
        return f"too_short:{info.duration}", 0.0
    if info.duration > MAX_DURATION:
        return f"too_long:{info.duration}", 0.0
    return "", info.duration


async def _upload(store: ObjectStore, data: bytes, meta: dict[str, Any], day: Date) -> str:
    video_key, meta_key = corpus_keys(str(meta["video_id"]), day)
    if await store.head(video_key) is None:
        await store.put(video_key, data, content_type="video/mp4")
    await store.put(meta_key, json.dumps(meta, indent=2).encode(), content_type="application/json")
    return video_key


async def add_local(store: ObjectStore, paths: Sequence[str | Path], *, day: Date, ingested_at: str) -> CorpusResult:
    """Check and upload local video files; the id is the sha256 prefix of each file."""
    result = CorpusResult(total=len(paths), uploaded=[], errors=[])
    for p in paths:
        path = Path(p)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            result.fail(str(path), f"unreadable:{exc.strerror or exc}")
            continue
        problem, duration = await asyncio.to_thread(_check_file, data)
        if problem:
            result.fail(str(path), problem)
            continue
        video_id = hashlib.sha256(data).hexdigest()[:16]
        meta = {"source": "local", "video_id": video_id, "url": None, "title": path.name, "channel": None,
                "duration": duration, "upload_date": None, "ingested_at": ingested_at}
        try:
            result.uploaded.append(await _upload(store, data, meta, day))
            result.success += 1
        except Exception as exc:  # one failed upload never stops the rest
            result.fail(str(path), f"upload_failed:{exc}")
    return result


async def _ytdlp(ytdlp: str, args: Sequence[str], timeout: float) -> str:
    proc = await asyncio.create_subprocess_exec(ytdlp, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AdapterError(f"yt-dlp timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise AdapterError(f"yt-dlp exited {proc.returncode}: {err.decode(errors='replace')[-300:].strip()}")
    return out.decode(errors="replace")


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def _duration_ok(value: Any) -> bool:
    return not isinstance(value, (int, float)) or MIN_DURATION <= value <= MAX_DURATION


async def discover(ytdlp: str, count: int, queries: Sequence[str], rng: random.Random) -> list[str]:
    """Candidate video URLs: `count` of them at most, from a shuffled search of `queries`."""
    order = list(queries or DEFAULT_QUERIES)
    rng.shuffle(order)
    per_query = max(3, count // 5)
    seen: list[str] = []
    for query in order:
        if len(seen) >= count * 2:
            break
        try:
            text = await _ytdlp(ytdlp, ["--dump-json", "--flat-playlist", "--no-download",
                                        f"ytsearch{2 * per_query}:{query}"], 60)
        except AdapterError:
            continue  # one failed search never stops the others
        for item in _json_lines(text):
            vid = item.get("id")
            if isinstance(vid, str) and vid and vid not in seen and _duration_ok(item.get("duration")):
                seen.append(vid)
    return [f"https://www.youtube.com/watch?v={v}" for v in seen[:count]]


def _metadata_problem(meta: dict[str, Any]) -> str:
    duration = meta.get("duration")
    if isinstance(duration, (int, float)):
        if duration < MIN_DURATION:
            return f"too_short:{duration}"
        if duration > MAX_DURATION:
            return f"too_long:{duration}"
    formats = meta.get("formats") or []
    if formats and not any(isinstance(f, dict) and f.get("vcodec") not in (None, "none") for f in formats):
        return "no_video_stream"
    if isinstance(meta.get("age_limit"), int) and meta["age_limit"] > 0:
        return "age_restricted"
    if meta.get("is_live"):
        return "live_stream"
    return ""


async def _ingest(store: ObjectStore, ytdlp: str, url: str, workdir: Path, day: Date, ingested_at: str) -> str:
    meta_list = _json_lines(await _ytdlp(ytdlp, ["--dump-json", "--no-download", url], 30))
    if not meta_list:
        raise AdapterError("yt-dlp printed no metadata")
    meta = meta_list[0]
    problem = _metadata_problem(meta)
    if problem:
        raise AdapterError(problem)
    video_id = str(meta.get("id") or hashlib.sha256(url.encode()).hexdigest()[:11])
    if not video_id.replace("-", "").replace("_", "").isalnum():
        raise AdapterError(f"unusable video id {video_id[:40]!r}")
    await _ytdlp(ytdlp, ["-f", FORMAT, "--merge-output-format", "mp4", "--recode-video", "mp4", "--no-playlist",
                         "--no-overwrites", "-o", str(workdir / f"{video_id}.%(ext)s"), url], 600)
    path = workdir / f"{video_id}.mp4"
    if not path.is_file():
        raise AdapterError("yt-dlp finished but wrote no mp4")
    data = path.read_bytes()
    problem, duration = await asyncio.to_thread(_check_file, data)
    if problem:
        raise AdapterError(problem)
    record = {"source": "youtube", "video_id": video_id, "url": url, "title": meta.get("title"),
              "channel": meta.get("channel") or meta.get("uploader"), "duration": meta.get("duration", duration),
              "upload_date": meta.get("upload_date"), "ingested_at": ingested_at}
    return await _upload(store, data, record, day)


async def expand(store: ObjectStore, *, count: int = 10, concurrent: int = 2, queries: Sequence[str] = (),
                 day: Date, ingested_at: str, ytdlp: str = "yt-dlp", rng: random.Random | None = None) -> CorpusResult:
    """Discover and ingest up to `count` YouTube videos (seed §4.6)."""
    exe = shutil.which(ytdlp)
    if exe is None:
        raise AdapterError(f"{ytdlp} is not installed: `pip install yt-dlp` (or put it on PATH) to expand the corpus")
    urls = await discover(exe, count, queries, rng or random.Random())
    result = CorpusResult(total=len(urls), uploaded=[], errors=[])
    if not urls:
        result.errors.append({"error": "no_videos_discovered"})
        return result
    gate = asyncio.Semaphore(max(1, concurrent))
    with tempfile.TemporaryDirectory(prefix="leoma-corpus-") as tmp:

        async def one(url: str) -> None:
            async with gate:
                try:
                    result.uploaded.append(await _ingest(store, exe, url, Path(tmp), day, ingested_at))
                    result.success += 1
                except Exception as exc:  # one bad video never stops the others
                    result.fail(url, str(exc)[:300])

        await asyncio.gather(*(one(u) for u in urls))
    result.uploaded.sort()
    return result
