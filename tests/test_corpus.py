"""The source corpus: local files checked and uploaded; YouTube expansion through a stand-in yt-dlp."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from leoma.adapters.directory import DirectoryStore
from leoma.devnet.clips import render_source
from leoma.errors import AdapterError
from leoma.tools.corpus import add_local, corpus_keys, expand

DAY = dt.date(2026, 3, 9)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    path.write_bytes(render_source(7, shots=(("left", 6.0),), width=320, height=192).video)
    return path


async def test_add_local_uploads_checked_videos(tmp_path: Path, clip: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 20_000)
    short = tmp_path / "short.mp4"
    short.write_bytes(render_source(3, shots=(("up", 2.0),), width=320, height=192).video)
    result = await add_local(store, [clip, junk, tmp_path / "missing.mp4", short], day=DAY, ingested_at="t")
    assert result.total == 4 and result.success == 1 and result.failed == 3
    reasons = {Path(e["url"]).name: e["error"] for e in result.errors}
    assert reasons["junk.mp4"].startswith("not_a_video")
    assert reasons["missing.mp4"].startswith("unreadable")
    assert reasons["short.mp4"].split(":")[0] in ("too_short", "file_too_small")
    key = result.uploaded[0]
    assert key.startswith("2026/03/") and key.endswith(".mp4")
    assert await store.get(key) == clip.read_bytes()
    meta = json.loads(await store.get(key[:-4] + ".json"))
    assert meta["source"] == "local" and meta["title"] == "clip.mp4" and meta["duration"] >= 5
    again = await add_local(store, [clip], day=DAY, ingested_at="t2")
    assert again.uploaded == [key]


STANDIN = """#!{python}
import json, os, sys
args = sys.argv[1:]
if "--flat-playlist" in args:
    for vid, dur in (("vidGood01", 6), ("vidShort1", 2), ("vidAged01", 30), ("vidGood01", 6)):
        print(json.dumps({{"id": vid, "duration": dur}}))
elif "--dump-json" in args:
    vid = args[-1].rsplit("=", 1)[1]
    print(json.dumps({{"id": vid, "duration": 6, "title": "t " + vid, "channel": "c",
                      "upload_date": "20260101", "formats": [{{"vcodec": "h264"}}],
                      "age_limit": 18 if vid == "vidAged01" else 0, "is_live": False}}))
else:
    out = args[args.index("-o") + 1].replace("%(ext)s", "mp4")
    with open(os.environ["STANDIN_CLIP"], "rb") as src, open(out, "wb") as dst:
        dst.write(src.read())
"""


@pytest.fixture
def standin(tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    exe = folder / "yt-dlp"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_CLIP", str(clip))
    return exe


async def test_expand_with_a_standin_ytdlp(tmp_path: Path, standin: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    result = await expand(store, count=5, queries=["q"], day=DAY, ingested_at="t")
    assert result.total == 2 and result.success == 1 and result.failed == 1
    assert result.errors[0]["error"] == "age_restricted"
    mp4, meta_key = corpus_keys("vidGood01", DAY)
    assert result.uploaded == [mp4]
    meta = json.loads(await store.get(meta_key))
    assert meta["source"] == "youtube" and meta["url"].endswith("v=vidGood01") and meta["channel"] == "c"


async def test_expand_without_ytdlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(AdapterError, match="not installed"):
        await expand(DirectoryStore(tmp_path / "b"), day=DAY, ingested_at="t")


def test_corpus_cli(tmp_path: Path, clip: Path, standin: Path) -> None:
    from leoma_cmd import corpus_cmds

    cli = click.Group("leoma")
    corpus_cmds.register(cli)
    dest = (tmp_path / "bucket").as_uri()
    r = CliRunner().invoke(cli, ["corpus", "add", str(clip), "--dest", dest, "--date", "2026-03-09", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["uploaded"][0].startswith("2026/03/")
    r = CliRunner().invoke(cli, ["corpus", "expand", "-n", "3", "-q", "x", "--dest", dest])
    assert r.exit_code == 1 and "1/2 uploaded" in r.output and "age_restricted" in r.output
