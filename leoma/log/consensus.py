"""The pinned consensus configuration (`consensus.toml`) and its digest.

Every value that changes a verdict or a weight lives in one file shipped with the package.
`Consensus.digest` is the sha256 of its canonical JSON form (so comments and layout do not
matter, values do); it is stamped into every scored epoch and checkpoint.

The schema is the `Consensus` struct below and nothing else: a section is a `_Section`
subclass, a leaf is one of its fields. Adding a section means adding a class and a field of
`Consensus`; `schema_leaves()` then knows its leaves, the strict reader refuses files that
lack them, and the perturbation test (tests/test_consensus_perturb.py) fails until each new
leaf has a row saying which behaviour it changes.

A file is read strictly: every leaf must be written (a missing key is refused, naming it, so a
file never silently inherits a default that a later version may change) and an unknown key is
refused, naming it.

The judge's prompts are packaged text files (`leoma/prompts/<label>.txt`); the consensus names
each by label and carries its sha256, so editing a prompt changes the digest (the file and
the consensus are edited together, or the validator refuses to start).

The log records the consensus it runs under (`consensus_recorded`, once per digest, with the
whole canonical content); `consensus_for(log, digest)` gives tools the consensus a decision
was made under, or raises `UnknownConsensus` instead of recomputing with another one.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Iterator
from fractions import Fraction
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from leoma.errors import ConfigError, UnknownConsensus

SUPPORTED_VERSION = 1
"""The consensus schema version this Leoma reads; a file of another version is refused."""

MEDIA_RESOLUTIONS: tuple[str, ...] = ("low", "medium", "high")

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


class Rotation(_Section, frozen=True):
    interval: int = 100
    failover_grace_blocks: int = 0
    allowlist_refresh_blocks: int = 300


class Epoch(_Section, frozen=True):
    length: int = 180
    burn_after_epochs_without_data: int = 3


class Window(_Section, frozen=True):
    tasks: int = 100
    settle_margin: int = 2
    max_lookback_blocks: int = 30000
    completeness: str = "4/5"
    min_distinct_validators: str = "1/2"
    # Switches for the migration profile (consensus-seed.toml); see ADDITIVE_DEFAULTS.
    settle: str = "rotations"
    """`rotations`: the settle margin counts rotation indices (the fix); `produced`: the newest
    `settle_margin` produced tasks are dropped (the seed's rule, seed-spec §6.3)."""
    producers: str = "rightful"
    """`rightful`: only the schedule's sampler at the claim's block counts (the fix);
    `ring-order`: the first producer in failover order at any step counts (the seed's rule)."""
    completeness_tolerance: str = "0"
    """Subtracted from `completeness` before comparing (the seed's `1e-12`, exactly)."""


class Ranking(_Section, frozen=True):
    dominance_threshold: str = "1/20"
    max_commits_per_hotkey: int = 2
    burn_uid: int = 0
    arithmetic: str = "exact"
    """`exact`: rates and the threshold compared as fractions (the fix); `float`: as the seed's
    IEEE doubles (mean of per-validator float rates, `rate >= earlier + threshold`)."""
    unpayable_winner: str = "next"
    """`next`: invalid miners are not ranked and an unpayable winner passes to the next miner
    (the fix); `burn`: every miner with verdicts is ranked (the seed's rule) and an unpayable
    winner burns (the seed's fallback) -- an invalid miner is never paid in either."""


class Judge(_Section, frozen=True):
    evaluation_model: str = "gemini-3.1-flash-lite"
    description_model: str = "gemini-3.1-flash-lite"
    describe_prompt: str = "describe/v1"
    describe_prompt_sha256: str = "a9ffef281d5cc218b1211ecdfeee820ea256fd737b042eadeb333073b79ff041"
    evaluate_prompt: str = "evaluate/v1"
    evaluate_prompt_sha256: str = "63fc5cf51df6a952c1cc1426ab6d01051c94efa6b50cde67078bb9e05d5bed2a"
    evaluate_system_prompt: str = "evaluate-system/v1"
    evaluate_system_prompt_sha256: str = "1df5eb08c855cd1d0ee51d03c69210de6248ea2c4709ac6acfa292a6f0dada77"
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
    aspect_weights: dict[str, str] = msgspec.field(default_factory=lambda: {
        "first_frame_fidelity": "1/4", "prompt_adherence": "1/4", "motion_quality": "3/20",
        "temporal_consistency": "1/5", "visual_quality": "1/10", "camera_composition": "1/20",
    })


class Video(_Section, frozen=True):
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


class Request(_Section, frozen=True):
    fps: int = 16
    frames: int = 81
    resolution: str = "480p"
    fast: bool = True


class Gates(_Section, frozen=True):
    """The video gates and copy detection (`leoma.adapters.gates`, `projections.gates`).

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


class Anchors(_Section, frozen=True):
    """Decisions fixed by the chain (`leoma.mirror.anchors`): off until a subnet moves all its validators.

    When `enabled`, each validator commits its mirror checkpoint (size, head) on chain once per
    epoch; the decision for epoch E reads, per allowlisted validator, exactly the events its
    newest anchor at or before the cutoff block `E * epoch.length - cutoff_margin` covers, or
    holds. A task counts only if the first anchor covering its `task_opened` was committed by
    the end of the rotation slot it claims plus `grace_blocks` (0 = one epoch).
    """

    enabled: bool = False
    cutoff_margin: int = 20
    grace_blocks: int = 0


ADDITIVE_DEFAULTS: dict[tuple[str, str], object] = {
    ("anchors", "enabled"): False,
    ("anchors", "cutoff_margin"): 20,
    ("anchors", "grace_blocks"): 0,
    ("window", "settle"): "rotations",
    ("window", "producers"): "rightful",
    ("window", "completeness_tolerance"): "0",
    ("ranking", "arithmetic"): "exact",
    ("ranking", "unpayable_winner"): "next",
}
"""Keys added after the first release: left out of the digest while they hold these defaults,
so the default profile's digest is the one it always was."""

_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("window", "settle"): ("rotations", "produced"),
    ("window", "producers"): ("rightful", "ring-order"),
    ("ranking", "arithmetic"): ("exact", "float"),
    ("ranking", "unpayable_winner"): ("next", "burn"),
}


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
    anchors: Anchors = Anchors()

    def __post_init__(self) -> None:
        # Validate every ratio once, so a typo fails at start-up rather than mid-epoch.
        if self.version != SUPPORTED_VERSION:
            raise ConfigError(f"consensus version {self.version} is not one this Leoma reads "
                              f"(it reads version {SUPPORTED_VERSION}): upgrade Leoma or use a matching file")
        for name in ("evaluation_temperature", "description_temperature"):
            value = fraction(getattr(self.judge, name), name=f"judge.{name}")
            if not 0 <= value <= 2:
                raise ConfigError(f"judge.{name} must be between 0 and 2, got {value}")
        if self.judge.media_resolution not in MEDIA_RESOLUTIONS:
            raise ConfigError(f"judge.media_resolution = {self.judge.media_resolution!r}: choose one of "
                              f"{', '.join(MEDIA_RESOLUTIONS)}")
        for name in ("scene_threshold", "boundary_margin", "safe_start_offset"):
            fraction(getattr(self.video, name), name=f"video.{name}")
        for name in ("completeness", "min_distinct_validators"):
            value = fraction(getattr(self.window, name), name=f"window.{name}")
            if not 0 <= value <= 1:
                raise ConfigError(f"window.{name} must be between 0 and 1, got {value}")
        fraction(self.ranking.dominance_threshold, name="ranking.dominance_threshold")
        tolerance = fraction(self.window.completeness_tolerance, name="window.completeness_tolerance")
        if not 0 <= tolerance < 1:
            raise ConfigError(f"window.completeness_tolerance must be >= 0 and < 1, got {tolerance}")
        for (section, key), allowed in _CHOICES.items():
            value = getattr(getattr(self, section), key)
            if value not in allowed:
                raise ConfigError(f"{section}.{key} = {value!r}: choose one of {', '.join(map(repr, allowed))}")
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
        if self.anchors.enabled and (not 0 <= self.anchors.cutoff_margin < self.epoch.length
                                     or self.anchors.grace_blocks < 0):
            raise ConfigError("anchors.cutoff_margin must be >= 0 and below epoch.length; anchors.grace_blocks >= 0")

    @cached_property
    def canonical(self) -> bytes:
        """Deterministic JSON of every value; what the digest covers."""
        raw = msgspec.to_builtins(self)
        for (section, key), default in ADDITIVE_DEFAULTS.items():
            if raw.get(section, {}).get(key) == default:
                del raw[section][key]
                if not raw[section]:
                    del raw[section]  # a section added later, all at its defaults
        return msgspec.json.encode(raw, order="sorted")

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
    def completeness_tolerance(self) -> Fraction:
        return fraction(self.window.completeness_tolerance)

    @property
    def dominance_threshold(self) -> Fraction:
        return fraction(self.ranking.dominance_threshold)

    @property
    def aspect_weights(self) -> dict[str, Fraction]:
        return {k: fraction(v, name=f"judge.aspect_weights.{k}") for k, v in self.judge.aspect_weights.items()}

    def anchor_cutoff(self, epoch: int) -> int:
        """The block whose anchors fix the inputs of epoch `epoch`'s decision."""
        return max(0, epoch * self.epoch.length - self.anchors.cutoff_margin)

    @property
    def anchor_grace(self) -> int:
        """Blocks after a task's rotation slot within which its first anchor must land."""
        return self.anchors.grace_blocks or self.epoch.length

    def grace_blocks(self, interval: int) -> int:
        """Blocks before the first backup may take a task (the seed's `grace_blocks_for`)."""
        configured = self.rotation.failover_grace_blocks
        return configured if configured > 0 else max(1, interval // 2)

    def prompt(self, which: str) -> str:
        """The text of the judge's `which` prompt ("describe", "evaluate", "evaluate_system"),
        read from the packaged file its label names and checked against the pinned sha256."""
        label = getattr(self.judge, f"{which}_prompt")
        pinned = getattr(self.judge, f"{which}_prompt_sha256")
        text = prompt_file(label)
        actual = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if actual != pinned:
            raise ConfigError(
                f"judge.{which}_prompt {label!r}: the packaged prompt's sha256 is {actual}, the consensus pins "
                f"{pinned}: a prompt and its pin change together (set judge.{which}_prompt_sha256)"
            )
        return text

    def prompts(self) -> dict[str, str]:
        """Every judge prompt by label, each checked against its pin (`ConfigError` otherwise)."""
        return {getattr(self.judge, f"{w}_prompt"): self.prompt(w) for w in PROMPTS}


PROMPTS: tuple[str, ...] = ("describe", "evaluate", "evaluate_system")
"""The judge's prompts: each has `judge.<name>_prompt` (label) and `judge.<name>_prompt_sha256`."""


def prompt_file(label: str) -> str:
    """The packaged prompt `leoma/prompts/<label>.txt` ("describe/v1"); `ConfigError` when absent."""
    parts = label.split("/")
    if not label or any(not p or p in (".", "..") or not all(c.isalnum() or c in "-_." for c in p) for p in parts):
        raise ConfigError(f"prompt label {label!r} is not a name like \"describe/v1\"")
    node = resources.files("leoma").joinpath("prompts", *parts[:-1], parts[-1] + ".txt")
    try:
        return node.read_text("utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ConfigError(f"no packaged prompt {label!r} (leoma/prompts/{label}.txt)") from None


# -- the schema, leaf by leaf ------------------------------------------------------------------

_DICT_LEAVES: dict[str, tuple[str, ...]] = {"judge.aspect_weights": ASPECTS}
"""Tables whose keys are fixed names: each name is a leaf of its own."""


def schema_leaves(struct: type[msgspec.Struct] = Consensus, prefix: str = "") -> list[str]:
    """Every leaf path of the schema ("window.tasks", "judge.aspect_weights.prompt_adherence")."""
    out: list[str] = []
    for f in msgspec.structs.fields(struct):
        path = f"{prefix}{f.name}"
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct):
            out.extend(schema_leaves(f.type, f"{path}."))
        elif path in _DICT_LEAVES:
            out.extend(f"{path}.{k}" for k in _DICT_LEAVES[path])
        else:
            out.append(path)
    return out


def _raw_leaves(raw: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _raw_leaves(value, f"{path}.")
        else:
            yield path


def leaves(consensus: Consensus) -> dict[str, Any]:
    """Every leaf of `consensus` by path, with its value."""
    data = msgspec.to_builtins(consensus)
    out: dict[str, Any] = {}
    for path in schema_leaves():
        node: Any = data
        for part in path.split("."):
            node = node[part]
        out[path] = node
    return out


def replace_leaf(consensus: Consensus, path: str, value: Any) -> Consensus:
    """A copy of `consensus` with the leaf at `path` set to `value` (validated like a file)."""
    data = msgspec.to_builtins(consensus)
    node = data
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    if last not in node:
        raise ConfigError(f"{path} is not a consensus leaf")
    node[last] = value
    try:
        return msgspec.convert(data, Consensus)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path} = {value!r}: {exc}") from None


def parse_consensus(text: str, *, source: str = "consensus.toml") -> Consensus:
    """Parse consensus TOML strictly: every unknown key and every missing one is refused, by name;
    a mistyped value is refused naming its key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    expected = schema_leaves()
    given = list(_raw_leaves(raw))
    known_tables = {p.rsplit(".", 1)[0] for p in expected if "." in p}
    unknown = [p for p in given if p not in expected and p not in known_tables]
    # Keys added later with digest-neutral defaults (ADDITIVE_DEFAULTS) may be left out: a file
    # written before them keeps parsing, and keeps its digest.
    optional = {f"{section}.{key}" for section, key in ADDITIVE_DEFAULTS}
    missing = [p for p in expected if p not in given and p not in optional]
    problems = []
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}")
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)} (every key of the packaged consensus.toml must be "
                          "written, and no other)")
    try:
        return msgspec.convert(raw, Consensus)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from None


SEED_PROFILE = "consensus-seed.toml"
"""The packaged migration profile: the first implementation's rules, the security fixes kept."""


def load_consensus(path: str | os.PathLike[str] | None = None) -> Consensus:
    """The consensus config: the packaged default, the file at `path`, or (`"seed"`) the migration profile."""
    if path is None:
        text = resources.files("leoma").joinpath("consensus.toml").read_text("utf-8")
        return parse_consensus(text)
    if str(path) in ("seed", SEED_PROFILE) and not Path(path).exists():
        return load_seed_profile()  # `LEOMA_CONSENSUS=seed`: the packaged migration profile
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read consensus config {path}: {exc.strerror}") from None
    return parse_consensus(text, source=str(path))


DEFAULT = load_consensus()
"""The packaged consensus configuration."""


def load_seed_profile() -> Consensus:
    """The packaged migration profile for a fleet of first-implementation validators."""
    text = resources.files("leoma").joinpath(SEED_PROFILE).read_text("utf-8")
    return parse_consensus(text, source=SEED_PROFILE)


# -- the consensus a log ran under --------------------------------------------------------------

CONSENSUS_KIND = "consensus_recorded"


def consensus_key(digest: str) -> str:
    """The natural key of the event recording the consensus of `digest`."""
    return f"consensus/{digest}"


def from_content(content: str, digest: str) -> Consensus:
    """The consensus whose canonical JSON is `content`, checked to hash to `digest`."""
    actual = hashlib.sha256(content.encode("utf-8")).hexdigest()
    if actual != digest:
        raise UnknownConsensus(f"the recorded consensus content hashes to {actual[:16]}…, not {digest[:16]}…")
    try:
        found = msgspec.json.decode(content, type=Consensus)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise UnknownConsensus(f"consensus {digest[:16]}… was recorded in a form this Leoma cannot read: {exc}") from None
    if found.digest != digest:
        raise UnknownConsensus(f"consensus {digest[:16]}… has keys this Leoma does not know: it cannot be "
                               "applied faithfully (use the Leoma version that recorded it)")
    return found


def recorded_body(consensus: Consensus) -> Any:
    """The `consensus_recorded` event body for `consensus` (its whole content and prompt texts)."""
    from leoma.log.events import ConsensusRecorded

    try:
        prompts = consensus.prompts()
    except ConfigError:
        prompts = {}  # a tool's consensus whose prompt files are not packaged here: content alone
    return ConsensusRecorded(digest=consensus.digest, content=consensus.canonical.decode("utf-8"), prompts=prompts)


def record_consensus(log: Any, consensus: Consensus, *, block: int = 0) -> None:
    """Append `consensus_recorded` for `consensus` to `log` (a no-op when this origin already did)."""
    log.append(recorded_body(consensus), key=consensus_key(consensus.digest), block=block)


def recorded_consensuses(log: Any, *, origin: str | None = None) -> dict[str, Consensus]:
    """Every consensus recorded in `log` (by `origin`, or by anyone), by digest, in log order."""
    from leoma.log.events import ConsensusRecorded, decode_body

    out: dict[str, Consensus] = {}
    for row in log.rows(kinds=[CONSENSUS_KIND], origin=origin):
        body = decode_body(row.body, row.v)
        if not isinstance(body, ConsensusRecorded) or body.digest in out:
            continue
        try:
            out[body.digest] = from_content(body.content, body.digest)
        except UnknownConsensus:
            continue
    return out


def consensus_for(log: Any, digest: str, *, also: tuple[Consensus, ...] = ()) -> Consensus:
    """The consensus a decision stamped with `digest` was made under: recorded in `log`, or one of
    `also` (a file the caller was given, the packaged one) with exactly that digest.

    Raises `UnknownConsensus` naming the digest when none is at hand: a tool must say so and
    stop rather than recompute a decision under another consensus.
    """
    for candidate in (*also, DEFAULT):
        if candidate.digest == digest:
            return candidate
    found = recorded_consensuses(log).get(digest)
    if found is not None:
        return found
    raise UnknownConsensus(
        f"the decision was made under consensus {digest[:16]}…, whose content this log does not hold "
        "(no consensus_recorded event for it): import the validator's mirror, or pass that consensus.toml"
    )


def log_consensus(log: Any, *, prefer_peers: bool = False) -> Consensus | None:
    """The consensus `log` runs under, as recorded in it: its own origin's latest record, else the
    one consensus every other origin recorded last (`prefer_peers` asks the others first); None
    when the log does not say, or the others disagree."""
    own = getattr(log, "own", None)
    if not own:
        # A log opened read-only does not know whose it is: the first event's origin is (a log
        # starts with its own events; peers are imported after).
        first = next(iter(log.rows(limit=1)), None)
        own = first.origin if first is not None else None

    def mine() -> Consensus | None:
        found = recorded_consensuses(log, origin=own) if own else {}
        return list(found.values())[-1] if found else None

    def theirs() -> Consensus | None:
        latest: dict[str, Consensus] = {}
        for origin in log.origins():
            if origin == own:
                continue
            found = recorded_consensuses(log, origin=origin)
            if found:
                latest[origin] = list(found.values())[-1]
        return next(iter(latest.values())) if len({c.digest for c in latest.values()}) == 1 else None

    first, second = (theirs, mine) if prefer_peers else (mine, theirs)
    return first() or second()
