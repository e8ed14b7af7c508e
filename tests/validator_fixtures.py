"""A whole small subnet for service tests: simulated chain, local world, directory buckets.

    vw = await build_validator_world(tmp_path, validators=1)
    async with vw.context(vw.validators[0]) as ctx:
        await check_miners(ctx)
        await vw.advance_to_turn(vw.validators[0])
        closed = await sample_turn(ctx)

`ValidatorWorld` holds a `SimChain` (manual clock) with the owner, 1-3 validators and the
reference miners registered and committed (timelocked, revealed), the owner's allowlist
published, a source bucket of generated clips and the `World` serving Chutes, Hugging Face and
Gemini on 127.0.0.1. Reusable by the weight-setter and devnet tests.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from leoma.adapters.chain import Chain, commitment_payload
from leoma.adapters.chutes import ChutesClient
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.judge import Judge, JudgeSettings
from leoma.adapters.signing import keypair_from_uri
from leoma.adapters.simchain import SimChain
from leoma.adapters.storage import ObjectInfo
from leoma.devnet.clips import render_source
from leoma.devnet.world import World
from leoma.errors import StorageError
from leoma.log.consensus import DEFAULT, Consensus
from leoma.mirror.allowlist import publish_allowlist
from leoma.ops.config import Settings
from leoma.services.context import ServiceContext, open_context

NETUID = 99
OWNER_URI = "//Alice"
VALIDATOR_URIS = ("//Bob", "//Charlie", "//Dave")
# Every behaviour of the world; `copycat` serves faithful's weights, `cold` is never hot.
BEHAVIOURS = ("faithful", "static", "noisy", "wrong_resolution", "slow", "flaky", "garbage", "reject", "cold", "copycat")
INTERVAL = 50


def wallet(kp: Any) -> SimpleNamespace:
    """A wallet-shaped object the Chain adapter can sign with."""
    return SimpleNamespace(hotkey=kp, coldkey=kp, coldkeypub=kp)


@functools.lru_cache(maxsize=4)
def source_clip(seed: int, direction: str) -> bytes:
    """A small single-shot source video (416x240, 7.5 s): one 5 s clip fits after the 2 s offset."""
    return render_source(seed, shots=((direction, 7.5),), width=416, height=240, speed=2).video


def small_consensus() -> Consensus:
    """The default consensus, except that the tiny test videos pass the source size filter."""
    return msgspec.structs.replace(DEFAULT, video=msgspec.structs.replace(DEFAULT.video, min_source_bytes=1000))


class FlakyStore:
    """A store that fails chosen writes until `healed`; counts every successful put per key."""

    def __init__(self, inner: DirectoryStore) -> None:
        self.inner = inner
        self.fail_prefixes: tuple[str, ...] = ()
        self.fail_suffixes: tuple[str, ...] = ()
        self.puts: dict[str, int] = {}

    def _broken(self, key: str) -> bool:
        return any(key.startswith(p) for p in self.fail_prefixes) or any(key.endswith(s) for s in self.fail_suffixes)

    def heal(self) -> None:
        self.fail_prefixes = self.fail_suffixes = ()

    async def put(self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False) -> None:
        if self._broken(key):
            raise StorageError(f"put {key}: HTTP 503 from the test bucket (simulated outage)")
        await self.inner.put(key, data, content_type=content_type, if_absent=if_absent)
        self.puts[key] = self.puts.get(key, 0) + 1

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        return await self.inner.get(key, max_bytes=max_bytes)

    async def head(self, key: str) -> ObjectInfo | None:
        return await self.inner.head(key)

    def list(self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None) -> Any:
        return self.inner.list(prefix, start_after=start_after, limit=limit)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def presign_get(self, key: str, expires: int = 3600) -> str:
        return await self.inner.presign_get(key, expires)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class ValidatorWorld:
    """The subnet of a test. `validators` are keypairs in allowlist (rotation) order."""

    root: Path
    sim: SimChain
    world: World
    source: DirectoryStore
    owner: Any
    validators: list[Any]
    miners: dict[str, Any]
    uids: dict[str, int]
    consensus: Consensus
    interval: int
    own_stores: dict[str, FlakyStore] = field(default_factory=dict)

    @property
    def network(self) -> str:
        return f"sim:{self.sim.path}"

    def hotkey(self, miner: str) -> str:
        return self.miners[miner].ss58_address

    def name_of(self, hotkey: str) -> str:
        return next((n for n, kp in self.miners.items() if kp.ss58_address == hotkey), hotkey)

    def settings(self, validator: Any, **env: str) -> Settings:
        """Settings for `validator` pointing at this world (extra env names override)."""
        return Settings.load(env=self.env(validator, **env), dotenv=False)

    def env(self, validator: Any, **env: str) -> dict[str, str]:
        """The environment of `validator`'s process in this world (what `leoma` commands read)."""
        name = validator.ss58_address[:8]
        base = {
            "NETWORK": self.network, "NETUID": str(NETUID), "LEOMA_DEV_KEY": self.uri_of(validator),
            "GEMINI_API_KEY": "devnet-gemini", "LEOMA_GEMINI_BASE_URL": self.world.url,
            "CHUTES_API_URL": self.world.url, "LEOMA_CHUTE_URL_TEMPLATE": self.world.generate_url_template,
            "LEOMA_HF_ENDPOINT": self.world.url, "LEOMA_SOURCE_URL": f"file://{self.root / 'source'}",
            "LEOMA_OWN_BUCKET_URL": f"file://{self.root / 'buckets' / name}",
            "LEOMA_DB": str(self.root / f"{name}.db"), "LEOMA_STATE_DIR": str(self.root / f"state-{name}"),
            "REQUEST_TIMEOUT": "8", "MAX_CONCURRENT_MINERS": "8",
        }
        return {**base, **env}

    def uri_of(self, validator: Any) -> str:
        for uri in VALIDATOR_URIS:
            if keypair_from_uri(uri).ss58_address == validator.ss58_address:
                return uri
        raise KeyError(validator.ss58_address)

    def own_store(self, validator: Any) -> FlakyStore:
        """The validator's result bucket (a directory), wrapped so a test can break writes."""
        name = validator.ss58_address[:8]
        if name not in self.own_stores:
            self.own_stores[name] = FlakyStore(DirectoryStore(self.root / "buckets" / name))
        return self.own_stores[name]

    @asynccontextmanager
    async def context(self, validator: Any, *, settings: Settings | None = None, **overrides: Any) -> AsyncIterator[ServiceContext]:
        """A ServiceContext for `validator`; fast retries, the flaky own bucket, the test consensus."""
        settings = settings or self.settings(validator)
        chutes = overrides.pop("chutes", None) or ChutesClient(
            self.world.url, "", self.world.generate_url_template, retry_base_delay=0.02, retry_budget=3.0,
            max_concurrency=settings.max_concurrent_miners,
        )
        judge = overrides.pop("judge", None) or Judge("devnet-gemini", base_url=self.world.url, retry_sleep=0.0,
                                                      settings=JudgeSettings())
        overrides.setdefault("own", self.own_store(validator))
        overrides.setdefault("consensus", self.consensus)
        try:
            async with open_context(settings, chutes=chutes, judge=judge, **overrides) as ctx:
                yield ctx
        finally:
            await chutes.aclose()
            await judge.aclose()

    def turn_start(self, validator: Any, after: int | None = None) -> int:
        """The first block of the next rotation whose primary sampler is `validator`."""
        head = self.sim.head() if after is None else after
        order = sorted(v.ss58_address for v in self.validators)
        task = head // self.interval + 1
        while order[task % len(order)] != validator.ss58_address:
            task += 1
        return task * self.interval

    def advance_to_turn(self, validator: Any) -> int:
        """Move the chain to `validator`'s next turn; returns the task id."""
        block = self.turn_start(validator)
        self.sim.advance_to(block)
        return block // self.interval

    async def commit(self, miner: str, text: str) -> int:
        """Commit `text` (timelocked) from a miner's hotkey and reveal it; returns the commit block."""
        async with Chain(self.network) as chain:
            reveal = await chain.set_timelocked_commitment(wallet(self.miners[miner]), NETUID, text)
        self.sim.advance_to(reveal)
        return reveal

    async def stop(self) -> None:
        await self.world.stop()


