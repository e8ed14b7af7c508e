"""leoma.miner and `leoma miner push|status|serve-reference`: against the local world's Chutes and
Hugging Face stand-ins, a stand-in `chutes` executable, event logs and a simulated chain."""

from __future__ import annotations

import ast
import asyncio
import base64
import json
import os
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import httpx
import pydantic
import pytest
from click.testing import CliRunner

from leoma.adapters import video
from leoma.devnet.clips import render_source
from leoma.devnet.world import World, render_reference_video
from leoma.log.events import (
    CheckOutcome,
    EpochScored,
    FrontierEntry,
    JudgeFailed,
    MinerAggregate,
    MinerChecked,
    MinerResponded,
    VerdictRecorded,
)
from leoma.miner.chute import naming_problem, render_chute, revision_problem
from leoma.miner.deploy import find_chute_id, log_error_line
from leoma.miner.reference import GenerateRequest, reference_app
from leoma.miner.status import miner_status
from leoma_cmd.miner_cmds import register
from tests.builders import LogBuilder

HOTKEY = "5FminerHotkeyForTestsOnly0000000000000000000000"
KEY = "devnet-key"
SHA = "0123456789abcdef0123456789abcdef01234567"

STANDIN = textwrap.dedent(
    """\
    #!{python}
    # A stand-in for the Chutes CLI: records how it was called, then behaves as LEOMA_STANDIN_MODE says.
    import json, os, sys
    module = sys.argv[2].split(":")[0] if len(sys.argv) > 2 else ""
    source = open(module + ".py").read() if module and os.path.exists(module + ".py") else ""
    record = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "key": os.environ.get("CHUTES_API_KEY"),
              "stdin": sys.stdin.read(), "source": source}}
    with open(os.environ["LEOMA_STANDIN_RECORD"], "w") as f:
        json.dump(record, f)
    mode = os.environ.get("LEOMA_STANDIN_MODE", "ok")
    print("2026-01-14 14:43:26.979 | INFO     | chutes.config:get_config:55 - Loading chutes config")
    if mode == "error":
        print("2026-01-14 14:43:27.100 | ERROR    | chutes.deploy:deploy:90 - image leoma/video-gen:1.0 not found")
        sys.exit(0)
    if mode == "exit":
        print("Traceback: boom")
        sys.exit(3)
    print("2026-01-14 14:43:28.000 | INFO     | chutes.deploy:deploy:120 - deployed")
    """
)


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> Any:
    w = World(frames=9, chutes_api_key=KEY)
    w.add_miner("faithful", name="other")
    w.add_miner("faithful", name="mine", hotkey=HOTKEY)
    w.add_miner("cold", name="cold", hotkey="5Fcold")
    w.start_thread()
    yield w
    w.stop_thread()


@pytest.fixture
def cli() -> click.Group:
    group = click.Group("leoma")
    register(group)
    return group


