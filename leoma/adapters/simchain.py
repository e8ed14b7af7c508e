"""A simulated subtensor chain behind the bittensor SDK's `Substrate` seam.

The real `bittensor.Client` runs on top of `SimSubstrate`; only the transport is simulated.
State is an append-only journal of JSON lines at a path, shared by every process that opens
it: each call takes an exclusive `flock`, replays the lines it has not seen, answers, and (for a
write) appends one line. An owner command, a miner command and several validators therefore see
one chain.

Journal lines (`op`):

    genesis     genesis time, block time, clock mode, seed, netuid, tempo, owner, parameters
    register    a hotkey takes the next uid (with its coldkey, stake and validator permit)
    param       a subnet parameter changes (rate limit, version key, commit-reveal, ...)
    step        the head advances by `n` blocks (tests, or `advance_to`)
    extrinsic   an accepted extrinsic: signer, module, function, params, inclusion block

Time: in `realtime` mode the head is `(now - genesis_time) / block_time` plus the steps; in
`manual` mode only steps move it, and each extrinsic seals one block of its own. State at block
N is the journal lines with block <= N applied in order, with timelocked commitments revealed at
the start of their reveal block. Block hashes are sha256(seed || height).

Timelocks: drand cannot be simulated offline (nobody but the beacon can sign a round), so the
simulated chain runs its own beacon whose round numbers are block heights. `SimSubstrate.seal`
produces a `TimelockEncrypted` payload the simulated chain can open at that block; a payload
sealed to real drand stays sealed here.

Commit-reveal weights (`commit_reveal=True`, the `CommitRevealWeightsEnabled` hyperparameter):
the SDK's `SetWeights` sends `commit_timelocked_mechanism_weights` with a quicknet reveal round;
inside `SimSubstrate.sealing()` its payload is sealed to this chain's beacon
(`leoma.adapters.beacon`). The chain checks the rate limit (`CommittingWeightsTooFast`; the commit
bumps `LastUpdate`), the version (`IncorrectCommitRevealVersion`) and the unrevealed-commit cap
(`TooManyUnrevealedCommits`), keeps the commit in `TimelockedWeightCommits` under its epoch, and
reveals it itself at the first block of epoch `commit epoch + RevealPeriodEpochs` that has the
round's pulse. At the reveal the weights are checked as `set_weights` checks them (without the
rate limit) and a failure is dropped silently, as on the real chain; a reveal that lands stamps
`LastUpdate` with the reveal block. A plain `set_weights` on such a subnet is refused
(`CommitRevealEnabled`).
"""

from __future__ import annotations

import asyncio
import copy
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leoma.adapters import beacon
from leoma.adapters.chain import Backend, register_scheme
from leoma.errors import ChainError, ConfigError

U16_MAX = 65535
SEAL_MAGIC = b"LEOMASIM1"
DEFAULT_PARAMS: dict[str, Any] = {
    "weights_rate_limit": 100,
    "weights_version_key": 0,
    "min_allowed_weights": 1,
    "max_weights_limit": U16_MAX,
    "commit_reveal": False,
    "reveal_period_epochs": 1,
    "commitments_max_space": 3100,
}
COMMIT_REVEAL_VERSION = 4
MAX_UNREVEALED_COMMITS = 10
# pallets/commitments (subtensor): `set_commitment` is `Pays::No` and the runtime's deposits are
# zero; at most `MaxCommitFields` = 3 fields, a `Raw` field holds at most 128 bytes; each commit
# uses max(100, sum of its fields' bytes) of `MaxSpace` (default 3100) per (netuid, hotkey) and
# subnet epoch, else `SpaceLimitExceeded`; only a hotkey registered on the netuid may commit.
MAX_COMMIT_FIELDS = 3
MAX_RAW_BYTES = 128
MIN_USED_SPACE = 100


def _jsonable(value: Any) -> Any:
    """Call params as JSON: bytes become 0x-hex, tuples lists (the decoded chain form)."""
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        return bytes.fromhex(value[2:])
    if isinstance(value, (list, tuple)):
        return bytes(int(b) for b in value)
    return str(value).encode()


def _compact_len(n: int) -> bytes:
    """SCALE compact length prefix (RevealedCommitments stores the payload SCALE-encoded)."""
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    return ((n << 2) | 2).to_bytes(4, "little")


def _keystream(seed: bytes, reveal_block: int, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + reveal_block.to_bytes(8, "little") + counter.to_bytes(4, "little")).digest()
        counter += 1
    return out[:length]


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, key))


class _Refused(Exception):
    """An extrinsic the simulated pallets reject; `args[0]` is the chain's error name."""