async def build_validator_world(
    root: Path,
    *,
    validators: int = 1,
    behaviours: tuple[str, ...] = BEHAVIOURS,
    interval: int = INTERVAL,
    clips: int = 2,
) -> ValidatorWorld:
    """Create the chain, world, buckets and commitments; the world is started (call `stop()`)."""
    owner = keypair_from_uri(OWNER_URI)
    vals = sorted((keypair_from_uri(u) for u in VALIDATOR_URIS[:validators]), key=lambda k: k.ss58_address)
    sim = SimChain.create(root / "chain.jsonl", owner=owner.ss58_address, clock="manual", netuid=NETUID, tempo=360)
    sim.register(owner.ss58_address, stake=10**12, validator_permit=True)
    for v in vals:
        sim.register(v.ss58_address, stake=10**11, validator_permit=True)
    world = World(frames=17, slow_seconds=12.0)  # well past REQUEST_TIMEOUT, even on busy cores
    miners: dict[str, Any] = {}
    uids: dict[str, int] = {}
    for b in behaviours:
        kp = keypair_from_uri(f"//miner-{b}")
        miners[b] = kp
        uids[b] = sim.register(kp.ss58_address)
        world.add_miner(b, name=b, hotkey=kp.ss58_address, copies="faithful" if b == "copycat" else "")
    await world.start()
    source = DirectoryStore(root / "source")
    for i, direction in enumerate(("right", "left", "down", "up")[:clips]):
        await source.put(f"2026/01/clip-{i}.mp4", source_clip(20 + i, direction), content_type="video/mp4")
    vw = ValidatorWorld(root=root, sim=sim, world=world, source=source, owner=owner, validators=vals, miners=miners,
                        uids=uids, consensus=small_consensus(), interval=interval)
    async with Chain(vw.network) as chain:
        await publish_allowlist(source, chain, wallet(owner), NETUID, [v.ss58_address for v in vals], interval)
        for b in behaviours:  # faithful first, so the copycat is the later (duplicate) one
            m = world.miners[b]
            await chain.set_timelocked_commitment(
                wallet(miners[b]), NETUID, commitment_payload(m.repo_id, m.revision, m.chute_id))
    sim.step(3)
    return vw


