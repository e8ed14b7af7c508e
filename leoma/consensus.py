"""The pinned consensus configuration (`consensus.toml`) and its digest.

Every value that changes a verdict or a weight lives in one file shipped with the package.
`Consensus.digest` is the sha256 of its canonical JSON form (so comments and layout do not
matter, values do); it is stamped into every scored epoch and checkpoint.
"""

from __future__ import annotations

import hashlib
import tomllib
from fractions import Fraction
from functools import cached_property
from importlib import resources
from pathlib import Path

import msgspec

from leoma.errors import ConfigError

ASPECTS: tuple[str, ...] = (
    "first_frame_fidelity",
    "prompt_adherence",
    "motion_quality",
    "temporal_consistency",
    "visual_quality",
    "camera_composition",
)
CRITICAL_ASPECTS: tuple[str, ...] = ("first_frame_fidelity", "prompt_adherence", "temporal_consistency")


def fraction(text: str, *, name: str = "value") -> Fraction:
    """Parse an exact ratio written as `"4/5"`, `"0.18"` or `"2"`."""
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{name} = {text!r} is not an exact number like \"4/5\" or \"0.18\"") from None


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Rotation(_Section):
    interval: int = 100
    failover_grace_blocks: int = 0
    allowlist_refresh_blocks: int = 300


class Epoch(_Section):
    length: int = 180
    burn_after_epochs_without_data: int = 3


class Window(_Section):
    tasks: int = 100
    settle_margin: int = 2
    max_lookback_blocks: int = 30000
    completeness: str = "4/5"
    min_distinct_validators: str = "1/2"


class Ranking(_Section):
    dominance_threshold: str = "1/20"
    max_commits_per_hotkey: int = 2
    burn_uid: int = 0


class Judge(_Section):
    evaluation_model: str = "gemini-3.1-flash-lite"
    description_model: str = "gemini-3.1-flash-lite"
    describe_prompt: str = "describe/v1"
    evaluate_prompt: str = "evaluate/v1"
    pass_threshold: int = 75
    critical_threshold: int = 50
    evaluation_fps: int = 16
    description_fps: int = 16
    media_resolution: str = "high"
    evaluation_temperature: str = "1/10"
    description_temperature: str = "1/5"
    evaluation_max_tokens: int = 450
    description_max_tokens: int = 400
    attempts: int = 3
    aspect_weights: dict[str, str] = {}


class Video(_Section):
    required_width: int = 832
    required_height: int = 480
    resolution_tolerance: int = 32
    clip_seconds: int = 5
    scene_threshold: str = "9/50"
    boundary_margin: str = "3/20"
    safe_start_offset: str = "2"
    min_source_bytes: int = 1_000_000
    max_source_bytes: int = 200_000_000
    max_response_bytes: int = 100_000_000
    max_frames: int = 2000
    max_pixels: int = 3840 * 2160


class Request(_Section):
    fps: int = 16
    frames: int = 81
    resolution: str = "480p"
    fast: bool = True


class Gates(_Section):
    """The video gates and copy detection (`leoma.gates`, `projections.gates`).

    Pinned from measurements on the reference miners (see `tests/test_gates.py`).
    """

    version: str = "gates/v1"
    codecs: str = "h264 hevc vp9 av1"
    """Accepted codecs (FFmpeg decoder names), separated by spaces."""
    min_frames: int = 16
    max_frames: int = 162
    fps_tolerance_milli: int = 500
    min_duration_ms: int = 900
    max_duration_ms: int = 10500
    min_first_frame_psnr_cdb: int = 2700
    min_motion_c: int = 150
    max_cut_milli: int = 180
    hash_frames: int = 8
    copy_max_bits: int = 6
    source_max_bits: int = 10
    reply_deadline_share: str = "3/4"


class Consensus(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, dict=True):
    """Every value that changes a verdict or a weight."""

    version: int = 1
    rotation: Rotation = Rotation()
    epoch: Epoch = Epoch()
    window: Window = Window()
    ranking: Ranking = Ranking()
    judge: Judge = Judge()
    video: Video = Video()
    request: Request = Request()
    gates: Gates = Gates()

    def __post_init__(self) -> None:
        # Validate every ratio once, so a typo fails at start-up rather than mid-epoch.
        for name in ("completeness", "min_distinct_validators"):
            value = fraction(getattr(self.window, name), name=f"window.{name}")
            if not 0 <= value <= 1:
                raise ConfigError(f"window.{name} must be between 0 and 1, got {value}")
        fraction(self.ranking.dominance_threshold, name="ranking.dominance_threshold")
        weights = self.aspect_weights
        if set(weights) != set(ASPECTS):
            raise ConfigError(f"judge.aspect_weights must name exactly {', '.join(ASPECTS)}")
        if sum(weights.values()) != 1:
            raise ConfigError(f"judge.aspect_weights must add up to 1, they add up to {sum(weights.values())}")
        share = fraction(self.gates.reply_deadline_share, name="gates.reply_deadline_share")
        if not 0 < share <= 1:
            raise ConfigError(f"gates.reply_deadline_share must be in (0, 1], got {share}")
        if self.gates.hash_frames < 2:
            raise ConfigError("gates.hash_frames must be at least 2")
        if self.rotation.interval < 1 or self.epoch.length < 1 or self.window.tasks < 1:
            raise ConfigError("rotation.interval, epoch.length and window.tasks must be >= 1")

    @cached_property
    def canonical(self) -> bytes:
        """Deterministic JSON of every value; what the digest covers."""
        return msgspec.json.encode(self, order="sorted")

    @cached_property
    def digest(self) -> str:
        """sha256 hex of the canonical form: equal digests mean identical consensus rules."""
        return hashlib.sha256(self.canonical).hexdigest()

    @property
    def completeness(self) -> Fraction:
        return fraction(self.window.completeness)

    @property
    def min_distinct_ratio(self) -> Fraction:
        return fraction(self.window.min_distinct_validators)

    @property
    def dominance_threshold(self) -> Fraction:
        return fraction(self.ranking.dominance_threshold)

    @property
    def aspect_weights(self) -> dict[str, Fraction]:
        return {k: fraction(v, name=f"judge.aspect_weights.{k}") for k, v in self.judge.aspect_weights.items()}

    def grace_blocks(self, interval: int) -> int:
        """Blocks before the first backup may take a task (the seed's `grace_blocks_for`)."""
        configured = self.rotation.failover_grace_blocks
        return configured if configured > 0 else max(1, interval // 2)


def parse_consensus(text: str, *, source: str = "consensus.toml") -> Consensus:
    """Parse consensus TOML; every unknown or mistyped key is an error naming it."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, Consensus)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_consensus(path: str | Path | None = None) -> Consensus:
    """The consensus config: the packaged default, or the file at `path`."""
    if path is None:
        text = resources.files("leoma").joinpath("consensus.toml").read_text("utf-8")
        return parse_consensus(text)
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read consensus config {path}: {exc.strerror}") from None
    return parse_consensus(text, source=str(path))


DEFAULT = load_consensus()
"""The packaged consensus configuration."""