@pytest.fixture
def standin(tmp_path: Path) -> dict[str, Any]:
    """A `chutes` executable on a PATH of its own and the env to run `leoma miner push` with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "chutes"
    exe.write_text(STANDIN.format(python=sys.executable))
    exe.chmod(0o755)
    record = tmp_path / "record.json"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "LEOMA_STANDIN_RECORD": str(record),
           "CHUTES_API_KEY": KEY, "CHUTE_USER": "alice", "LEOMA_STANDIN_MODE": "ok"}
    return {"env": env, "record": record}


def push_args(world: World, name: str, revision: str, *extra: str) -> list[str]:
    return ["miner", "push", "--model-name", name, "--model-revision", revision, "--hotkey-ss58", HOTKEY,
            "--chutes-api-url", world.url, "--hf-endpoint", world.url, *extra]


def run(cli: click.Group, args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


# -- rendering -------------------------------------------------------------------------------


def test_render_chute_is_python_with_the_seed_fields_and_the_validators_fields() -> None:
    source = render_chute("alice/leoma-x", SHA, "alice")
    tree = ast.parse(source)
    args = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GenerateArgs")
    fields = {n.target.id for n in args.body if isinstance(n, ast.AnnAssign)}
    assert {"prompt", "image", "negative_prompt", "num_frames", "fps", "seed", "guidance_scale",
            "num_inference_steps", "frames", "resolution", "fast"} <= fields
    for fact in ('public_api_path="/generate"', 'output_content_type="video/mp4"', "WIDTH, HEIGHT = 832, 480",
                 "le=161", "default=81", "default=16", "default=5.0", "default=30", "'leoma/video-gen:1.0'"):
        assert fact in source


def test_validators_request_fields_are_accepted_not_dropped_fix_12_22() -> None:
    tree = ast.parse(render_chute("alice/leoma-x", SHA, "alice"))
    args = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GenerateArgs")
    scope: dict[str, Any] = {}
    exec("from typing import Optional\nfrom pydantic import BaseModel, Field\n" + ast.unparse(args), scope)
    scope["GenerateArgs"].model_rebuild(_types_namespace=scope)
    model = scope["GenerateArgs"].model_validate({"prompt": "p", "image": "aGk=", "frames": 81, "fps": 16,
                                                   "resolution": "480p", "fast": True})
    assert model.frames == 81 and model.resolution == "480p" and model.fast is True and model.num_frames == 81
    with pytest.raises(pydantic.ValidationError):
        scope["GenerateArgs"].model_validate({"prompt": "p", "image": "x", "num_frames": 162})


def test_rendered_values_are_literals_never_code() -> None:
    evil = "alice/leoma-x'); import os; os.system('boom'); ('"
    source = render_chute(evil, SHA, "al'ice")
    tree = ast.parse(source)
    assigned = {n.targets[0].id: n.value for n in tree.body if isinstance(n, ast.Assign)
                and isinstance(n.targets[0], ast.Name)}
    assert ast.literal_eval(assigned["MODEL_NAME"]) == evil
    assert not any(isinstance(n, ast.Attribute) and n.attr == "system" for n in ast.walk(tree))
    assert ast.literal_eval(render_chute('a/leoma-"""x', SHA, "u").split("MODEL_NAME = ")[1].splitlines()[0])


# -- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (f"alice/model-{HOTKEY}", "model_name_must_start_with_leoma"),
        ("alice/leoma-model", "model_name_must_end_with_hotkey"),
        (f"leoma-{HOTKEY}", "must be a Hugging Face repository id"),
        (f"alice/LEOMA-{HOTKEY.upper()}", None),
    ],
)
def test_naming_problem(name: str, reason: str | None) -> None:
    problem = naming_problem(name, HOTKEY)
    assert (problem is None) if reason is None else (reason in str(problem))


@pytest.mark.parametrize("revision", ["main", SHA[:12], SHA.upper(), SHA + "0", ""])
def test_branch_names_and_short_shas_are_refused(revision: str) -> None:
    assert "full 40-character" in str(revision_problem(revision))
    assert revision_problem(SHA) is None


