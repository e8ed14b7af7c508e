"""The simulated drand beacon: commit-reveal weights the simulated chain can open.

On a subnet with `CommitRevealWeightsEnabled`, the SDK's `bt.SetWeights` timelock-encrypts the
chain's `WeightsTlockPayload` (hotkey, uids, u16 values, version key) to drand quicknet with
`bittensor_core.get_encrypted_commit_v2` and sends `commit_timelocked_mechanism_weights`; the
chain opens it with the beacon's signature of the reveal round and applies it. Quicknet's public
key is compiled into the extension and only drand can sign a round, so a chain without drand —
the simulated one — could never open that ciphertext (the AES key is sealed under the round's
identity, not derivable from the bytes).

So the simulated chain runs its own beacon, as it does for timelocked commitments: while a
weights call for a simulated chain is being built (`sealing(seed)`), the one function that
encrypts is wrapped. The real `get_encrypted_commit_v2` still runs — the SDK's own reveal-round
arithmetic over the chain's epoch schedule picks the round — and then the same payload, SCALE
encoded as the chain does, is sealed to the simulated beacon at that round. Everything else
the SDK does (preflight, rate limit, conforming and quantising the weights, the extrinsic and
its arguments) is the SDK's code, unchanged. Outside `sealing(...)` the real function runs
alone, so a process talking to a real chain is unaffected.

Round times are quicknet's (`genesis + 3 s x (round - 1)`); the simulated chain has the pulse
of round R at the first block whose timestamp reaches it.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

WEIGHTS_MAGIC = b"LEOMASIMW1"
QUICKNET_GENESIS = 1_692_803_367
QUICKNET_PERIOD = 3

_SEED: contextvars.ContextVar[bytes | None] = contextvars.ContextVar("leoma_sim_beacon", default=None)
_install_lock = threading.Lock()


class WeightsPayload(msgspec.Struct, frozen=True, kw_only=True):
    """The chain's `WeightsTlockPayload`: what a timelocked weights commit carries."""

    hotkey: bytes
    uids: tuple[int, ...]
    values: tuple[int, ...]
    version_key: int


def round_time(reveal_round: int) -> float:
    """Unix time at which quicknet publishes `reveal_round`."""
    return QUICKNET_GENESIS + (int(reveal_round) - 1) * QUICKNET_PERIOD


def first_block_with_pulse(reveal_round: int, *, genesis_time: float, start_block: int, block_time: float) -> int:
    """The first block of a simulated chain whose timestamp reaches `reveal_round`."""
    return int(start_block) + max(0, math.ceil((round_time(reveal_round) - genesis_time) / block_time))


# -- SCALE (just the shapes of WeightsTlockPayload) --------------------------------------------


def _compact(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    return ((n << 2) | 2).to_bytes(4, "little")


def _read_compact(data: bytes, at: int) -> tuple[int, int]:
    mode = data[at] & 3
    if mode == 0:
        return data[at] >> 2, at + 1
    if mode == 1:
        return int.from_bytes(data[at:at + 2], "little") >> 2, at + 2
    if mode == 2:
        return int.from_bytes(data[at:at + 4], "little") >> 2, at + 4
    raise ValueError("big compact integers do not occur in a weights payload")


def encode_payload(p: WeightsPayload) -> bytes:
    """SCALE bytes of `p` (Vec<u8>, Vec<u16>, Vec<u16>, u64)."""
    out = _compact(len(p.hotkey)) + p.hotkey
    for vec in (p.uids, p.values):
        out += _compact(len(vec)) + b"".join(int(v).to_bytes(2, "little") for v in vec)
    return out + int(p.version_key).to_bytes(8, "little")


def decode_payload(data: bytes) -> WeightsPayload:
    """Inverse of `encode_payload`; raises ValueError on malformed bytes."""
    n, at = _read_compact(data, 0)
    hotkey, at = data[at:at + n], at + n
    vecs = []
    for _ in range(2):
        n, at = _read_compact(data, at)
        vecs.append(tuple(int.from_bytes(data[at + 2 * i:at + 2 * i + 2], "little") for i in range(n)))
        at += 2 * n
    if len(data) != at + 8 or len(hotkey) != 32:
        raise ValueError("not a weights payload")
    return WeightsPayload(hotkey=hotkey, uids=vecs[0], values=vecs[1], version_key=int.from_bytes(data[at:], "little"))


# -- the seal ----------------------------------------------------------------------------------


def _keystream(seed: bytes, reveal_round: int, length: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(b"weights" + seed + reveal_round.to_bytes(8, "little") + counter.to_bytes(4, "little")).digest()
        counter += 1
    return out[:length]


def seal(seed: bytes, payload: bytes, reveal_round: int) -> bytes:
    """Seal `payload` to the simulated beacon of chain `seed` at `reveal_round`."""
    body = bytes(a ^ b for a, b in zip(payload, _keystream(seed, reveal_round, len(payload))))
    return WEIGHTS_MAGIC + body


def unseal(seed: bytes, commit: bytes, reveal_round: int) -> bytes | None:
    """The payload of a commit sealed by `seal`, or None (sealed to real drand: unopenable here)."""
    if not commit.startswith(WEIGHTS_MAGIC):
        return None
    body = commit[len(WEIGHTS_MAGIC):]
    return bytes(a ^ b for a, b in zip(body, _keystream(seed, reveal_round, len(body))))


# -- standing in for the one encrypting function while a simulated chain builds a call ----------


class _BeaconCore:
    """`bittensor_core` as the SDK's weights intent sees it: every name the real one, but
    `get_encrypted_commit_v2` seals to the simulated beacon inside `sealing(...)`."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_encrypted_commit_v2(self, **kw: Any) -> tuple[bytes, int]:
        real_commit, reveal_round = self._real.get_encrypted_commit_v2(**kw)
        seed = _SEED.get()
        if seed is None:
            return real_commit, reveal_round
        payload = WeightsPayload(hotkey=bytes(kw["hotkey"]), uids=tuple(int(u) for u in kw["uids"]),
                                 values=tuple(int(v) for v in kw["weights"]), version_key=int(kw["version_key"]))
        return seal(seed, encode_payload(payload), int(reveal_round)), int(reveal_round)


def _install() -> None:
    import bittensor.intents.weights as sdk_weights

    with _install_lock:
        if not isinstance(sdk_weights._core, _BeaconCore):
            sdk_weights._core = _BeaconCore(sdk_weights._core)


@contextmanager
def sealing(seed: bytes) -> Iterator[None]:
    """Within this block, weight commits the SDK builds are sealed to chain `seed`'s beacon."""
    _install()
    token = _SEED.set(bytes(seed))
    try:
        yield
    finally:
        _SEED.reset(token)
