"""`Chain`: Leoma's one small async adapter over the bittensor v11 `Client`.

Everything Leoma reads from or writes to the chain goes through here, so the SDK's fast-moving
API is touched in one file. `bittensor` is imported lazily: `import leoma.adapters.chain` is cheap.

Networks: `finney`, `test`, `local`, any `ws://` / `wss://` URL, or `SCHEME:REST` for a scheme an
adapter registered with `register_scheme` (the devnet's simulated chain registers `sim:PATH`), with
the real SDK `Client` on top of the `Substrate` that scheme's factory builds. The chain never
imports who registered a scheme: arrows point from the devnet to the chain, not back.

Errors: a read that cannot be made raises `ChainError`; a transaction the chain (or the SDK's
preflight, which asks the same questions) refuses raises `ChainRefused` carrying the chain's
error name. Success is reported only when the chain accepted the extrinsic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from leoma.adapters import retry as retry_policy
from leoma.errors import ChainError, ChainRefused, ConfigError

log = logging.getLogger("leoma.adapters.chain")
T = TypeVar("T")

NETWORKS = ("finney", "test", "local")


class Metagraph(msgspec.Struct, frozen=True, kw_only=True):
    """The subnet's neurons at one block, by uid. Stakes are integer rao (alpha)."""

    block: int
    netuid: int
    uids: tuple[int, ...]
    hotkeys: tuple[str, ...]
    coldkeys: tuple[str, ...]
    stakes: tuple[int, ...]
    validator_permit: tuple[bool, ...]
    last_update: tuple[int, ...]
    owner_hotkey: str


class CommitmentEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One commitment a hotkey made visible: the block it appeared at and its text."""

    block: int
    text: str


class CommitmentHistory(msgspec.Struct, frozen=True, kw_only=True):
    """Every visible commitment of one hotkey, oldest first (revealed timelocked + plain)."""

    hotkey: str
    entries: tuple[CommitmentEntry, ...]

    @property
    def latest(self) -> CommitmentEntry:
        """The commitment in force (the seed uses the last one)."""
        return self.entries[-1]

    @property
    def commit_block(self) -> int:
        """The latest commitment's block: the miner's seniority for dominance."""
        return self.entries[-1].block

    @property
    def count(self) -> int:
        """How many commitments the chain still holds for this hotkey."""
        return len(self.entries)


class WeightsResult(msgspec.Struct, frozen=True, kw_only=True):
    """What the chain accepted. `committed` means commit-reveal: visible at `reveal_round`."""

    block_hash: str
    extrinsic_id: str
    version_key: int
    committed: bool = False
    reveal_round: int | None = None
    block: int = 0
    """The block the extrinsic was included in (0 if the SDK did not say)."""


class WeightRow(msgspec.Struct, frozen=True, kw_only=True):
    """One validator's weights on chain and its `LastUpdate`, read at one block."""

    block: int
    uid: int
    row: tuple[tuple[int, int], ...]
    """(uid, u16 weight) pairs as the chain holds them."""
    last_update: int


class PendingCommit(msgspec.Struct, frozen=True, kw_only=True):
    """A timelocked weights commit the chain holds and has not revealed yet."""

    epoch: int
    commit_block: int
    reveal_round: int


class _Dropped(Exception):
    """The connection dropped or the deadline passed: worth one reconnect (the message is the final error's)."""

    def __init__(self, message: str, *, connection: BaseException | None = None) -> None:
        super().__init__(message)
        self.connection = connection


def _is_connection_error(exc: BaseException) -> bool:
    from bittensor.result import ConnectionNotReady, RpcConnectionError

    return isinstance(exc, (RpcConnectionError, ConnectionNotReady, ConnectionError, OSError)) or (
        type(exc).__name__ in {"ConnectionClosed", "ConnectionClosedError", "ConnectionClosedOK", "InvalidStatus"}
    )