@pytest.fixture
async def vworld(tmp_path: Path) -> AsyncIterator[ValidatorWorld]:
    """One validator and every reference miner."""
    vw = await build_validator_world(tmp_path)
    try:
        yield vw
    finally:
        await vw.stop()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class OwnerApi:
    """A stand-in for the owner's API on 127.0.0.1: blacklist, miner reports, sample batches.

    It records every request (path, headers, raw body); `fail=True` answers 500 to everything.
    """

    def __init__(self) -> None:
        self.blacklist: list[str] = []
        self.fail = False
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.url = ""
        self._server: Any = None
        self._task: Any = None

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def handle(request: Any) -> Any:
            body = await request.body()
            self.requests.append((request.method, request.url.path, dict(request.headers), body))
            if self.fail:
                return JSONResponse({"detail": "An internal error occurred"}, status_code=500)
            if request.url.path == "/blacklist/miners":
                return JSONResponse(self.blacklist)
            if request.url.path == "/miners/report":
                return JSONResponse({"reported": len(json.loads(body)["miners"])})
            return JSONResponse([])

        return Starlette(routes=[
            Route("/blacklist/miners", handle), Route("/miners/report", handle, methods=["POST"]),
            Route("/samples/batch", handle, methods=["POST"]),
        ])

    async def start(self) -> OwnerApi:
        import asyncio

        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning",
                                                     lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._task

    def posted(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for m, p, h, b in self.requests if m == "POST" and p == path]


@pytest.fixture
async def owner_api() -> AsyncIterator[OwnerApi]:
    api = await OwnerApi().start()
    try:
        yield api
    finally:
        await api.stop()