@dataclass
class _State:
    """Chain state at one block: what the pallets hold."""

    netuid: int
    tempo: int
    owner_hotkey: str
    owner_coldkey: str
    params: dict[str, Any]
    seed: bytes
    block: int = 0
    hotkeys: list[str] = field(default_factory=list)
    coldkeys: list[str] = field(default_factory=list)
    stakes: list[int] = field(default_factory=list)
    permits: list[bool] = field(default_factory=list)
    registered_at: list[int] = field(default_factory=list)
    last_update: list[int] = field(default_factory=list)
    commitment_of: dict[str, dict] = field(default_factory=dict)
    used_space: dict[str, tuple[int, int]] = field(default_factory=dict)
    """`UsedSpaceOf`: hotkey -> (subnet epoch of the window, bytes used in it)."""
    revealed: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    pending: list[tuple[int, int, str, int, bytes | None]] = field(default_factory=list)
    weights: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    weight_commits: list[dict] = field(default_factory=list)
    """Pending timelocked weight commits: epoch, signer, commit_block, commit, reveal_round, reveal_block."""
    nonces: dict[str, int] = field(default_factory=dict)
    genesis_time: float = 0.0
    start_block: int = 0
    block_time: float = 12.0

    def uid(self, hotkey: str) -> int | None:
        try:
            return self.hotkeys.index(hotkey)
        except ValueError:
            return None

    # -- timelock reveals (the chain's on_initialize of each block)
    def reveal_until(self, block: int) -> None:
        self._reveal_weights_until(block)
        due = sorted(p for p in self.pending if p[0] <= block)
        self.pending = [p for p in self.pending if p[0] > block]
        for reveal_block, _seq, hotkey, commit_block, plaintext in due:
            if plaintext is None:  # sealed to a beacon this chain cannot open
                continue
            entry = ("0x" + (_compact_len(len(plaintext)) + plaintext).hex(), reveal_block)
            self.revealed.setdefault(hotkey, []).append(entry)
            current = self.commitment_of.get(hotkey)
            still_sealed = any(p[2] == hotkey and p[3] == commit_block for p in self.pending)
            if current is not None and current["block"] == commit_block and not still_sealed:
                del self.commitment_of[hotkey]  # fully revealed: the chain drops the entry

    # -- pallets
    def apply(self, entry: dict) -> None:
        """Apply one journal line (already accepted, so failures here are bugs)."""
        op = entry["op"]
        if op == "register":
            hk = entry["hotkey"]
            if hk in self.hotkeys:
                raise _Refused("HotKeyAlreadyRegisteredInSubNet")
            self.hotkeys.append(hk)
            self.coldkeys.append(entry["coldkey"])
            self.stakes.append(int(entry.get("stake", 0)))
            self.permits.append(bool(entry.get("validator_permit", False)))
            self.registered_at.append(int(entry["block"]))
            self.last_update.append(0)
        elif op == "param":
            self.params[entry["name"]] = entry["value"]
        elif op == "extrinsic":
            handler = _HANDLERS.get((entry["module"], entry["function"]))
            if handler is None:
                raise _Refused("CallUnavailable")
            handler(self, entry["signer"], int(entry["block"]), int(entry.get("seq", 0)), entry["params"])
            self.nonces[entry["signer"]] = self.nonces.get(entry["signer"], 0) + 1

    def _check_netuid(self, netuid: Any) -> None:
        if int(netuid) != self.netuid:
            raise _Refused("SubNetworkDoesNotExist")

    def set_commitment(self, signer: str, block: int, seq: int, params: dict) -> None:
        self._check_netuid(params["netuid"])
        if signer not in self.hotkeys:
            raise _Refused("AccountNotAllowedCommit")
        fields = list((params.get("info") or {}).get("fields") or [])
        if fields and isinstance(fields[0], list):  # the SDK's legacy double-wrapped shape
            fields = [f for group in fields for f in group]
        if len(fields) > MAX_COMMIT_FIELDS:
            raise _Refused("TooManyFieldsInCommitmentInfo")
        stored: list[dict[str, Any]] = []
        space = 0
        for f in fields:
            if isinstance(f, dict) and "TimelockEncrypted" in f:
                tle = f["TimelockEncrypted"]
                reveal_round = int(tle["reveal_round"])
                self.pending.append((reveal_round, seq, signer, block, _unseal(self.seed, tle["encrypted"], reveal_round)))
                stored.append({"TimelockEncrypted": {"encrypted": tle["encrypted"], "reveal_round": reveal_round}})
                space += len(_as_bytes(tle["encrypted"]))
            elif isinstance(f, dict) and len(f) == 1:
                variant, value = next(iter(f.items()))
                if variant.startswith("Raw") and len(_as_bytes(value)) != int(variant[3:] or -1):
                    raise _Refused("BadEncoding")  # RawN must carry exactly N bytes
                if variant.startswith("Raw"):
                    if int(variant[3:]) > MAX_RAW_BYTES:
                        raise _Refused("BadEncoding")  # Raw is a BoundedVec<u8, 128>
                    space += len(_as_bytes(value))
                elif variant in ("Sha256", "BlakeTwo256", "Keccak256", "ShaThree256"):
                    space += 32
                stored.append({variant: "0x" + _as_bytes(value).hex() if variant.startswith("Raw") else value})
            else:
                stored.append(f)
        required = max(MIN_USED_SPACE, space)
        epoch = self.epoch_index(block)
        window, used = self.used_space.get(signer, (epoch, 0))
        if window != epoch:
            used = 0
        if used + required > int(self.params.get("commitments_max_space", 3100)):
            raise _Refused("SpaceLimitExceeded")
        self.used_space[signer] = (epoch, used + required)
        self.commitment_of[signer] = {"block": block, "deposit": 0, "info": {"fields": stored}}

    def _weights_common(self, signer: str, block: int, params: dict, limit_error: str) -> int:
        self._check_netuid(params["netuid"])
        uid = self.uid(signer)
        if uid is None:
            raise _Refused("HotKeyNotRegisteredInSubNet")
        limit = int(self.params["weights_rate_limit"])
        last = self.last_update[uid]
        if limit and last > 0 and block - last < limit:
            raise _Refused(limit_error)
        return uid

    def _check_weights(self, uid: int, dests: list[int], values: list[int], version_key: int) -> None:
        """The checks `set_weights` makes (and a reveal makes again) on one weight vector."""
        required = int(self.params["weights_version_key"])
        if required and version_key < required:
            raise _Refused("IncorrectWeightVersionKey")
        self_weight = dests == [uid]
        if not self_weight and not self.permits[uid]:
            raise _Refused("NeuronNoValidatorPermit")
        if len(dests) != len(values):
            raise _Refused("WeightVecNotEqualSize")
        if len(set(dests)) != len(dests):
            raise _Refused("DuplicateUids")
        if any(d < 0 or d >= len(self.hotkeys) for d in dests):
            raise _Refused("UidVecContainInvalidOne")
        if not self_weight and len(dests) < int(self.params["min_allowed_weights"]):
            raise _Refused("WeightVecLengthIsLow")

    def set_weights(self, signer: str, block: int, seq: int, params: dict) -> None:
        uid = self._weights_common(signer, block, params, "SettingWeightsTooFast")
        if self.params["commit_reveal"]:
            raise _Refused("CommitRevealEnabled")
        dests = [int(d) for d in params["dests"]]
        values = [int(w) for w in params["weights"]]
        self._check_weights(uid, dests, values, int(params.get("version_key", 0)))
        self.weights[uid] = list(zip(dests, values))
        self.last_update[uid] = block

    def epoch_index(self, block: int) -> int:
        """The subnet epoch `block` falls in (epochs run every `tempo + 1` blocks)."""
        return block // max(1, self.tempo + 1)

    def commit_weights(self, signer: str, block: int, seq: int, params: dict) -> None:
        uid = self._weights_common(signer, block, params, "CommittingWeightsTooFast")
        if not self.params["commit_reveal"]:
            raise _Refused("CommitRevealDisabled")
        if int(params.get("commit_reveal_version", COMMIT_REVEAL_VERSION)) != COMMIT_REVEAL_VERSION:
            raise _Refused("IncorrectCommitRevealVersion")
        if sum(1 for c in self.weight_commits if c["signer"] == signer) >= MAX_UNREVEALED_COMMITS:
            raise _Refused("TooManyUnrevealedCommits")
        reveal_round = int(params["reveal_round"])
        epoch = self.epoch_index(block)
        reveal_epoch_start = (epoch + max(1, int(self.params["reveal_period_epochs"]))) * (self.tempo + 1)
        pulse = beacon.first_block_with_pulse(reveal_round, genesis_time=self.genesis_time,
                                              start_block=self.start_block, block_time=self.block_time)
        self.weight_commits.append({"epoch": epoch, "signer": signer, "commit_block": block,
                                    "commit": "0x" + _as_bytes(params["commit"]).hex(), "reveal_round": reveal_round,
                                    "reveal_block": max(reveal_epoch_start, pulse), "seq": seq})
        self.last_update[uid] = block

    def _reveal_weights_until(self, block: int) -> None:
        """The chain opening due commits with the beacon's pulse and applying them (silently
        dropping any the weight checks refuse, as `do_set_mechanism_weights` at reveal does)."""
        due = sorted((c for c in self.weight_commits if c["reveal_block"] <= block),
                     key=lambda c: (c["reveal_block"], c["seq"]))
        if not due:
            return
        self.weight_commits = [c for c in self.weight_commits if c["reveal_block"] > block]
        for c in due:
            plain = beacon.unseal(self.seed, _as_bytes(c["commit"]), c["reveal_round"])
            uid = self.uid(c["signer"])
            if plain is None or uid is None:
                continue  # sealed to real drand, or deregistered since
            try:
                payload = beacon.decode_payload(plain)
                if payload.hotkey != _public_key(c["signer"]):
                    continue  # a commit must carry its own signer's hotkey
                self._check_weights(uid, list(payload.uids), list(payload.values), payload.version_key)
            except (_Refused, ValueError):
                continue
            self.weights[uid] = list(zip(payload.uids, payload.values))
            self.last_update[uid] = c["reveal_block"]  # do_set_mechanism_weights stamps the reveal