class Backend(msgspec.Struct, frozen=True, kw_only=True):
    """What a registered network scheme supplies: the SDK `Substrate` and, optionally, its own beacon.

    `seal(plaintext, blocks_until_reveal) -> (encrypted, reveal_round)` seals a timelocked commitment
    and `sealing()` is a context under which weight commits the SDK builds are sealed the same way.
    Without them the chain uses drand through the SDK, as a real network does.
    """

    substrate: Any
    seal: Callable[[bytes, int], tuple[bytes, int]] | None = None
    sealing: Callable[[], contextlib.AbstractContextManager[Any]] | None = None


_SCHEMES: dict[str, Callable[[str], Backend]] = {}


def register_scheme(scheme: str, factory: Callable[[str], Backend]) -> None:
    """Let `Chain("SCHEME:REST")` open `factory(REST)` (e.g. the devnet's `sim:PATH`)."""
    if not scheme.isidentifier() or scheme in ("ws", "wss"):
        raise ConfigError(f"a network scheme is a plain name other than ws/wss, not {scheme!r}")
    _SCHEMES[scheme] = factory


def registered_schemes() -> tuple[str, ...]:
    """The schemes adapters registered (sorted)."""
    return tuple(sorted(_SCHEMES))


def _scheme_of(network: str) -> str | None:
    head, sep, _ = network.partition(":")
    return head if sep and head not in ("ws", "wss") and head.isidentifier() else None


def encode_raw_fields(data: bytes) -> dict[str, Any]:
    """`info` for `Commitments.set_commitment` carrying plain bytes (<= 3 x 128 bytes)."""
    if len(data) > 384:
        raise ConfigError(f"a plain commitment holds at most 384 bytes, not {len(data)}")
    chunks = [data[i : i + 128] for i in range(0, len(data), 128)] or [b""]
    # The flat list is the encoder's canonical shape (bittensor-sdk.md §3).
    return {"fields": [{f"Raw{len(c)}": "0x" + c.hex()} for c in chunks]}


