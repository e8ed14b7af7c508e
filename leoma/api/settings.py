"""`ApiSettings`: where the owner's API listens and who may do what (seed-spec §8.2).

    API_HOST / API_PORT          where uvicorn listens (0.0.0.0 / 8000)
    LEOMA_API_DB                 the API's event log (default $LEOMA_STATE_DIR/api.db)
    LEOMA_API_ID                 the API's origin in its log (default "owner-api")
    ADMIN_HOTKEYS                comma-separated admin SS58 addresses (items are stripped)
    SIGNATURE_EXPIRY_SECONDS     how old (or new) a signed request may be (300)
    CORS_ORIGINS                 comma-separated origins ("" = any)
    MAX_BODY_SIZE                largest request body in bytes (2 097 152)
    MINER_VALIDATION_INTERVAL    seconds between validators' miner reports (300)
    MINER_REPORT_STALE_INTERVALS reports older than this many intervals are stale (3)
    SAMPLING_ROTATION_INTERVAL   the /overview interval before any allowlist is known (100)
    PEER_VALIDATORS              validators' buckets (mirror import, presigned media)
    LEOMA_API_REFERENCE          the validator whose view the leaderboard adopts (default: auto)
    LEOMA_API_SYNC_SECONDS       how often the validators' mirrors are imported (60)
    LEOMA_ENV / ENVIRONMENT      `production` keeps tracebacks out of logs
    LEOMA_CONSENSUS              a consensus.toml (default: the one the validators the API imports
                                 recorded, else the one its log recorded, else the packaged one)

They are read like every Leoma setting (`leoma.ops.config.environment`): the environment, over a
`.env` file in the current directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ApiSettings", "DEFAULT_API_ID", "parse_admins"]

DEFAULT_API_ID = "owner-api"


def parse_admins(text: str) -> frozenset[str]:
    """ADMIN_HOTKEYS split on commas, each item stripped, empty items dropped (fixes seed §12.27)."""
    return frozenset(item.strip() for item in (text or "").split(",") if item.strip())


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    from leoma.ops.config import read_number

    return int(read_number(env, name, default, minimum=minimum))


@dataclass(frozen=True)
class ApiSettings:
    """The API's configuration; build it with `ApiSettings.load()`."""

    host: str = "0.0.0.0"
    port: int = 8000
    db: str = ""
    api_id: str = DEFAULT_API_ID
    admins: frozenset[str] = frozenset()
    signature_expiry: int = 300
    cors_origins: tuple[str, ...] = ("*",)
    max_body_size: int = 2_097_152
    miner_validation_interval: int = 300
    stale_intervals: int = 3
    rotation_interval: int = 100
    peer_validators: str = field(default="", repr=False)
    reference: str = ""
    sync_seconds: int = 60
    production: bool = False
    state_dir: str = "~/.leoma"
    consensus_path: str = ""

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ApiSettings:
        """Settings from the environment (over `.env`); keyword `overrides` (field names) win."""
        if env is None:
            from leoma.ops.config import environment

            env = environment()
        origins = tuple(o.strip() for o in (env.get("CORS_ORIGINS") or "").split(",") if o.strip())
        mode = (env.get("LEOMA_ENV") or env.get("ENVIRONMENT") or "").strip().lower()
        values: dict[str, object] = dict(
            host=(env.get("API_HOST") or "0.0.0.0").strip(),
            port=_int(env, "API_PORT", 8000),
            db=(env.get("LEOMA_API_DB") or "").strip(),
            api_id=(env.get("LEOMA_API_ID") or DEFAULT_API_ID).strip(),
            admins=parse_admins(env.get("ADMIN_HOTKEYS", "")),
            signature_expiry=_int(env, "SIGNATURE_EXPIRY_SECONDS", 300, 1),
            cors_origins=origins or ("*",),
            max_body_size=_int(env, "MAX_BODY_SIZE", 2_097_152, 1),
            miner_validation_interval=_int(env, "MINER_VALIDATION_INTERVAL", 300, 1),
            stale_intervals=_int(env, "MINER_REPORT_STALE_INTERVALS", 3, 1),
            rotation_interval=_int(env, "SAMPLING_ROTATION_INTERVAL", 100, 1),
            peer_validators=env.get("PEER_VALIDATORS", ""),
            reference=(env.get("LEOMA_API_REFERENCE") or "").strip(),
            sync_seconds=_int(env, "LEOMA_API_SYNC_SECONDS", 60, 1),
            production=mode == "production",
            state_dir=(env.get("LEOMA_STATE_DIR") or "~/.leoma").strip(),
            consensus_path=(env.get("LEOMA_CONSENSUS") or "").strip(),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def db_path(self) -> Path:
        """The API's event log file."""
        return Path(self.db).expanduser() if self.db else Path(self.state_dir).expanduser() / "api.db"

    def consensus(self, log: Any) -> Any:
        """The consensus the API computes with (`leoma.ops.config.resolve_consensus`, validators first)."""
        from leoma.ops.config import resolve_consensus

        return resolve_consensus(self.consensus_path, log=log, prefer_peers=True)

    @property
    def stale_seconds(self) -> int:
        """Reports older than this are not counted in the miner consensus."""
        return self.miner_validation_interval * self.stale_intervals