def _public_key(ss58: str) -> bytes:
    import bittensor_core

    return bytes(bittensor_core.ss58_decode(ss58))


_HANDLERS = {
    ("Commitments", "set_commitment"): _State.set_commitment,
    ("SubtensorModule", "set_mechanism_weights"): _State.set_weights,
    ("SubtensorModule", "set_weights"): _State.set_weights,
    ("SubtensorModule", "commit_timelocked_mechanism_weights"): _State.commit_weights,
}


def _unseal(seed: bytes, encrypted: Any, reveal_round: int) -> bytes | None:
    data = _as_bytes(encrypted)
    if not data.startswith(SEAL_MAGIC):
        return None
    body = data[len(SEAL_MAGIC):]
    return _xor(body, _keystream(seed, reveal_round, len(body)))


class SimChain:
    """The journal: create a devnet chain, register neurons, move the clock, read state."""

    def __init__(self, path: Path, genesis: dict) -> None:
        self.path = Path(path)
        self.genesis = genesis
        self.seed = bytes.fromhex(genesis["seed"])
        self.netuid = int(genesis["netuid"])
        self.block_time = float(genesis["block_time"])
        self.manual = genesis["clock"] == "manual"
        self._lines: list[dict] = []
        self._offset = 0  # bytes of the journal already read

    # -- construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        owner: str,
        owner_coldkey: str | None = None,
        block_time: float = 12.0,
        netuid: int = 99,
        tempo: int = 360,
        clock: str = "realtime",
        start_block: int = 1000,
        seed: str | None = None,
        **params: Any,
    ) -> SimChain:
        """Write a new journal at `path` (refuses to overwrite one) and return it opened."""
        unknown = set(params) - set(DEFAULT_PARAMS)
        if unknown:
            raise ConfigError(f"unknown simulated chain parameter(s) {sorted(unknown)}: use {sorted(DEFAULT_PARAMS)}")
        if clock not in ("realtime", "manual"):
            raise ConfigError(f"clock must be 'realtime' or 'manual', not {clock!r}")
        if block_time <= 0:
            raise ConfigError("block_time must be positive")
        genesis = {
            "op": "genesis",
            "v": 1,
            "genesis_time": time.time(),
            "block_time": block_time,
            "clock": clock,
            "start_block": int(start_block),
            "seed": seed or secrets.token_hex(16),
            "netuid": int(netuid),
            "tempo": int(tempo),
            "owner_hotkey": owner,
            "owner_coldkey": owner_coldkey or owner,
            "params": {**DEFAULT_PARAMS, **params},
        }
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(p, "x", encoding="utf-8") as fh:
                fh.write(json.dumps(genesis, sort_keys=True) + "\n")
        except FileExistsError:
            raise ConfigError(f"a simulated chain already exists at {p}: open it with SimChain.open") from None
        return cls.open(p)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SimChain:
        """Open an existing journal."""
        p = Path(path)
        try:
            with open(p, encoding="utf-8") as fh:
                first = fh.readline()
            genesis = json.loads(first)
        except FileNotFoundError:
            raise ConfigError(f"no simulated chain at {p}: create one with SimChain.create or `leoma devnet`") from None
        except ValueError:
            raise ConfigError(f"{p} is not a simulated chain journal (bad genesis line)") from None
        if genesis.get("op") != "genesis":
            raise ConfigError(f"{p} is not a simulated chain journal (no genesis line)")
        return cls(p, genesis)

    # -- journal
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._catch_up()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        # a line is complete only once its newline is written
        end = data.rfind(b"\n") + 1
        for raw in data[:end].splitlines():
            if raw.strip():
                self._lines.append(json.loads(raw))
        self._offset += end

    def _append(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._catch_up()

    def _head_unlocked(self) -> int:
        steps = sum(int(e.get("n", 0)) for e in self._lines if e["op"] == "step")
        base = int(self.genesis["start_block"]) + steps
        if self.manual:
            return base + sum(1 for e in self._lines if e["op"] == "extrinsic")
        return base + int((time.time() - float(self.genesis["genesis_time"])) // self.block_time)

    def refresh(self) -> None:
        """Read journal lines other processes appended."""
        with self._locked():
            pass

    def head(self) -> int:
        """The current block number."""
        with self._locked():
            return self._head_unlocked()

    def block_hash(self, block: int) -> str:
        """Deterministic hash of a height: sha256(seed || height)."""
        return "0x" + hashlib.sha256(self.seed + int(block).to_bytes(8, "little")).hexdigest()

    def timestamp_ms(self, block: int) -> int:
        return int((float(self.genesis["genesis_time"]) + (block - int(self.genesis["start_block"])) * self.block_time) * 1000)

    def _last_block(self) -> int:
        return max((int(e["block"]) for e in self._lines if "block" in e), default=0)

    def register(self, hotkey: str, coldkey: str | None = None, *, stake: int = 0, validator_permit: bool = False) -> int:
        """Register `hotkey` on the subnet (next uid); returns the uid."""
        with self._locked():
            state = self._state_unlocked(None)
            if hotkey in state.hotkeys:
                raise ChainError(f"hotkey {hotkey} is already registered on netuid {self.netuid}")
            block = max(self._head_unlocked(), self._last_block())
            self._append({"op": "register", "block": block, "hotkey": hotkey, "coldkey": coldkey or hotkey,
                          "stake": int(stake), "validator_permit": bool(validator_permit)})
            return len(state.hotkeys)

    def set_param(self, name: str, value: Any) -> None:
        """Change a subnet parameter (as the owner or sudo would), effective from the head."""
        if name not in DEFAULT_PARAMS:
            raise ConfigError(f"unknown simulated chain parameter {name!r}: use {sorted(DEFAULT_PARAMS)}")
        with self._locked():
            block = max(self._head_unlocked(), self._last_block())
            self._append({"op": "param", "block": block, "name": name, "value": value})

    def step(self, n: int = 1) -> int:
        """Advance the head by `n` blocks; returns the new head."""
        with self._locked():
            if n > 0:
                self._append({"op": "step", "n": int(n)})
            return self._head_unlocked()

    def advance_to(self, block: int) -> int:
        """Advance the head to at least `block`; returns the new head."""
        with self._locked():
            gap = int(block) - self._head_unlocked()
            if gap > 0:
                self._append({"op": "step", "n": gap})
            return self._head_unlocked()

    # -- state
    def _state_unlocked(self, upto: int | None) -> _State:
        g = self.genesis
        state = _State(netuid=self.netuid, tempo=int(g["tempo"]), owner_hotkey=g["owner_hotkey"],
                       owner_coldkey=g["owner_coldkey"], params=dict(g["params"]), seed=self.seed,
                       genesis_time=float(g["genesis_time"]), start_block=int(g["start_block"]),
                       block_time=self.block_time)
        for entry in self._lines:
            if "block" not in entry:
                continue
            b = int(entry["block"])
            if upto is not None and b > upto:
                break  # the journal is ordered by block
            state.reveal_until(b)
            state.apply(entry)
        final = self._head_unlocked() if upto is None else upto
        state.reveal_until(final)
        state.block = final
        return state

    def state(self, block: int | None = None) -> _State:
        """State as of `block` (default: the head)."""
        with self._locked():
            return self._state_unlocked(self._head_unlocked() if block is None else block)

    def seal(self, plaintext: bytes, reveal_block: int) -> bytes:
        """Seal bytes to this chain's beacon so it reveals them at `reveal_block`."""
        return SEAL_MAGIC + _xor(plaintext, _keystream(self.seed, reveal_block, len(plaintext)))

    def submit_extrinsic(self, signer: str, module: str, function: str, params: dict) -> tuple[int, int, str | None]:
        """Validate and (if accepted) journal one extrinsic. Returns (block, index, error name)."""
        params = _jsonable(params)
        with self._locked():
            head = self._head_unlocked()
            block = max(head + 1, self._last_block())
            state = self._state_unlocked(None)
            state.reveal_until(block)
            index = sum(1 for e in self._lines if e["op"] == "extrinsic" and int(e["block"]) == block)
            entry = {"op": "extrinsic", "block": block, "seq": len(self._lines), "signer": signer,
                     "module": module, "function": function, "params": params}
            trial = copy.deepcopy(state)
            try:
                trial.apply(entry)
            except _Refused as refused:
                return block, index, str(refused.args[0])
            except (KeyError, TypeError, ValueError) as exc:
                return block, index, f"BadCallArguments: {exc}"
            self._append(entry)
            return block, index, None


class SimSubstrate:
    """Implements the SDK's `Substrate` protocol over a `SimChain` journal."""

    def __init__(self, chain: SimChain) -> None:
        self.chain = chain
        self.token_symbols: dict[int, str] = {}
        self._hash_to_block: dict[str, int] = {}
        self._cache: tuple[int, int, _State] | None = None

    def balance(self, rao: int, netuid: int = 0) -> Any:
        from bittensor.balance import Balance

        return Balance(int(rao), netuid, self.token_symbols.get(netuid) if netuid else None)

    async def connect(self) -> None:
        self.chain.refresh()

    async def close(self) -> None:
        return None

    # -- blocks
    async def block_hash(self, block: int | None = None) -> str:
        n = self.chain.head() if block is None else int(block)
        h = self.chain.block_hash(n)
        self._hash_to_block[h] = n
        return h

    async def block_number(self) -> int:
        return self.chain.head()

    async def finalized_block_number(self) -> int:
        return self.chain.head()

    async def block_time(self) -> float:
        return self.chain.block_time

    async def spec_version(self) -> int:
        return 400

    async def get_block(self, block_number: int | None = None, block_hash: str | None = None) -> dict | None:
        n = self._block_of(block_hash) if block_hash else (self.chain.head() if block_number is None else block_number)
        return {"header": {"number": n, "hash": self.chain.block_hash(n), "parentHash": self.chain.block_hash(n - 1)},
                "extrinsics": []}

    def _block_of(self, block_hash: str | None) -> int:
        if block_hash is None:
            return self.chain.head()
        if block_hash not in self._hash_to_block:
            raise ChainError(f"unknown block hash {block_hash} on the simulated chain")
        return self._hash_to_block[block_hash]

    def _state(self, block_hash: str | None) -> _State:
        block = self._block_of(block_hash)
        self.chain.refresh()
        key = (block, len(self.chain._lines))
        if self._cache is None or self._cache[:2] != key:
            self._cache = (*key, self.chain.state(block))
        return self._cache[2]

    # -- storage
    async def query(self, module: str, storage_function: str, params: list | None = None,
                    block_hash: str | None = None) -> Any:
        if (module, storage_function) == ("Timestamp", "Now"):
            return self.chain.timestamp_ms(self._block_of(block_hash))
        return _read(self._state(block_hash), module, storage_function, list(params or []))

    async def map_has_entries(self, module: str, storage_function: str, params: list,
                              block_hash: str | None = None) -> bool:
        return bool(await self.query_map(module, storage_function, params, block_hash))

    async def query_map(self, module: str, storage_function: str, params: list | None = None,
                        block_hash: str | None = None) -> list[tuple[Any, Any]]:
        return _read_map(self._state(block_hash), module, storage_function, list(params or []))

    async def query_batch(self, module: str, storage_function: str, param_sets: list[list],
                          block_hash: str | None = None) -> list[Any]:
        return [await self.query(module, storage_function, p, block_hash) for p in param_sets]

    async def runtime_call(self, api: str, method: str, params: list, block_hash: str | None = None) -> Any:
        if (api, method) == ("SubnetInfoRuntimeApi", "get_metagraph"):
            return _metagraph(self._state(block_hash), int(params[0]))
        return None

    async def constant(self, module: str, name: str) -> Any:
        if (module, name) == ("Aura", "SlotDuration"):
            return int(self.chain.block_time * 1000)
        return None

    async def decode_scale(self, type_string: str, data: Any) -> Any:
        raise ChainError("the simulated chain has no SCALE codec")

    async def blocks(self, *, finalized: bool = False) -> AsyncIterator[dict]:
        seen = self.chain.head()
        while True:
            head = self.chain.head()
            while seen < head:
                seen += 1
                yield {"header": {"number": seen, "hash": self.chain.block_hash(seen),
                                  "parentHash": self.chain.block_hash(seen - 1)}}
            await asyncio.sleep(min(0.05, self.chain.block_time / 4))

    async def events(self, block_hash: str | None = None) -> list[dict]:
        return []

    # -- calls
    async def compose(self, call: Any) -> Any:
        return call

    async def estimate_fee(self, call: Any, keypair: Any) -> Any:
        from bittensor.balance import Balance

        return Balance.from_rao(0)

    async def estimate_weight(self, call: Any, keypair: Any) -> dict:
        return {"ref_time": 0, "proof_size": 0}

    async def account_next_index(self, address: str) -> int:
        return self._state(None).nonces.get(address, 0)

    async def mev_next_key(self) -> bytes | None:
        return None

    async def sign_extrinsic(self, call: Any, keypair: Any, *, nonce: int, period: int) -> tuple[bytes, str]:
        payload = json.dumps([call[0], call[1], _jsonable(call[2]), nonce], sort_keys=True).encode()
        sig = bytes(keypair.sign(payload))
        return payload + sig, "0x" + hashlib.sha256(payload + sig).hexdigest()

    async def find_extrinsic(self, extrinsic_hash: str, block_hash: str) -> Any:
        return None

    async def prepare(self, call: Any, **kw: Any) -> Any:
        raise ChainError("the simulated chain does not support out-of-process signing")

    async def submit_signature(self, unsigned: Any, signature: Any, **kw: Any) -> Any:
        raise ChainError("the simulated chain does not support out-of-process signing")

    async def submit_signed(self, extrinsic: Any, keypair: Any, **kw: Any) -> Any:
        raise ChainError("the simulated chain does not support pre-signed extrinsics")

    def multisig_account(self, signatories: Any, threshold: Any) -> Any:
        raise ChainError("the simulated chain does not support multisig")

    async def submit_multisig(self, call: Any, keypair: Any, multisig_account: Any, **kw: Any) -> Any:
        raise ChainError("the simulated chain does not support multisig")

    async def submit(self, call: Any, keypair: Any, *, nonce: int | None = None, period: int | None = None,
                     wait_for_inclusion: bool = True, wait_for_finalization: bool = True) -> Any:
        from bittensor import sp_core
        from bittensor.result import ChainError as SdkChainError, ExtrinsicResult

        module, function, params = call[0], call[1], call[2]
        signer = keypair.ss58_address
        # sign for real so a keypair that cannot sign (public-only) fails as it would on a node
        payload = json.dumps([module, function, _jsonable(params)], sort_keys=True).encode()
        signature = bytes(keypair.sign(payload))
        if not sp_core.verify(payload, signature, signer):
            err = SdkChainError("bad signature", name="BadProof")
            return ExtrinsicResult(success=False, message=str(err), error=err)
        block, index, error = await asyncio.to_thread(self.chain.submit_extrinsic, signer, module, function, dict(params))
        block_hash = self.chain.block_hash(block)
        self._hash_to_block[block_hash] = block
        if error is not None:
            err = SdkChainError(f"{module}.{function} failed: {error}", name=error.split(":")[0])
            return ExtrinsicResult(success=False, message=str(err), error=err, block_hash=block_hash)
        if wait_for_inclusion or wait_for_finalization:
            while self.chain.head() < block:  # realtime clock: wait for the including block
                await asyncio.sleep(min(0.05, self.chain.block_time / 4))
        events = [{"event": {"module_id": "System", "event_id": "ExtrinsicSuccess", "attributes": {}}}]
        return ExtrinsicResult(success=True, message="Success", block_hash=block_hash,
                               extrinsic_id=f"{block}-{index:04d}", events=events)

    # -- simulated beacon
    def sealing(self) -> Any:
        """Context: weight commits the SDK builds meanwhile are sealed to this chain's beacon."""
        return beacon.sealing(self.chain.seed)

    def seal(self, plaintext: bytes, blocks_until_reveal: int) -> tuple[bytes, int]:
        """Seal to the simulated beacon; returns (encrypted, reveal_round = reveal block)."""
        reveal = self.chain.head() + 1 + max(0, int(blocks_until_reveal))
        return self.chain.seal(plaintext, reveal), reveal


# -- storage layout --------------------------------------------------------------------------


def _read(s: _State, module: str, item: str, params: list) -> Any:
    p = s.params
    if module == "SubtensorModule":
        if item == "Uids":
            return s.uid(params[1]) if int(params[0]) == s.netuid else None
        if item in ("Keys",):
            uid = int(params[1])
            return s.hotkeys[uid] if int(params[0]) == s.netuid and uid < len(s.hotkeys) else None
        if item == "Owner":
            owner_uid = s.uid(params[0])
            return s.coldkeys[owner_uid] if owner_uid is not None else None
        if item == "TokenSymbol":
            return None
        if item == "Weights":  # double map (netuid, uid) -> [(dest, u16)]
            row = s.weights.get(int(params[1])) if int(params[0]) == s.netuid else None
            return [list(x) for x in row] if row else []
        if params and int(params[0]) != s.netuid:
            return None
        simple: dict[str, Any] = {
            "CommitRevealWeightsEnabled": bool(p["commit_reveal"]),
            "WeightsSetRateLimit": int(p["weights_rate_limit"]),
            "WeightsVersionKey": int(p["weights_version_key"]),
            "MinAllowedWeights": int(p["min_allowed_weights"]),
            "MaxWeightsLimit": int(p["max_weights_limit"]),
            "RevealPeriodEpochs": int(p["reveal_period_epochs"]),
            "SubnetEpochConsensus": "Yuma",
            "Tempo": s.tempo,
            "LastUpdate": list(s.last_update),
            "ValidatorPermit": list(s.permits),
            "SubnetOwnerHotkey": s.owner_hotkey,
            "SubnetOwner": s.owner_coldkey,
            "SubnetworkN": len(s.hotkeys),
            "NetworksAdded": True,
            "LastEpochBlock": _last_epoch(s),
            "PendingEpochAt": 0,
            "SubnetEpochIndex": _last_epoch(s) // max(1, s.tempo + 1),
            "BlocksSinceLastStep": s.block - _last_epoch(s),
        }
        return simple.get(item)
    if module == "Commitments":
        if int(params[0]) != s.netuid:
            return None
        if item == "CommitmentOf":
            return copy.deepcopy(s.commitment_of.get(params[1]))
        if item == "RevealedCommitments":
            entries = s.revealed.get(params[1])
            return [list(e) for e in entries] if entries else None
    if module == "System" and item == "Account":
        return {"nonce": s.nonces.get(params[0], 0), "data": {"free": 10**15, "reserved": 0, "frozen": 0}}
    return None


def _read_map(s: _State, module: str, item: str, params: list) -> list[tuple[Any, Any]]:
    if params and int(params[0]) != s.netuid:
        return []
    if module == "Commitments" and item == "CommitmentOf":
        return [(hk, copy.deepcopy(v)) for hk, v in s.commitment_of.items()]
    if module == "Commitments" and item == "RevealedCommitments":
        return [(hk, [list(e) for e in v]) for hk, v in s.revealed.items()]
    if module == "SubtensorModule" and item == "Uids":
        return [(hk, uid) for uid, hk in enumerate(s.hotkeys)]
    if module == "SubtensorModule" and item == "Weights":
        return [(uid, [list(x) for x in row]) for uid, row in sorted(s.weights.items())]
    if module == "SubtensorModule" and item == "TimelockedWeightCommits":
        by_epoch: dict[int, list[list]] = {}
        for c in s.weight_commits:
            by_epoch.setdefault(c["epoch"], []).append([c["signer"], c["commit_block"], c["commit"], c["reveal_round"]])
        return sorted(by_epoch.items())
    return []


def _last_epoch(s: _State) -> int:
    period = s.tempo + 1
    return (s.block // period) * period


def _metagraph(s: _State, netuid: int) -> dict | None:
    if netuid != s.netuid:
        return None
    n = len(s.hotkeys)
    last_epoch = _last_epoch(s)
    zeros = [0] * n
    return {
        "netuid": netuid, "name": list(b"leoma"), "symbol": list("L".encode()),
        "block": s.block, "tempo": s.tempo, "last_step": last_epoch, "blocks_since_last_step": s.block - last_epoch,
        "owner_hotkey": s.owner_hotkey, "owner_coldkey": s.owner_coldkey, "network_registered_at": 0,
        "num_uids": n, "max_uids": 256, "hotkeys": list(s.hotkeys), "coldkeys": list(s.coldkeys),
        "active": [True] * n, "validator_permit": list(s.permits), "last_update": list(s.last_update),
        "block_at_registration": list(s.registered_at), "rank": zeros, "trust": zeros, "consensus": zeros,
        "incentives": zeros, "dividends": zeros, "pruning_score": zeros, "emission": zeros,
        "alpha_stake": list(s.stakes), "tao_stake": zeros, "total_stake": list(s.stakes),
        "axons": [{"ip": 0, "port": 0, "ip_type": 4} for _ in range(n)], "identities": [None] * n,
        "tao_in": 0, "alpha_in": 0, "moving_price": {"bits": 0}, "identity": None,
    }


def open_backend(path: str) -> Backend:
    """The `sim:PATH` network: a `SimSubstrate` over the journal at PATH, sealing to its own beacon."""
    substrate = SimSubstrate(SimChain.open(path))
    return Backend(substrate=substrate, seal=substrate.seal, sealing=substrate.sealing)


# The chain adapter knows nothing of the devnet: the simulated chain plugs itself in through the seam.
register_scheme("sim", open_backend)