class Chain:
    """An async adapter over one bittensor `Client` (opened lazily, reconnected on a dropped socket)."""

    def __init__(self, network: str = "finney", *, timeout: float = 60.0, reconnect_pause: float = 0.25,
                 sleep: retry_policy.Sleep | None = None) -> None:
        self.network = network
        self.timeout = timeout
        self.reconnect_pause = reconnect_pause
        """Longest jittered pause before reconnecting (`leoma.adapters.retry.chain_policy`)."""
        self._sleep = sleep
        self._client: Any = None
        self._substrate: Any = None
        self._backend: Backend | None = None
        self._lock = asyncio.Lock()
        if not (network in NETWORKS or network.startswith(("ws://", "wss://")) or _scheme_of(network)):
            raise ConfigError(
                f"unknown network {network!r}: use finney, test, local, a ws:// or wss:// URL, or SCHEME:... "
                f"for a registered scheme ({', '.join(registered_schemes()) or 'none registered'})"
            )

    # -- connection
    def _build(self) -> Any:
        import bittensor as bt

        scheme = _scheme_of(self.network)
        if scheme is not None:
            factory = _SCHEMES.get(scheme)
            if factory is None:
                raise ConfigError(
                    f"network {self.network!r}: no adapter registered the scheme {scheme!r} "
                    f"(registered: {', '.join(registered_schemes()) or 'none'}); the devnet's simulated "
                    "chain registers `sim` when `leoma.adapters.simchain` is imported, as the `leoma` command does"
                )
            self._backend = factory(self.network[len(scheme) + 1 :])
            self._substrate = self._backend.substrate
            return bt.Client("local", substrate=self._substrate)
        self._backend = None
        if self.network.startswith(("ws://", "wss://")):
            self._substrate = bt.RpcSubstrate(self.network, fallback_endpoints=[], archive_endpoints=[])
        else:
            self._substrate = None
        if self._substrate is not None:
            return bt.Client(self.network, substrate=self._substrate)
        return bt.Client(self.network)

    async def client(self) -> Any:
        """The connected SDK `Client` (connects on first use)."""
        async with self._lock:
            if self._client is None:
                client = self._build()
                try:
                    await asyncio.wait_for(client.connect(), self.timeout)
                except Exception as exc:  # nothing is connected yet: report where and what
                    raise ChainError(f"cannot connect to the chain at {self.network!r}: {exc}") from exc
                self._client = client
            return self._client

    async def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:  # closing a dead socket must not mask the caller's error
                log.debug("closing the chain client failed: %s", exc)

    async def __aenter__(self) -> Chain:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _call(self, what: str, fn: Callable[[Any], Awaitable[T]], *, retry: bool = True) -> T:
        """Run `fn(client)` under the deadline; after a dropped connection reconnect and retry once."""
        attempts = 2 if retry else 1

        async def once() -> T:
            client = await self.client()
            try:
                return await asyncio.wait_for(fn(client), self.timeout)
            except (ChainError, ConfigError):
                raise
            except TimeoutError as exc:
                await self.close()
                raise _Dropped(f"{what}: no answer from {self.network!r} within {self.timeout:g}s") from exc
            except Exception as exc:
                if not _is_connection_error(exc):
                    _raise_sdk_error(what, exc)
                await self.close()
                raise _Dropped(f"{what}: connection to {self.network!r} failed twice: {exc}", connection=exc) from exc

        def note(state: Any) -> None:
            exc = state.outcome.exception()
            if isinstance(exc, _Dropped) and exc.connection is not None:
                log.warning("%s: connection dropped (%s); reconnecting once", what, exc.connection)

        policy = retry_policy.chain_policy(attempts=attempts, retry_on=lambda e: isinstance(e, _Dropped),
                                           pause=self.reconnect_pause, sleep=self._sleep, before_sleep=note)
        try:
            return await policy(once)
        except _Dropped as exc:
            raise ChainError(str(exc)) from exc.__cause__


    # -- reads
    async def head(self) -> tuple[int, str]:
        """The current block and its hash (0x-hex)."""

        async def go(c: Any) -> tuple[int, str]:
            block = await c.block()
            return block, await c._substrate.block_hash(block)

        return await self._call("reading the head", go)

    async def block_hash(self, block: int) -> str:
        """The hash of `block`."""
        return await self._call(f"reading the hash of block {block}", lambda c: c._substrate.block_hash(block))

    async def _storage(self, c: Any, item: str, params: list, block: int | None = None) -> Any:
        import bittensor as bt

        return await c.query(getattr(bt.storage.SubtensorModule, item), params, block=block)

    async def metagraph(self, netuid: int) -> Metagraph:
        """Neurons of `netuid` at the head (raises `ChainError` if the subnet does not exist)."""

        async def go(c: Any) -> Metagraph:
            mg = await c.subnets.metagraph(netuid, commitments=False)
            if mg is None:
                raise ChainError(f"subnet {netuid} does not exist on {self.network!r}: check --netuid")
            ns = list(mg.neurons)
            return Metagraph(
                block=int(mg.block),
                netuid=netuid,
                uids=tuple(n.uid for n in ns),
                hotkeys=tuple(n.hotkey for n in ns),
                coldkeys=tuple(n.coldkey for n in ns),
                stakes=tuple(int(n.total_stake.rao) for n in ns),
                validator_permit=tuple(bool(n.validator_permit) for n in ns),
                last_update=tuple(int(n.last_update) for n in ns),
                owner_hotkey=str(mg.owner_hotkey or ""),
            )

        return await self._call(f"reading the metagraph of subnet {netuid}", go)

    async def commitments(self, netuid: int) -> dict[str, CommitmentHistory]:
        """Every hotkey's visible commitments: revealed timelocked ones and the plain one."""

        async def go(c: Any) -> dict[str, CommitmentHistory]:
            found = await c.subnets.commitments(netuid)
            out: dict[str, CommitmentHistory] = {}
            for hotkey, cm in found.items():
                entries = [CommitmentEntry(block=int(b), text=str(t)) for b, t in cm.revealed]
                if cm.status == "plain" and cm.data:
                    entries.append(CommitmentEntry(block=int(cm.block), text=str(cm.data)))
                if entries:
                    entries.sort(key=lambda e: e.block)  # chronological, as the seed reads them
                    out[str(hotkey)] = CommitmentHistory(hotkey=str(hotkey), entries=tuple(entries))
            return out

        return await self._call(f"reading the commitments of subnet {netuid}", go)

    async def plain_commitment(self, netuid: int, hotkey: str) -> str | None:
        """The plain (`CommitmentOf`) text of `hotkey`, or None (the owner's allowlist anchor)."""

        async def go(c: Any) -> str | None:
            one = await c.identity.commitment(netuid, hotkey)
            return one.data if one is not None and one.data else None

        return await self._call(f"reading the commitment of {hotkey}", go)

    async def commitment_fields(self, netuid: int, hotkey: str, *, block: int | None = None) -> tuple[int, list[bytes]] | None:
        """`hotkey`'s plain `CommitmentOf` at `block` (default: the head): the block it was set at
        and the bytes of each `Raw` field, in order; None when it has none (anchors read this)."""

        async def go(c: Any) -> tuple[int, list[bytes]] | None:
            one = await c.identity.commitment(netuid, hotkey, block=block)
            if one is None:
                return None
            raw: list[bytes] = []
            for entry in one.fields or []:
                items = entry.items() if isinstance(entry, dict) else []
                for variant, value in items:
                    if str(variant).startswith("Raw") and isinstance(value, str):
                        raw.append(bytes.fromhex(value.removeprefix("0x")))
            return int(one.block), raw

        return await self._call(f"reading the commitment of {hotkey}", go)

    async def set_commitment_fields(self, wallet: Any, netuid: int, fields: list[bytes]) -> int:
        """Commit up to 3 `Raw` fields (<= 128 bytes each) in one commitment; returns the inclusion
        block. A hotkey has one commitment per subnet: every field it keeps must be sent again."""
        import bittensor as bt

        if not 1 <= len(fields) <= 3 or any(len(f) > 128 for f in fields):
            raise ConfigError(f"a commitment holds 1 to 3 fields of at most 128 bytes, not {[len(f) for f in fields]}")
        call = bt.calls.Commitments.set_commitment(
            netuid=netuid, info={"fields": [{f"Raw{len(f)}": "0x" + f.hex()} for f in fields]})

        async def go(c: Any) -> int:
            res = await self._submit("setting a commitment", c, call, wallet)
            return int(str(res.extrinsic_id).split("-")[0]) if res.extrinsic_id else await c.block()

        return await self._call("setting a commitment", go, retry=False)

    async def owner_hotkey(self, netuid: int) -> str | None:
        """The subnet owner's hotkey, or None."""

        async def go(c: Any) -> str | None:
            value = await self._storage(c, "SubnetOwnerHotkey", [netuid])
            return str(value) if value else None

        return await self._call(f"reading the owner of subnet {netuid}", go)

    async def weights_rate_limit(self, netuid: int) -> int:
        """Blocks that must pass between two weight submissions of one validator."""
        return await self._call("reading the weights rate limit", lambda c: self._int(c, "WeightsSetRateLimit", netuid))

    async def tempo(self, netuid: int) -> int:
        """Blocks per epoch of `netuid`."""
        return await self._call("reading the tempo", lambda c: self._int(c, "Tempo", netuid))

    async def _int(self, c: Any, item: str, netuid: int) -> int:
        return int(await self._storage(c, item, [netuid]) or 0)

    async def blocks_since_last_update(self, netuid: int, uid: int) -> int | None:
        """Blocks since `uid` last set (or committed) weights; None if it never did."""

        async def go(c: Any) -> int | None:
            block = await c.block()
            last = await self._storage(c, "LastUpdate", [netuid], block)
            if not last or uid >= len(last) or int(last[uid]) == 0:
                return None
            return block - int(last[uid])

        return await self._call("reading LastUpdate", go)

    async def weights(self, netuid: int, uid: int) -> list[tuple[int, int]]:
        """The weight row `uid` has on chain, as (uid, u16 weight) pairs."""

        async def go(c: Any) -> list[tuple[int, int]]:
            import bittensor as bt

            rows = await c.query_map(bt.storage.SubtensorModule.Weights, [netuid])
            for key, row in rows:
                if int(key) == uid:
                    return [(int(d), int(w)) for d, w in row or []]
            return []

        return await self._call(f"reading the weights of uid {uid}", go)

    async def timestamp_ms(self) -> int:
        """The head block's timestamp (`Timestamp.Now`), in milliseconds since the epoch."""

        async def go(c: Any) -> int:
            import bittensor as bt

            return int(await c.query(bt.storage.Timestamp.Now) or 0)

        return await self._call("reading the chain's timestamp", go)

    async def uid_of(self, netuid: int, hotkey: str) -> int | None:
        """`hotkey`'s uid on `netuid`, or None when it is not registered."""

        async def go(c: Any) -> int | None:
            uid = await self._storage(c, "Uids", [netuid, hotkey])
            return None if uid is None else int(uid)

        return await self._call(f"reading the uid of {hotkey}", go)

    async def weight_row(self, netuid: int, uid: int) -> WeightRow:
        """`uid`'s whole weight row and its `LastUpdate`, both read at the same block."""

        async def go(c: Any) -> WeightRow:
            import bittensor as bt

            block = await c.block()
            # one key of the (netuid, uid) double map, not the subnet's whole weight matrix
            value = await c.query(bt.storage.SubtensorModule.Weights, [netuid, uid], block=block)
            row = [(int(d), int(w)) for d, w in value or []]
            last = await self._storage(c, "LastUpdate", [netuid], block) or []
            return WeightRow(block=block, uid=uid, row=tuple(row), last_update=int(last[uid]) if uid < len(last) else 0)

        return await self._call(f"reading the weights of uid {uid}", go)

    async def pending_weight_commits(self, netuid: int, hotkey: str) -> list[PendingCommit]:
        """`hotkey`'s timelocked weight commits the chain has not revealed yet."""

        async def go(c: Any) -> list[PendingCommit]:
            found = await c.weights.timelocked_weight_commits(netuid)
            return [PendingCommit(epoch=int(epoch), commit_block=int(x["commit_block"]), reveal_round=int(x["reveal_round"]))
                    for epoch, commits in found.items() for x in commits if x["hotkey"] == hotkey]

        return await self._call("reading the pending weight commits", go)

    async def commit_reveal_enabled(self, netuid: int) -> bool:
        """Whether `netuid` takes weights as timelocked commits (`CommitRevealWeightsEnabled`)."""

        async def go(c: Any) -> bool:
            return bool(await self._storage(c, "CommitRevealWeightsEnabled", [netuid]))

        return await self._call("reading CommitRevealWeightsEnabled", go)

    # -- writes
    async def _submit(self, what: str, c: Any, call: Any, wallet: Any) -> Any:
        res = await c.submit_call(call, wallet, signer="hotkey", wait_for_inclusion=True, wait_for_finalization=False)
        if not res.success:
            name = getattr(res.error, "name", None) or res.message or "unknown error"
            raise ChainRefused(f"{what}: the chain refused it ({name})", reason=str(name))
        return res

    async def set_commitment(self, wallet: Any, netuid: int, text: str) -> int:
        """Commit `text` in the clear from the wallet's hotkey; returns the inclusion block."""
        import bittensor as bt

        call = bt.calls.Commitments.set_commitment(netuid=netuid, info=encode_raw_fields(text.encode()))

        async def go(c: Any) -> int:
            res = await self._submit("setting a commitment", c, call, wallet)
            return int(str(res.extrinsic_id).split("-")[0]) if res.extrinsic_id else await c.block()

        # no blind retry of a write: a dropped socket may have carried it to the pool already
        return await self._call("setting a commitment", go, retry=False)

    async def set_timelocked_commitment(self, wallet: Any, netuid: int, text: str, blocks_until_reveal: int = 1) -> int:
        """Commit `text` sealed until ~`blocks_until_reveal` blocks later; returns the reveal round."""
        import bittensor as bt

        async def go(c: Any) -> int:
            data = text.encode()
            seal = self._backend.seal if self._backend is not None else None
            if seal is not None:  # a registered backend runs its own beacon (the simulated chain does)
                encrypted, reveal_round = seal(data, blocks_until_reveal)
            else:
                seconds = max(1, blocks_until_reveal) * await c.block_time()
                sealed = bt.timelock.encrypt(data, reveal_in=seconds)
                encrypted, reveal_round = sealed.encrypted, sealed.reveal_round
            info = {"fields": [{"TimelockEncrypted": {"encrypted": encrypted, "reveal_round": reveal_round}}]}
            call = bt.calls.Commitments.set_commitment(netuid=netuid, info=info)
            await self._submit("setting a timelocked commitment", c, call, wallet)
            return int(reveal_round)

        return await self._call("setting a timelocked commitment", go, retry=False)

    async def set_weights(self, wallet: Any, netuid: int, uids: list[int], weights: list[float]) -> WeightsResult:
        """Set weights (commit-reveal if the subnet uses it); raises `ChainRefused` unless accepted."""
        import bittensor as bt

        async def go(c: Any) -> WeightsResult:
            hotkey = _hotkey_address(wallet)
            uid = await self._storage(c, "Uids", [netuid, hotkey])
            if uid is None:
                raise ChainRefused(f"hotkey {hotkey} is not registered on subnet {netuid}", reason="HotKeyNotRegisteredInSubNet")
            limit = await self._int(c, "WeightsSetRateLimit", netuid)
            block = await c.block()
            last = await self._storage(c, "LastUpdate", [netuid], block) or []
            last_set = int(last[uid]) if uid < len(last) else 0
            if limit and last_set > 0 and block - last_set < limit:
                raise ChainRefused(
                    f"SettingWeightsTooFast: weights on subnet {netuid} were set {block - last_set} blocks ago; "
                    f"the rate limit is {limit} blocks, retry in {limit - (block - last_set)} blocks",
                    reason="SettingWeightsTooFast",
                )
            version_key = await self._int(c, "WeightsVersionKey", netuid)
            intent = bt.SetWeights(netuid=netuid, uids=list(uids), weights=[float(w) for w in weights], version_key=version_key)
            sealing = self._backend.sealing if self._backend is not None else None  # a backend's own beacon
            with sealing() if sealing is not None else contextlib.nullcontext():
                res = await c.execute(intent, wallet, wait_for_inclusion=True, wait_for_finalization=False)
            if not res.success:
                name = getattr(res.error, "name", None) or res.message or "unknown error"
                raise ChainRefused(f"setting weights: the chain refused it ({name})", reason=str(name))
            reveal_round = res.data.get("reveal_round") if isinstance(res.data, dict) else None
            return WeightsResult(
                block_hash=str(res.block_hash or ""),
                extrinsic_id=str(res.extrinsic_id or ""),
                version_key=version_key,
                committed=reveal_round is not None,
                reveal_round=int(reveal_round) if reveal_round is not None else None,
                block=_inclusion_block(res.extrinsic_id),
            )

        return await self._call("setting weights", go, retry=False)


