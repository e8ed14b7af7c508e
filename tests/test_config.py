"""Settings: flags over environment over .env, derived bucket URLs, require() and redaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from leoma.errors import ConfigError
from leoma.ops.config import SEED_SOURCE_BUCKET, Settings


def test_defaults_are_the_seeds() -> None:
    s = Settings.load(env={}, dotenv=False)
    assert (s.network, s.netuid, s.wallet_name, s.hotkey_name) == ("finney", 99, "default", "default")
    assert s.miner_validation_interval == 300 and s.sampler_poll_interval == 60
    assert s.max_concurrent_miners == 40 and s.request_timeout == 300
    assert s.chutes_api_url == "https://api.chutes.ai"
    assert s.chute_url_template == "https://{slug}.chutes.ai/generate"
    assert s.db_path == Path("~/.leoma/events.db").expanduser()
    assert s.own_store_url == "" and s.source_store_url == ""


def test_flags_beat_environment_beats_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("NETUID=5\nNETWORK=test\nGEMINI_API_KEY=from-file\n")
    s = Settings.load({"netuid": 7}, env={"NETUID": "6", "NETWORK": "local"}, dotenv=dotenv)
    assert s.netuid == 7 and s.network == "local" and s.gemini_api_key == "from-file"


def test_dotenv_in_cwd_never_overrides_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("NETUID=5\nLEOMA_STATE_DIR=/from/file\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETUID", "12")
    s = Settings.load()
    assert s.netuid == 12 and s.state_dir == "/from/file"
    assert s.db_path == Path("/from/file/events.db")


def test_r2_variables_give_store_urls() -> None:
    s = Settings.load(env={"R2_OWN_BUCKET": "leoma-val-3", "R2_OWN_ENDPOINT": "https://acct.r2.example",
                           "R2_VIDEOS_READ_ACCESS_KEY": "ak", "R2_VIDEOS_READ_SECRET_KEY": "sk"}, dotenv=False)
    assert s.own_store_url.startswith("s3://leoma-val-3?endpoint=https%3A%2F%2Facct.r2.example&region=auto")
    assert "access_key_env=R2_OWN_WRITE_ACCESS_KEY" in s.own_store_url
    assert s.source_store_url.startswith(f"s3://{SEED_SOURCE_BUCKET}?")
    assert s.own_bucket_name == "leoma-val-3" and s.source_bucket_name == SEED_SOURCE_BUCKET
    explicit = Settings.load(env={"LEOMA_OWN_BUCKET_URL": "file:///tmp/own", "R2_OWN_BUCKET": "ignored"}, dotenv=False)
    assert explicit.own_store_url == "file:///tmp/own" and explicit.own_bucket_name == "own"


def test_require_names_the_missing_setting_and_why() -> None:
    s = Settings.load(env={}, dotenv=False)
    with pytest.raises(ConfigError) as err:
        s.require("GEMINI_API_KEY")
    assert str(err.value) == "GEMINI_API_KEY is not set: the sampler needs the judge"
    with pytest.raises(ConfigError, match="^R2_OWN_BUCKET is not set: for the test$"):
        s.require("netuid", "R2_OWN_BUCKET", why="for the test")
    Settings.load(env={"R2_OWN_BUCKET": "b"}, dotenv=False).require("LEOMA_OWN_BUCKET_URL")


@pytest.mark.parametrize("var, value, message", [
    ("NETUID", "ninety", "NETUID='ninety' is not a whole number"),
    ("REQUEST_TIMEOUT", "0", "REQUEST_TIMEOUT must be a positive"),
    ("SAMPLER_POLL_INTERVAL", "nan", "SAMPLER_POLL_INTERVAL must be a positive"),
    ("MAX_CONCURRENT_MINERS", "0", "MAX_CONCURRENT_MINERS must be at least 1"),
    ("LEOMA_CHUTE_URL_TEMPLATE", "https://x/generate", "must contain {slug}"),
])
def test_bad_values_are_one_clear_line(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}").replace("(", r"\(")):
        Settings.load(env={var: value}, dotenv=False)


def test_redacted_never_shows_secrets() -> None:
    secrets = {"GEMINI_API_KEY": "g-secret", "CHUTES_API_KEY": "c-secret", "HF_TOKEN": "h-secret",
               "R2_OWN_WRITE_ACCESS_KEY": "a-secret", "R2_OWN_WRITE_SECRET_KEY": "s-secret",
               "R2_VIDEOS_READ_ACCESS_KEY": "ra-secret", "R2_VIDEOS_READ_SECRET_KEY": "rs-secret",
               "PEER_VALIDATORS": '[{"read_secret_key": "p-secret"}]'}
    s = Settings.load(env=secrets, dotenv=False)
    shown = repr(s.redacted()) + repr(s)
    for value in secrets.values():
        assert value not in shown
    assert s.redacted()["GEMINI_API_KEY"] == "***"
    assert s.redacted()["API_URL"] == ""


def test_peer_validators_come_from_leoma_peers_and_problems_are_reported() -> None:
    import json

    a = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    good = {"hotkey": a, "bucket": "b", "endpoint": "https://e", "read_access_key": "key-id-x", "read_secret_key": "secret-x"}
    s = Settings.load({"peer_validators": json.dumps([good, 3, {"hotkey": "5B"}])}, env={}, dotenv=False)
    peers = s.peers()
    assert list(peers) == [a] and peers[a].region == "auto"
    problems = s.peer_problems()
    assert len(problems) >= 2 and "secret-x" not in repr(peers[a]) and "secret-x" not in " ".join(problems)
    assert Settings.load({"peer_validators": "not json"}, env={}, dotenv=False).peers() == {}


def test_unknown_flag_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'netwrk'"):
        Settings.load({"netwrk": "x"}, env={}, dotenv=False)


# -- the one numeric reader every settings object uses ---------------------------------------------

@pytest.mark.parametrize(("raw", "default", "kw", "expected"), [
    ("", 7, {}, 7), (" 12 ", 7, {}, 12), ("2.5", 1.0, {}, 2.5), ("3", 1.0, {}, 3.0), (None, 0.5, {}, 0.5),
])
def test_read_number_reads_the_type_of_its_default(raw: str | None, default: float, kw: dict, expected: float) -> None:
    from leoma.ops.config import read_number

    value = read_number({} if raw is None else {"X_SETTING": raw}, "X_SETTING", default, **kw)
    assert value == expected and type(value) is type(default)


@pytest.mark.parametrize(("raw", "default", "kw", "words"), [
    ("ten", 7, {}, "X_SETTING='ten' is not a whole number"), ("1.5", 7, {}, "is not a whole number"),
    ("soon", 1.0, {}, "is not a number"), ("0", 1.0, {"positive": True}, "X_SETTING must be positive"),
    ("2", 7, {"minimum": 3}, "X_SETTING must be at least 3"),
])
def test_read_number_names_the_variable_when_wrong(raw: str, default: float, kw: dict, words: str) -> None:
    from leoma.errors import ConfigError
    from leoma.ops.config import read_number

    with pytest.raises(ConfigError, match=re.escape(words)):
        read_number({"X_SETTING": raw}, "X_SETTING", default, **kw)


def test_the_api_and_serve_read_numbers_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from leoma.api.settings import ApiSettings
    from leoma.errors import ConfigError
    from leoma.ops.config import default_db
    from leoma.services.serve import serve_options

    with pytest.raises(ConfigError, match="MAX_BODY_SIZE='big' is not a whole number"):
        ApiSettings.load(env={"MAX_BODY_SIZE": "big"})
    with pytest.raises(ConfigError, match="LEOMA_STALE_BLOCKS='big' is not a whole number"):
        serve_options(env={"LEOMA_STALE_BLOCKS": "big"}, dotenv=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("LEOMA_STATE_DIR=/srv/leoma\n")
    assert default_db({}) == "/srv/leoma/events.db", "the event log path is read like every setting, .env too"
    assert default_db({"LEOMA_DB": "/x/e.db"}) == "/x/e.db"
