"""The validator's settings: where things are (endpoints, keys, paths), never how a verdict is reached.

`Settings.load(flags)` reads, in order of precedence: command-line flags, the environment, then a
`.env` file in the current directory (python-dotenv; it never overrides the environment). The
names are the seed's (seed-spec §8.1) plus Leoma's own `LEOMA_*`:

    LEOMA_DB                  event log path (default $LEOMA_STATE_DIR/events.db)
    LEOMA_OWN_BUCKET_URL      own result bucket, an `open_store` URL (default: from R2_OWN_*)
    LEOMA_SOURCE_URL          source bucket URL (default: the seed's R2 bucket, R2_VIDEOS_READ_*)
    LEOMA_GEMINI_BASE_URL     Gemini endpoint (a stand-in on the devnet)
    LEOMA_HF_ENDPOINT         Hugging Face endpoint
    LEOMA_CHUTE_URL_TEMPLATE  chute generation URL, `{slug}` replaced (seed: https://{slug}.chutes.ai/generate)
    LEOMA_CONSENSUS           path to a consensus.toml (default: the one the log recorded, else
                              the packaged one; `resolve_consensus` is the one rule for every command)
    LEOMA_DEV_KEY             a dev key URI (`//Alice`) used instead of a wallet on the devnet

How a verdict or a weight is reached lives in `consensus.toml` only. Secrets are kept in the
`Settings` but `redacted()` (what logs and `--json` outputs show) never contains them.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from leoma.errors import ConfigError

__all__ = ["Settings", "SEED_SOURCE_BUCKET", "SEED_R2_ENDPOINT", "environment", "resolve_consensus"]

SEED_SOURCE_BUCKET = "leoma-videos"
SEED_R2_ENDPOINT = "https://cce499ad4f3a4703b069771d8ff4215a.r2.cloudflarestorage.com"

# Settings whose values are secret: shown as "***" by `redacted()`.
SECRETS = frozenset({
    "gemini_api_key", "chutes_api_key", "hf_token", "r2_own_write_access_key", "r2_own_write_secret_key",
    "r2_videos_read_access_key", "r2_videos_read_secret_key", "peer_validators",
})

# Why a setting is needed, for `require()` messages that say what to do.
_WHY: dict[str, str] = {
    "GEMINI_API_KEY": "the sampler needs the judge",
    "LEOMA_OWN_BUCKET_URL": "the sampler needs a bucket it can write to (or set R2_OWN_BUCKET)",
    "R2_OWN_BUCKET": "the sampler needs a bucket it can write to",
    "LEOMA_SOURCE_URL": "the allowlist and the source clips are read from it (or set R2_VIDEOS_READ_ACCESS_KEY)",
    "API_URL": "reports go to the owner's API",
    "CHUTES_API_KEY": "miners' chutes are called with it",
}


# field name -> (environment variable, default); the order is the order of `--help`-style listings.
_ENV: dict[str, tuple[str, Any]] = {
    "network": ("NETWORK", "finney"),
    "netuid": ("NETUID", 99),
    "wallet_name": ("WALLET_NAME", "default"),
    "hotkey_name": ("HOTKEY_NAME", "default"),
    "wallet_path": ("BT_WALLET_PATH", ""),
    "dev_key": ("LEOMA_DEV_KEY", ""),
    "gemini_api_key": ("GEMINI_API_KEY", ""),
    "gemini_base_url": ("LEOMA_GEMINI_BASE_URL", ""),
    "chutes_api_key": ("CHUTES_API_KEY", ""),
    "chutes_api_url": ("CHUTES_API_URL", "https://api.chutes.ai"),
    "chute_url_template": ("LEOMA_CHUTE_URL_TEMPLATE", "https://{slug}.chutes.ai/generate"),
    "hf_token": ("HF_TOKEN", ""),
    "hf_endpoint": ("LEOMA_HF_ENDPOINT", ""),
    "r2_own_bucket": ("R2_OWN_BUCKET", ""),
    "r2_own_endpoint": ("R2_OWN_ENDPOINT", ""),
    "r2_own_region": ("R2_OWN_REGION", "auto"),
    "r2_own_write_access_key": ("R2_OWN_WRITE_ACCESS_KEY", ""),
    "r2_own_write_secret_key": ("R2_OWN_WRITE_SECRET_KEY", ""),
    "r2_videos_read_access_key": ("R2_VIDEOS_READ_ACCESS_KEY", ""),
    "r2_videos_read_secret_key": ("R2_VIDEOS_READ_SECRET_KEY", ""),
    "own_bucket_url": ("LEOMA_OWN_BUCKET_URL", ""),
    "source_url": ("LEOMA_SOURCE_URL", ""),
    "peer_validators": ("PEER_VALIDATORS", ""),
    "miner_validation_interval": ("MINER_VALIDATION_INTERVAL", 300.0),
    "sampler_poll_interval": ("SAMPLER_POLL_INTERVAL", 60.0),
    "max_concurrent_miners": ("MAX_CONCURRENT_MINERS", 40),
    "request_timeout": ("REQUEST_TIMEOUT", 300.0),
    "api_url": ("API_URL", ""),
    "state_dir": ("LEOMA_STATE_DIR", "~/.leoma"),
    "db": ("LEOMA_DB", ""),
    "consensus_path": ("LEOMA_CONSENSUS", ""),
    "log_level": ("LOG_LEVEL", "INFO"),
}
_BY_ENV = {env: name for name, (env, _) in _ENV.items()}


def environment(env: Mapping[str, str] | None = None, *,
                dotenv: str | os.PathLike[str] | bool = True) -> dict[str, str]:
    """`.env` (the CWD's when `dotenv=True`, a given file, or none) overlaid by `env`
    (default: the process environment): the environment always wins over the file."""
    merged: dict[str, str] = {}
    if dotenv:
        path = Path(".env") if dotenv is True else Path(dotenv)
        if path.is_file():
            from dotenv import dotenv_values

            merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    merged.update(os.environ if env is None else env)
    return merged


def read_number(env: Mapping[str, str], name: str, default: int | float, *, minimum: int | float | None = None,
                positive: bool = False) -> Any:
    """The one way a numeric setting is read: `env[name]` (stripped; empty or absent: `default`)
    as the type of `default`, with a `ConfigError` naming the variable when it is not one."""
    raw = str(env.get(name) or "").strip()
    if not raw:
        return default
    whole = isinstance(default, int) and not isinstance(default, bool)
    try:
        value: int | float = int(raw, 10) if whole else float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {'a whole number' if whole else 'a number'}") from None
    if positive and not value > 0:
        raise ConfigError(f"{name} must be positive, not {raw}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def default_db(env: Mapping[str, str] | None = None) -> str:
    """`LEOMA_DB`, else `events.db` in `LEOMA_STATE_DIR` (default `~/.leoma`), read like every setting."""
    merged = environment(env)
    if merged.get("LEOMA_DB"):
        return merged["LEOMA_DB"]
    return os.path.join(os.path.expanduser(merged.get("LEOMA_STATE_DIR") or "~/.leoma"), "events.db")


@dataclass(frozen=True)
class Settings:
    """Where the validator's outside world is. Build it with `Settings.load()`."""

    network: str = "finney"
    netuid: int = 99
    wallet_name: str = "default"
    hotkey_name: str = "default"
    wallet_path: str = ""
    dev_key: str = ""
    gemini_api_key: str = field(default="", repr=False)
    gemini_base_url: str = ""
    chutes_api_key: str = field(default="", repr=False)
    chutes_api_url: str = "https://api.chutes.ai"
    chute_url_template: str = "https://{slug}.chutes.ai/generate"
    hf_token: str = field(default="", repr=False)
    hf_endpoint: str = ""
    r2_own_bucket: str = ""
    r2_own_endpoint: str = ""
    r2_own_region: str = "auto"
    r2_own_write_access_key: str = field(default="", repr=False)
    r2_own_write_secret_key: str = field(default="", repr=False)
    r2_videos_read_access_key: str = field(default="", repr=False)
    r2_videos_read_secret_key: str = field(default="", repr=False)
    own_bucket_url: str = ""
    source_url: str = ""
    peer_validators: str = field(default="", repr=False)
    miner_validation_interval: float = 300.0
    sampler_poll_interval: float = 60.0
    max_concurrent_miners: int = 40
    request_timeout: float = 300.0
    api_url: str = ""
    state_dir: str = "~/.leoma"
    db: str = ""
    consensus_path: str = ""
    log_level: str = "INFO"

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        dotenv: str | os.PathLike[str] | bool = True,
    ) -> Settings:
        """Settings from `flags` (field names; None means "not given"), the environment, `.env`.

        `dotenv=True` reads `.env` in the current directory if there is one; a path reads that
        file; False reads none. The environment always wins over the file.
        """
        merged = environment(env, dotenv=dotenv)
        values: dict[str, Any] = {}
        for name, (var, default) in _ENV.items():
            raw = merged.get(var)
            if raw is not None and raw.strip() != "":
                values[name] = _coerce(var, raw.strip(), default)
        for name, value in (flags or {}).items():
            if name not in _ENV:
                raise ConfigError(f"unknown setting {name!r}; known: {', '.join(_ENV)}")
            if value is not None:
                values[name] = _coerce(_ENV[name][0], value, _ENV[name][1]) if isinstance(value, str) else value
        settings = cls(**values)
        settings._validate()
        return settings

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated)."""
        new = replace(self, **changes)
        new._validate()
        return new

    def _validate(self) -> None:
        for name in ("miner_validation_interval", "sampler_poll_interval", "request_timeout"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ConfigError(f"{_ENV[name][0]} must be a positive number of seconds, not {getattr(self, name)}")
        if self.max_concurrent_miners < 1:
            raise ConfigError(f"MAX_CONCURRENT_MINERS must be at least 1, not {self.max_concurrent_miners}")
        if "{slug}" not in self.chute_url_template:
            raise ConfigError(f"LEOMA_CHUTE_URL_TEMPLATE {self.chute_url_template!r} must contain {{slug}}")

    # -- derived values ---------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        """The state directory, `~` expanded."""
        return Path(self.state_dir).expanduser()

    @property
    def db_path(self) -> Path:
        """The event log: LEOMA_DB, else `$LEOMA_STATE_DIR/events.db`."""
        return Path(self.db).expanduser() if self.db else self.state_path / "events.db"

    @property
    def own_store_url(self) -> str:
        """The own result bucket's `open_store` URL ("" when none is configured)."""
        if self.own_bucket_url:
            return self.own_bucket_url
        if not self.r2_own_bucket:
            return ""
        query = urllib.parse.urlencode({
            "endpoint": self.r2_own_endpoint or SEED_R2_ENDPOINT, "region": self.r2_own_region or "auto",
            "access_key_env": "R2_OWN_WRITE_ACCESS_KEY", "secret_key_env": "R2_OWN_WRITE_SECRET_KEY",
        })
        return f"s3://{self.r2_own_bucket}?{query}"

    @property
    def source_store_url(self) -> str:
        """The source bucket's `open_store` URL ("" when none is configured)."""
        if self.source_url:
            return self.source_url
        if not self.r2_videos_read_access_key:
            return ""
        query = urllib.parse.urlencode({
            "endpoint": SEED_R2_ENDPOINT, "region": "auto",
            "access_key_env": "R2_VIDEOS_READ_ACCESS_KEY", "secret_key_env": "R2_VIDEOS_READ_SECRET_KEY",
        })
        return f"s3://{SEED_SOURCE_BUCKET}?{query}"

    @property
    def own_bucket_name(self) -> str:
        """The own bucket's name as the seed's metadata and reports name it."""
        return _bucket_name(self.own_store_url)

    @property
    def source_bucket_name(self) -> str:
        """The source bucket's name (the seed's `leoma-videos` by default)."""
        return _bucket_name(self.source_store_url)

    def store_env(self) -> dict[str, str]:
        """The environment `open_store` reads the R2 keys from (only the ones that are set)."""
        pairs = {
            "R2_OWN_WRITE_ACCESS_KEY": self.r2_own_write_access_key,
            "R2_OWN_WRITE_SECRET_KEY": self.r2_own_write_secret_key,
            "R2_VIDEOS_READ_ACCESS_KEY": self.r2_videos_read_access_key,
            "R2_VIDEOS_READ_SECRET_KEY": self.r2_videos_read_secret_key,
        }
        return {**os.environ, **{k: v for k, v in pairs.items() if v}}

    def peers(self) -> dict[str, Any]:
        """`PEER_VALIDATORS` as `leoma.mirror.peers.PeerEntry`s by hotkey (bad entries are reported by
        `leoma.mirror.peers.parse_peers` and left out)."""
        from leoma.mirror.peers import parse_peers

        return {entry.hotkey: entry for entry in parse_peers(self.peer_validators)[0]}

    def peer_problems(self) -> list[str]:
        """Every problem in `PEER_VALIDATORS`, one line each (no secrets)."""
        from leoma.mirror.peers import parse_peers

        return [str(p) for p in parse_peers(self.peer_validators)[1]]

    def consensus(self, *, from_log: bool = True) -> Any:
        """The consensus to run under: LEOMA_CONSENSUS (flag, environment or `.env`) when set;
        else, with `from_log`, the one the event log at LEOMA_DB recorded (so a tool pointed at
        a devnet's log finds the devnet's consensus without being told again); else the packaged.

        `leoma serve` passes `from_log=False`: a validator runs the file it is given or the
        packaged one, and records it; it never adopts rules from its own past.
        """
        return resolve_consensus(self.consensus_path, db=self.db_path if from_log else None)

    # -- checks and display -----------------------------------------------------------------

    def require(self, *names: str, why: str = "") -> None:
        """Raise `ConfigError` naming the first missing setting and why it is needed.

        `names` are environment names (`GEMINI_API_KEY`) or field names (`gemini_api_key`);
        `LEOMA_OWN_BUCKET_URL` / `LEOMA_SOURCE_URL` count as set when derived from the R2 vars.
        """
        for name in names:
            field_name = _BY_ENV.get(name, name)
            if field_name not in _ENV:
                raise ConfigError(f"unknown setting {name!r}")
            var = _ENV[field_name][0]
            value = {"own_bucket_url": self.own_store_url, "source_url": self.source_store_url}.get(
                field_name, getattr(self, field_name))
            if value in ("", None):
                reason = why or _WHY.get(var, "it is required here")
                raise ConfigError(f"{var} is not set: {reason}")

    def redacted(self) -> dict[str, Any]:
        """Every setting by environment name, secrets shown as `***` (set) or "" (unset)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in SECRETS:
                value = "***" if value else ""
            out[_ENV[f.name][0]] = value
        out["LEOMA_DB"] = str(self.db_path)
        out["LEOMA_OWN_BUCKET_URL"] = self.own_store_url
        out["LEOMA_SOURCE_URL"] = self.source_store_url
        return out


def resolve_consensus(path: str | os.PathLike[str] = "", *, db: str | os.PathLike[str] | None = None,
                      log: Any = None, prefer_peers: bool = False) -> Any:
    """The one rule every command uses to find its consensus.

    1. `path` (LEOMA_CONSENSUS) when given: that file, read strictly.
    2. else the consensus recorded in `log` (or in the log file at `db`, when it exists): its own
       origin's latest `consensus_recorded`, else the one every other origin last recorded
       (`prefer_peers` swaps the two: the owner's API follows the validators it imports).
    3. else the packaged `consensus.toml`.
    """
    from leoma.log.consensus import DEFAULT, load_consensus, log_consensus

    if path:
        return load_consensus(path)
    if log is not None:
        return log_consensus(log, prefer_peers=prefer_peers) or DEFAULT
    if db is not None and Path(db).expanduser().is_file():
        from leoma.errors import LogError
        from leoma.log.eventlog import EventLog

        try:
            with EventLog(Path(db).expanduser(), readonly=True) as opened:
                return log_consensus(opened, prefer_peers=prefer_peers) or DEFAULT
        except LogError:
            return DEFAULT  # not a log this version reads: the command that needs it will say so
    return DEFAULT


def _bucket_name(url: str) -> str:
    if not url:
        return ""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "s3":
        return parts.netloc
    return Path(urllib.parse.unquote(parts.path)).name


def _coerce(var: str, raw: Any, default: Any) -> Any:
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return str(raw)
    try:
        return type(default)(float(raw)) if isinstance(default, float) else int(str(raw), 10)
    except ValueError:
        kind = "a whole number" if isinstance(default, int) else "a number"
        raise ConfigError(f"{var}={raw!r} is not {kind}") from None