def _inclusion_block(extrinsic_id: Any) -> int:
    """The block of an extrinsic id `"<block>-<index>"` (0 if it has another shape)."""
    head = str(extrinsic_id or "").split("-")[0]
    return int(head) if head.isdigit() else 0


def _hotkey_address(wallet: Any) -> str:
    hotkey = getattr(wallet, "hotkey", wallet)
    return str(hotkey.ss58_address)


def _raise_sdk_error(what: str, exc: Exception) -> None:
    """Map an SDK exception to ours: preflight refusals carry the chain's reason."""
    import bittensor as bt

    if isinstance(exc, bt.ChainError):
        code = getattr(getattr(exc, "code", None), "name", "")
        reason = getattr(exc, "name", None) or {
            "RATE_LIMITED": "SettingWeightsTooFast",
            "NOT_REGISTERED": "HotKeyNotRegisteredInSubNet",
            "NOT_AUTHORIZED": "NeuronNoValidatorPermit",
        }.get(code, code or "ChainError")
        raise ChainRefused(f"{what}: {exc}", reason=reason) from exc
    if isinstance(exc, bt.BittensorError):
        raise ChainError(f"{what}: {exc}") from exc
    raise ChainError(f"{what}: unexpected {type(exc).__name__}: {exc}") from exc


def commitment_payload(model_name: str, model_revision: str, chute_id: str) -> str:
    """The miner's commitment text, byte-for-byte the seed's (`json.dumps`, default separators)."""
    return json.dumps({"model_name": model_name, "model_revision": model_revision, "chute_id": chute_id})