@pytest.mark.parametrize(
    ("name", "revision", "message"),
    [
        ("alice/model-{hk}", "{rev}", "model_name_must_start_with_leoma"),
        ("alice/leoma-nothotkey", "{rev}", "model_name_must_end_with_hotkey"),
        ("{repo}", "main", "full 40-character"),
        ("{repo}", "{short}", "full 40-character"),
        ("{repo}", SHA, "hf_model_fetch_failed"),  # a well-formed SHA Hugging Face does not know
        ("devnet/leoma-unknown-{hk}", "{rev}", "hf_model_fetch_failed"),  # no such repository
    ],
)
def test_push_refuses_before_deploying(cli: click.Group, world: World, standin: dict[str, Any], name: str,
                                       revision: str, message: str) -> None:
    m = world.miners["mine"]
    fill = {"hk": HOTKEY, "rev": m.revision, "repo": m.repo_id, "short": m.revision[:12]}
    result = run(cli, push_args(world, name.format(**fill), revision.format(**fill)), standin["env"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not standin["record"].exists()  # nothing was deployed


def test_push_refusal_as_json(cli: click.Group, world: World, standin: dict[str, Any]) -> None:
    result = run(cli, push_args(world, "alice/leoma-nothotkey", SHA, "--json"), standin["env"])
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert out["success"] is False and "model_name_must_end_with_hotkey" in out["error"]


def test_push_needs_a_hotkey_key_and_user(cli: click.Group, world: World, standin: dict[str, Any],
                                          tmp_path: Path) -> None:
    m = world.miners["mine"]
    env = {**standin["env"], "BT_WALLET_PATH": str(tmp_path / "nowallets")}
    args = push_args(world, m.repo_id, m.revision)
    no_hotkey = [a for a in args if a not in ("--hotkey-ss58", HOTKEY)]
    result = run(cli, no_hotkey, env)
    assert result.exit_code != 0 and "--hotkey-ss58" in result.output
    result = run(cli, args, {**env, "CHUTES_API_KEY": ""})
    assert result.exit_code != 0 and "CHUTES_API_KEY is not set" in result.output
    result = run(cli, args, {**env, "CHUTE_USER": ""})
    assert result.exit_code != 0 and "CHUTE_USER" in result.output
    assert not standin["record"].exists()


# -- deploying -------------------------------------------------------------------------------


def test_push_deploys_with_the_chutes_cli_and_finds_the_chute_id(cli: click.Group, world: World,
                                                                  standin: dict[str, Any], tmp_path: Path) -> None:
    m = world.miners["mine"]
    os.chdir(tmp_path)
    result = run(cli, push_args(world, m.repo_id, m.revision), standin["env"])
    assert result.exit_code == 0, result.output
    record = json.loads(standin["record"].read_text())
    assert record["argv"] == ["deploy", "leoma_chute:chute", "--accept-fee"]
    assert record["key"] == KEY and record["stdin"] == "y\n"
    assert Path(record["cwd"]) != tmp_path and not Path(record["cwd"]).exists()  # a temp dir, cleaned up
    assert list(tmp_path.iterdir()) == [tmp_path / "bin", tmp_path / "record.json"]  # nothing left in the CWD
    assert f"MODEL_NAME = {m.repo_id!r}" in record["source"] and "username='alice'" in record["source"]
    assert m.chute_id in result.output
    assert f"leoma miner commit --model-name {m.repo_id} --model-revision {m.revision} --chute-id {m.chute_id}" \
        in result.output
    as_json = json.loads(run(cli, push_args(world, m.repo_id, m.revision, "--json"), standin["env"]).output)
    assert as_json["success"] is True and as_json["chute_id"] == m.chute_id and as_json["hotkey"] == HOTKEY
    assert len(as_json["model_hash"]) == 64


@pytest.mark.parametrize(("mode", "message"), [("error", "image leoma/video-gen:1.0 not found"),
                                               ("exit", "exited with code 3")])
def test_failed_deploys_are_reported(cli: click.Group, world: World, standin: dict[str, Any], mode: str,
                                     message: str) -> None:
    m = world.miners["mine"]
    result = run(cli, push_args(world, m.repo_id, m.revision), {**standin["env"], "LEOMA_STANDIN_MODE": mode})
    assert result.exit_code != 0 and message in result.output and m.chute_id not in result.output


def test_missing_chutes_cli_is_a_clear_error(cli: click.Group, world: World, standin: dict[str, Any]) -> None:
    m = world.miners["mine"]
    result = run(cli, push_args(world, m.repo_id, m.revision, "--chutes-bin", "no-such-chutes-cli"),
                 standin["env"])
    assert result.exit_code != 0 and "pip install chutes" in result.output


def test_log_error_line_reads_the_chutes_log_format() -> None:
    assert log_error_line("2026-01-14 14:43:26.979 | INFO     | a:b:1 - fine\n") == ""
    out = "x\n2026-01-14 14:43:26.979 | ERROR    | a:b:1 - quota exceeded\n2026-01-14 14:43:27.000 | ERROR | c - 2\n"
    assert log_error_line(out) == "a:b:1 - quota exceeded"


class Listing:
    """Just the listing call of the Chutes client, for the ordering rule."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list_chutes(self) -> list[dict[str, Any]]:
        return self.items


async def test_find_chute_id_takes_the_newest_match() -> None:
    items = [{"chute_id": "old", "name": "a/leoma-x"}, {"chute_id": "other", "name": "a/leoma-y"},
             {"chute_id": "new", "tagline": "a/leoma-x"}]
    assert await find_chute_id(Listing(items), "a/leoma-x") == "new"
    dated = [{"chute_id": "b", "readme": "a/leoma-x", "created_at": "2026-02-01T00:00:00"},
             {"chute_id": "a", "name": "a/leoma-x", "created_at": "2026-01-01T00:00:00"}]
    assert await find_chute_id(Listing(dated), "a/leoma-x") == "b"
    assert await find_chute_id(Listing(items), "a/leoma-z") is None


# -- status ----------------------------------------------------------------------------------

VAL, OTHER_VAL = "val-A", "val-B"
EARLY, LATE = "early-miner", HOTKEY


def status_log(tmp_path: Path, *, with_epoch: bool = True, chute_id: str = "c") -> Path:
    b = LogBuilder()
    b.allowlist(VAL, [VAL], interval=10, block=1)
    b.metagraph(VAL, ["owner", EARLY, LATE], block=2)
    b.commitment(VAL, EARLY, commit_block=3, block=4)
    b.commitment(VAL, LATE, commit_block=5, block=6)
    b.checked(VAL, EARLY, uid=1, block=7, commit_block=3)
    b.add(VAL, MinerChecked(hotkey=LATE, uid=2, commit_block=5, model_name="devnet/leoma-mine", chute_id=chute_id,
                            valid=False, invalid_reason="chute_not_running",
                            checks=(CheckOutcome(name="chute_info", ok=True),
                                    CheckOutcome(name="chute_hot", ok=False, detail="hot=false"))),
          block=7, key="miner/late/1")
    b.add(VAL, MinerChecked(hotkey=LATE, uid=2, commit_block=5, model_name="devnet/leoma-mine", chute_id=chute_id,
                            model_hash="h-late", valid=True, chute_hot=True,
                            checks=(CheckOutcome(name="chute_info", ok=True), CheckOutcome(name="chute_hot", ok=True),
                                    CheckOutcome(name="hf_revision", ok=True, detail="resolves to the commit"))),
          block=8, key="miner/late/2")
    b.checked(OTHER_VAL, LATE, uid=2, block=9, valid=False, reason="hf_model_fetch_failed")
    for task in (1, 2, 3):
        b.opened(VAL, task, block=10 * task, miners=(EARLY, LATE))
        b.add(VAL, MinerResponded(task_id=task, miner=LATE, status="accepted", latency_ms=1200 + task),
              block=10 * task + 1, key=f"response/{task}/{LATE}")
        b.verdict(VAL, task, EARLY, True, block=10 * task + 2)
    b.add(VAL, VerdictRecorded(task_id=1, miner=LATE, passed=True, overall=81, judge_model="gemini",
                               prompt_version="evaluate/v1", reasoning="camera pans left as asked"), block=12)
    b.add(VAL, VerdictRecorded(task_id=2, miner=LATE, passed=False, overall=41, judge_model="gemini",
                               prompt_version="evaluate/v1", reasoning="the first frame drifts",
                               major_issues=("fidelity",)), block=22)
    b.add(VAL, JudgeFailed(task_id=3, miner=LATE, judge_model="gemini", prompt_version="evaluate/v1", attempts=3,
                           reason="quota"), block=32)
    b.verdict(VAL, 3, "someone-else", True, block=32)
    if with_epoch:
        aggregates = (
            MinerAggregate(hotkey=EARLY, uid=1, commit_block=3, passed=3, evaluated=4, avg_rate="3/4",
                           completeness="1", eligible=True, rank=1),
            MinerAggregate(hotkey=LATE, uid=2, commit_block=5, passed=1, evaluated=2, avg_rate="1/2",
                           completeness="1", eligible=True, rank=2),
        )
        b.add(VAL, EpochScored(epoch=4, netuid=1, consensus_digest="d" * 64,
                               frontier=(FrontierEntry(origin=VAL, origin_seq=1, hash="0" * 64),),
                               aggregates=aggregates, winner=EARLY, winner_uid=1), block=40, key="epoch/4")
    path = tmp_path / "events.db"
    b.to_log(path, own=VAL).close()
    return path


def status_args(world: World, db: Path, *extra: str) -> list[str]:
    return ["miner", "status", "--hotkey", LATE, "--db", str(db), "--network", "none", "--netuid", "1",
            "--chutes-api-url", world.url, "--chutes-api-key", KEY, *extra]


def test_status_from_a_log_without_a_chain(cli: click.Group, world: World, tmp_path: Path) -> None:
    db = status_log(tmp_path, chute_id=world.miners["mine"].chute_id)
    result = run(cli, status_args(world, db, "--json", "--validator", VAL))
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    assert s["commitment"] is None and s["unavailable"]["chain"].startswith("skipped")
    assert s["check"]["valid"] is True and s["check"]["block"] == 8 and s["check"]["validator"] == VAL
    assert [st["name"] for st in s["check"]["steps"]] == ["chute_info", "chute_hot", "hf_revision"]
    assert [t["task_id"] for t in s["tasks"]] == [3, 2, 1]
    t3, t2, t1 = s["tasks"]
    assert t3["verdict"] == "judge_failed" and t3["reasoning"] == "quota" and t3["response"] == "accepted"
    assert t2["verdict"] == "failed" and t2["reasoning"] == "the first frame drifts"
    assert t2["major_issues"] == ["fidelity"]
    assert t1["verdict"] == "passed" and t1["overall"] == 81 and t1["latency_ms"] == 1201
    r = s["rank"]
    assert r["source"] == "epoch_scored" and r["epoch"] == 4 and r["rank"] == 2 and r["winner"] == EARLY
    # 3/4 earlier + the 1/20 threshold: exactly 4/5 dominates.
    assert r["needed_rate"] == "4/5" and r["dominates"] is False
    assert r["earlier"] == [{"hotkey": EARLY, "rate": "3/4", "needed": "4/5", "beaten": False}]
    # No chain: the chute id comes from the validator's last check, its state from the Chutes API.
    assert s["chute"]["hot"] is True and s["chute"]["slug"] == "devnet-mine"
    assert "4/5" in s["next_step"]


def test_status_table_explains_each_part(cli: click.Group, world: World, tmp_path: Path) -> None:
    db = status_log(tmp_path)
    result = run(cli, status_args(world, db, "--validator", VAL))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "commitment   unknown: chain unavailable" in out
    assert "last check   block 8 by val-A: valid" in out and "hf_revision" in out
    assert "camera pans left as asked" in out and "judge_failed" in out
    assert "you need a rate of 4/5" in out and "next: to win, raise your average pass rate to 4/5" in out


def test_status_latest_check_across_validators_and_a_fresh_epoch(world: World, tmp_path: Path) -> None:
    from leoma.adapters.chutes import ChutesClient
    from leoma.log.eventlog import EventLog

    async def go() -> Any:
        with EventLog(status_log(tmp_path, with_epoch=False), readonly=True) as log:
            async with ChutesClient(api_url=world.url, api_key=KEY) as chutes:
                return await miner_status(LATE, netuid=1, log=log, chutes=chutes)

    s = asyncio.run(go())
    # Without --validator the newest check of any validator is shown.
    assert s.check.validator == OTHER_VAL and s.check.invalid_reason == "hf_model_fetch_failed"
    assert s.rank is None or s.rank.source == "fresh"
    assert "chain" in s.unavailable and "hf_model_fetch_failed" in s.next_step

    async def own() -> Any:
        with EventLog(tmp_path / "events.db", readonly=True) as log:
            return await miner_status(LATE, netuid=1, log=log, validator=VAL)

    mine = asyncio.run(own())
    assert mine.rank is not None and mine.rank.source == "fresh" and mine.rank.validator == VAL
    assert "chutes" in mine.unavailable


def test_status_with_nothing_available_still_answers(cli: click.Group, tmp_path: Path) -> None:
    result = run(cli, ["miner", "status", "--hotkey", LATE, "--db", str(tmp_path / "none.db"), "--network", "none",
                       "--chutes-api-url", "none"])
    assert result.exit_code == 0, result.output
    assert "no validator log at" in result.output and "chain unavailable" in result.output
    bad = run(cli, ["miner", "status", "--hotkey", LATE, "--db", str(tmp_path / "none.db"), "--network",
                    f"sim:{tmp_path / 'no-chain.jsonl'}", "--chutes-api-url", "none", "--json"])
    assert bad.exit_code == 0, bad.output
    assert json.loads(bad.output)["unavailable"]["chain"]


def test_status_reads_a_cold_chute_from_the_api(world: World) -> None:
    from leoma.adapters.chutes import ChutesClient
    from leoma.miner.status import MinerStatus, next_step

    cold = world.miners["cold"]

    async def go() -> Any:
        async with ChutesClient(api_url=world.url, api_key=KEY) as chutes:
            return await chutes.chute_info(cold.chute_id)

    info = asyncio.run(go())
    assert info is not None and info.hot is False
    from leoma.miner.status import ChuteView, CommitmentView

    s = MinerStatus(hotkey="5Fcold", commitment=CommitmentView(block=3, count=1, text="{}", chute_id=cold.chute_id),
                    chute=ChuteView(chute_id=cold.chute_id, reachable=True, hot=info.hot))
    assert "is cold" in next_step(s)


# -- the reference miner ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_b64() -> str:
    clip = render_source(5, shots=(("left", 1.0),), width=832, height=480)
    return base64.b64encode(video.first_frame_png(clip.video)).decode()


async def test_serve_reference_returns_an_832x480_mp4(frame_b64: str) -> None:
    app = reference_app("faithful", render=render_reference_video, max_frames=9)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://miner") as http:
        body = {"prompt": "The camera pans left.", "image": frame_b64, "frames": 81, "fps": 16,
                "resolution": "480p", "fast": True}
        resp = await http.post("/generate", json=body)
        assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
        info = video.probe(resp.content)
        assert (info.width, info.height) == (832, 480)
        small = await http.post("/generate", json={"prompt": "static", "image": frame_b64, "num_frames": 3})
        assert small.status_code == 200 and video.probe(small.content).width == 832
        for bad in ({"prompt": "p"}, {"prompt": "p", "image": "not base64!"},
                    {"prompt": "p", "image": frame_b64, "num_frames": 500},
                    {"prompt": "p", "image": frame_b64, "resolution": "720p"}):
            resp = await http.post("/generate", json=bad)
            assert resp.status_code == 422, bad


def test_generate_request_defaults_are_the_seeds() -> None:
    r = GenerateRequest(prompt="p", image="i")
    assert (r.num_frames, r.fps, r.guidance_scale, r.num_inference_steps, r.seed) == (81, 16, 5.0, 30, None)
    assert r.negative_prompt == "low quality, blurry, distorted" and r.problem() is None


def test_serve_reference_refuses_unknown_behaviour(cli: click.Group) -> None:
    result = run(cli, ["miner", "serve-reference", "--behaviour", "slow"])
    assert result.exit_code != 0 and "Invalid value" in result.output


# -- wiring ----------------------------------------------------------------------------------


def test_register_reuses_the_miner_group_of_chain_cmds() -> None:
    from leoma_cmd.chain_cmds import register as register_chain

    group = click.Group("leoma")
    register_chain(group)
    before = group.commands["miner"]
    register(group)
    assert group.commands["miner"] is before
    assert {"commit", "push", "status", "serve-reference"} <= set(before.commands)  # type: ignore[attr-defined]


def test_dominance_needed_rate_is_exact() -> None:
    from leoma.miner.status import rank_view

    scored = EpochScored(epoch=1, netuid=1, consensus_digest="d" * 64, frontier=(), winner="a", aggregates=(
        MinerAggregate(hotkey="a", commit_block=1, avg_rate="11/20", eligible=True, rank=1),
        MinerAggregate(hotkey="b", commit_block=2, avg_rate="3/5", eligible=True, rank=2),
        MinerAggregate(hotkey="c", commit_block=0, avg_rate="9/10", eligible=False, reason="incomplete"),
    ))
    r = rank_view(scored, "b", Fraction(1, 20), validator="v", source="epoch_scored")
    assert r is not None and r.needed_rate == "3/5" and r.dominates is True  # 0.55 + 0.05 == 0.60 exactly
    assert [e.hotkey for e in r.earlier] == ["a"]  # the ineligible miner is not a rival


# -- done-when: a new miner from push to checked, on a simulated chain --------------------


def check_with_the_checker(env: dict[str, str], db: Path) -> list[MinerChecked]:
    """One pass of the validators' real checker (`check_miners`) as validator //Validator1, into `db`."""
    from leoma.ops.config import Settings
    from leoma.services.checker import check_miners
    from leoma.services.context import open_context

    settings = Settings.load(env={**env, "LEOMA_DEV_KEY": "//Validator1", "LEOMA_DB": str(db),
                                  "LEOMA_STATE_DIR": str(db.parent / "state"), "LEOMA_HF_ENDPOINT": env["HF_ENDPOINT"],
                                  "LEOMA_SOURCE_URL": f"file://{db.parent / 'source'}",
                                  "LEOMA_OWN_BUCKET_URL": f"file://{db.parent / 'bucket'}",
                                  "GEMINI_API_KEY": "unused"}, dotenv=False)

    async def go() -> list[MinerChecked]:
        async with open_context(settings) as ctx:
            return await check_miners(ctx)

    return asyncio.run(go())


@pytest.mark.slow
def test_done_when_a_new_miner_goes_from_push_to_commit_to_checked(world: World, standin: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    import bittensor as bt

    from leoma.adapters.simchain import SimChain
    from leoma_cmd.chain_cmds import register as register_chain

    wallets = tmp_path / "wallets"
    owner = bt.Wallet(name="owner", hotkey="default", path=str(wallets))
    wallet = bt.Wallet(name="miner", hotkey="default", path=str(wallets))
    for w in (owner, wallet):
        w.create_new_coldkey(use_password=False, suppress=True, overwrite=True)
        w.create_new_hotkey(use_password=False, suppress=True, overwrite=True)
    hotkey = wallet.hotkey.ss58_address
    sim = SimChain.create(tmp_path / "chain.jsonl", owner=owner.hotkey.ss58_address, clock="manual", netuid=7)
    sim.register(owner.hotkey.ss58_address, owner.coldkeypub.ss58_address, stake=10**12, validator_permit=True)
    sim.register(hotkey, wallet.coldkeypub.ss58_address)
    m = world.add_miner("faithful", name=f"new{len(world.miners)}", hotkey=hotkey)  # its HF repo and chute

    cli = click.Group("leoma")
    register_chain(cli)
    register(cli)
    db = tmp_path / "validator.db"
    env = {**standin["env"], "BT_WALLET_PATH": str(wallets), "WALLET_NAME": "miner", "NETWORK": f"sim:{sim.path}",
           "NETUID": "7", "CHUTES_API_URL": world.url, "HF_ENDPOINT": world.url, "LEOMA_DB": str(db)}

    def status() -> dict[str, Any]:
        result = run(cli, ["miner", "status", "--chutes-api-key", KEY, "--json"], env)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    before = status()
    assert before["commitment"] is None and "leoma miner push" in before["next_step"]

    pushed = run(cli, ["miner", "push", "--model-name", m.repo_id, "--model-revision", m.revision], env)
    assert pushed.exit_code == 0, pushed.output
    commit_line = next(line.strip() for line in pushed.output.splitlines() if line.strip().startswith("leoma miner"))
    committed = run(cli, commit_line.split()[1:], env)
    assert committed.exit_code == 0, committed.output
    sim.advance_to(int(committed.output.rsplit("reveal round", 1)[1]))

    revealed = status()
    c = revealed["commitment"]
    assert (c["model_name"], c["model_revision"], c["chute_id"]) == (m.repo_id, m.revision, m.chute_id)
    assert c["problem"] == "" and c["count"] == 1 and revealed["chute"]["hot"] is True
    assert revealed["check"] is None and "not checked yet" in revealed["next_step"]

    results = {r.hotkey: r for r in check_with_the_checker(env, db)}
    assert results[hotkey].valid, results[hotkey]
    checked = status()
    assert checked["check"]["valid"] is True and checked["check"]["commit_block"] == c["block"]
    assert {"chute_fetched", "chute_hot", "chute_revision", "hf_revision"} <= {s["name"] for s in checked["check"]["steps"]}
    assert "wait for the next task" in checked["next_step"]
    table = run(cli, ["miner", "status", "--chutes-api-key", KEY], env)
    assert f"commitment   block {c['block']}" in table.output and "valid" in table.output
