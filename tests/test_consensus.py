"""leoma.log.consensus: the strict reader, the prompts' pins, the consensus a log records, and the one
rule every command uses to find its consensus (explain, replay, api, serve)."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import click
import msgspec
import pytest
from click.testing import CliRunner

from leoma.devnet.config import consensus_toml
from leoma.errors import ConfigError, UnknownConsensus
from leoma.log import consensus as cons
from leoma.log.consensus import (
    DEFAULT,
    consensus_for,
    log_consensus,
    parse_consensus,
    record_consensus,
    recorded_consensuses,
    replace_leaf,
)
from leoma.log.eventlog import EventLog
from leoma.log.events import ConsensusRecorded, EpochScored, MinerAggregate
from leoma.ops.config import Settings, resolve_consensus

PACKAGED = (Path(cons.__file__).parents[1] / "consensus.toml").read_text()


# -- the strict reader ---------------------------------------------------------------------------


def test_the_packaged_file_names_every_leaf_and_reads_back_to_the_defaults() -> None:
    assert parse_consensus(PACKAGED) == cons.Consensus()
    assert parse_consensus(consensus_toml(DEFAULT)).digest == DEFAULT.digest


def test_an_unknown_key_is_refused_by_name() -> None:
    text = PACKAGED.replace("[window]\n", "[window]\nsize = 7\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) window\.size"):
        parse_consensus(text)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) extra\.thing"):
        parse_consensus(PACKAGED + "\n[extra]\nthing = 1\n")


def test_a_missing_key_is_refused_by_name() -> None:
    text = "\n".join(line for line in PACKAGED.splitlines() if not line.startswith(("settle_margin", "fast ")))
    with pytest.raises(ConfigError, match=r"missing key\(s\) window\.settle_margin, request\.fast"):
        parse_consensus(text)
    weights = PACKAGED.replace('camera_composition = "1/20"\n', "")
    with pytest.raises(ConfigError, match=r"missing key\(s\) judge\.aspect_weights\.camera_composition"):
        parse_consensus(weights)


def test_missing_and_unknown_together_are_both_named() -> None:
    text = PACKAGED.replace("tasks = 100", "task = 100")
    with pytest.raises(ConfigError) as info:
        parse_consensus(text, source="my.toml")
    assert "my.toml: unknown key(s) window.task; missing key(s) window.tasks" in str(info.value)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('media_resolution = "high"', 'media_resolution = "ultra"', "media_resolution"),
    ('evaluation_temperature = "1/10"', 'evaluation_temperature = "3"', "evaluation_temperature"),
    ('scene_threshold = "9/50"', 'scene_threshold = "abc"', "scene_threshold"),
    ("version = 1", "version = 2", "consensus version 2"),
    ("tasks = 100", 'tasks = "many"', "tasks"),
])
def test_bad_values_are_refused_naming_the_key(old: str, new: str, message: str) -> None:
    assert old in PACKAGED
    with pytest.raises(ConfigError, match=message):
        parse_consensus(PACKAGED.replace(old, new))


def test_leaves_and_replace_leaf() -> None:
    leaves = cons.leaves(DEFAULT)
    assert leaves["window.tasks"] == 100 and leaves["judge.aspect_weights.prompt_adherence"] == "1/4"
    assert len(leaves) == len(cons.schema_leaves())
    changed = replace_leaf(DEFAULT, "request.fast", False)
    assert not changed.request.fast and changed.digest != DEFAULT.digest


# -- prompts: packaged files pinned by sha256 ---------------------------------------------------


def test_every_prompt_matches_its_pin_and_the_judge_sends_the_packaged_text() -> None:
    from leoma.adapters import judge

    for which in cons.PROMPTS:
        text = DEFAULT.prompt(which)
        assert hashlib.sha256(text.encode()).hexdigest() == getattr(DEFAULT.judge, f"{which}_prompt_sha256")
    assert judge.DESCRIBE_INSTRUCTION == cons.prompt_file("describe/v1")
    assert "{prompt}" in judge.EVALUATE_INSTRUCTION


def test_a_prompt_edit_changes_the_digest_or_stops_the_validator() -> None:
    text = DEFAULT.prompt("evaluate") + "Be kind.\n"
    repinned = replace_leaf(DEFAULT, "judge.evaluate_prompt_sha256", hashlib.sha256(text.encode()).hexdigest())
    assert repinned.digest != DEFAULT.digest
    with pytest.raises(ConfigError, match="judge.evaluate_prompt_sha256"):
        repinned.prompt("evaluate")  # the file was not edited with the pin: refused, not sent


@pytest.mark.parametrize("label", ["../consensus", "describe/../../x", "", "describe/v1 "])
def test_prompt_labels_cannot_leave_the_prompts_folder(label: str) -> None:
    with pytest.raises(ConfigError):
        cons.prompt_file(label)


# -- the consensus a log records ----------------------------------------------------------------


SHORT = replace_leaf(DEFAULT, "epoch.length", 20)


def test_record_consensus_is_once_per_digest_with_the_whole_content(tmp_path: Path) -> None:
    with EventLog(tmp_path / "l.db", own="val-A") as log:
        record_consensus(log, DEFAULT, block=5)
        record_consensus(log, DEFAULT, block=9)  # same digest: a no-op, not a conflict
        record_consensus(log, SHORT, block=10)
        rows = list(log.rows(kinds=["consensus_recorded"]))
        assert [r.key for r in rows] == [f"consensus/{DEFAULT.digest}", f"consensus/{SHORT.digest}"]
        body = msgspec.json.decode(rows[0].body, type=ConsensusRecorded)
        assert body.content.encode() == DEFAULT.canonical and set(body.prompts) == {
            "describe/v1", "evaluate/v1", "evaluate-system/v1"}
        assert recorded_consensuses(log) == {DEFAULT.digest: DEFAULT, SHORT.digest: SHORT}


def test_consensus_for_finds_the_recorded_one_or_stops(tmp_path: Path) -> None:
    with EventLog(tmp_path / "l.db", own="val-A") as log:
        with pytest.raises(UnknownConsensus, match=SHORT.digest[:16]):
            consensus_for(log, SHORT.digest)
        assert consensus_for(log, DEFAULT.digest) is DEFAULT  # the packaged one needs no record
        assert consensus_for(log, SHORT.digest, also=(SHORT,)) is SHORT  # a file with that digest
        record_consensus(log, SHORT)
        assert consensus_for(log, SHORT.digest).epoch.length == 20


def test_content_that_does_not_hash_to_its_digest_is_not_used(tmp_path: Path) -> None:
    forged = ConsensusRecorded(digest=SHORT.digest, content=DEFAULT.canonical.decode())
    with EventLog(tmp_path / "l.db", own="val-A") as log:
        log.append(forged, key=f"consensus/{SHORT.digest}", block=1)
        assert recorded_consensuses(log) == {}
        with pytest.raises(UnknownConsensus):
            consensus_for(log, SHORT.digest)


def test_log_consensus_own_first_then_the_peers_when_they_agree(tmp_path: Path) -> None:
    from tests.builders import LogBuilder

    b = LogBuilder()
    b.add("val-B", cons.recorded_body(SHORT), block=1, key=f"consensus/{SHORT.digest}")
    b.add("val-C", cons.recorded_body(SHORT), block=1, key=f"consensus/{SHORT.digest}")
    log = b.to_log(tmp_path / "api.db", own="owner-api")
    try:
        assert log_consensus(log) == SHORT  # nothing of its own: the validators agree
        record_consensus(log, DEFAULT)
        assert log_consensus(log) == DEFAULT  # its own record first
        assert log_consensus(log, prefer_peers=True) == SHORT  # the API follows its validators
        other = replace_leaf(DEFAULT, "window.tasks", 7)
        log.import_events([b.add("val-D", cons.recorded_body(other), block=2, key=f"consensus/{other.digest}")])
        assert log_consensus(log, prefer_peers=True) == DEFAULT  # they disagree: its own record
    finally:
        log.close()


def test_one_rule_finds_the_consensus_file_then_the_log_then_the_packaged(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    assert resolve_consensus("", db=db) is DEFAULT  # no log yet
    with EventLog(db, own="val-A") as log:
        record_consensus(log, SHORT)
    assert resolve_consensus("", db=db) == SHORT
    path = tmp_path / "c.toml"
    path.write_text(consensus_toml(replace_leaf(DEFAULT, "window.tasks", 9)))
    assert resolve_consensus(str(path), db=db).window.tasks == 9
    settings = Settings.load({"db": str(db)}, env={}, dotenv=False)
    assert settings.consensus() == SHORT
    assert settings.consensus(from_log=False) is DEFAULT  # what `leoma serve` runs: never its past
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"LEOMA_CONSENSUS={path}\n")
    assert Settings.load({"db": str(db)}, env={}, dotenv=dotenv).consensus().window.tasks == 9


def test_the_api_finds_its_validators_consensus_and_records_it(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.builders import LogBuilder

    monkeypatch.chdir(tmp_path)
    for var in ("LEOMA_CONSENSUS", "LEOMA_API_DB", "PEER_VALIDATORS", "LEOMA_STATE_DIR"):
        monkeypatch.delenv(var, raising=False)
    b = LogBuilder()
    b.add("val-B", cons.recorded_body(SHORT), block=3, key=f"consensus/{SHORT.digest}")
    b.to_log(tmp_path / "api.db", own="owner-api").close()
    from leoma_cmd.api_cmds import build_api

    app, settings = build_api(db=str(tmp_path / "api.db"), sync=False)
    service = app.state.service
    try:
        assert service.consensus == SHORT and service.state.consensus.epoch.length == 20
        mine = recorded_consensuses(service.log, origin="owner-api")
        assert list(mine) == [SHORT.digest], "the API computes with, and records, its validators' consensus"
    finally:
        service.log.close()


# -- tools use the consensus recorded with the decision -----------------------------------------


def _explain_log(tmp_path: Path, consensus: cons.Consensus, *, record: bool) -> Path:
    aggregates = (
        MinerAggregate(hotkey="early", uid=1, commit_block=10, eligible=True, rank=1, avg_rate="3/4"),
        MinerAggregate(hotkey="late", uid=2, commit_block=20, eligible=True, rank=2, avg_rate="4/5"),
    )
    path = tmp_path / "events.db"
    with EventLog(path, own="val-A") as log:
        if record:
            record_consensus(log, consensus)
        log.append(EpochScored(epoch=3, netuid=1, consensus_digest=consensus.digest, frontier=(),
                               aggregates=aggregates, winner="early", winner_uid=1), key="epoch/3/scored", block=540)
    return path


def _scoring_cli() -> click.Group:
    from leoma_cmd.scoring_cmds import register

    group = click.Group("leoma")
    register(group)
    return group


def test_explain_uses_the_thresholds_recorded_with_the_decision(tmp_path: Path) -> None:
    strict = replace_leaf(DEFAULT, "ranking.dominance_threshold", "1/10")
    db = _explain_log(tmp_path, strict, record=True)
    result = CliRunner().invoke(_scoring_cli(), ["explain", "late", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    needed = msgspec.json.decode(result.output)["dominance"]["comparisons"][0]["needed"]
    assert Fraction(needed) == Fraction(3, 4) + Fraction(1, 10)  # not the packaged 1/20


def test_explain_and_replay_stop_on_a_digest_whose_content_is_unknown(tmp_path: Path) -> None:
    db = _explain_log(tmp_path, SHORT, record=False)
    for args in (["explain", "late", "--db", str(db)], ["replay", "3", "--db", str(db)]):
        result = CliRunner().invoke(_scoring_cli(), args)
        assert result.exit_code == 1, result.output
        assert "whose content this log does not hold" in result.output and SHORT.digest[:16] in result.output


# -- serve refuses a consensus it cannot run exactly --------------------------------------------


@pytest.mark.parametrize(("edit", "named"), [
    (lambda t: t.replace("[window]\n", "[window]\nsize = 7\n"), "unknown key(s) window.size"),
    (lambda t: t.replace("burn_uid = 0\n", ""), "missing key(s) ranking.burn_uid"),
    (lambda t: t.replace("a9ffef281d5cc218", "00ffef281d5cc218"), "judge.describe_prompt"),
])
def test_serve_refuses_to_start_naming_the_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit, named) -> None:  # type: ignore[no-untyped-def]
    from leoma_cmd.serve_cmds import register

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "consensus.toml"
    path.write_text(edit(PACKAGED))
    group = click.Group("leoma")
    register(group)
    env = {"GEMINI_API_KEY": "k", "LEOMA_OWN_BUCKET_URL": f"file://{tmp_path / 'b'}",
           "LEOMA_SOURCE_URL": f"file://{tmp_path / 's'}", "LEOMA_CONSENSUS": str(path)}
    result = CliRunner().invoke(group, ["serve", "--dev-key", "//Alice", "--state-dir", str(tmp_path)], env=env)
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot start" in lines[0] and named in lines[0], result.output
    assert not (tmp_path / "events.db").exists()
