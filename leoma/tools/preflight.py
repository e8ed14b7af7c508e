"""`leoma preflight`: prove a validator's configuration before it goes live, one line per check.

Every check asks the real thing the validator will ask later, with the same adapters:

    wallet           the hotkey loads (WALLET_* or LEOMA_DEV_KEY)
    chain            the chain answers at NETWORK
    registered       the hotkey has a uid on NETUID
    validator permit that uid holds a validator permit
    clock            the chain's head timestamp and this machine's clock agree
    own bucket       a probe object can be written, read back and deleted
    source bucket    the source bucket lists at least one object
    allowlist        the owner's allowlist is anchored on chain, verifies, and names this hotkey
    peer <hotkey>    each peer's checkpoint reads, verifies, and is under this consensus digest
    judge            Gemini answers a minimal call
    chutes           the Chutes API accepts the key (reads chute info as the checker does)

A failing check carries a `fix`: what to change, named by its setting. A check that needs an
earlier one (a chain for the permit, a wallet for the probe) fails as "skipped" naming that one,
so one cause gives one clear first line.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from leoma.errors import LeomaError
from leoma.log.consensus import Consensus
from leoma.ops.config import Settings

__all__ = ["Check", "run_preflight", "CLOCK_TOLERANCE_SECONDS"]

CLOCK_TOLERANCE_SECONDS = 60.0
PROBE_PREFIX = "preflight"
CALL_TIMEOUT = 20.0


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the preflight: what was proven, or what is wrong and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


class _Skip(Exception):
    """A check that cannot run because an earlier one failed."""


async def _timed(what: Awaitable[Any], seconds: float = CALL_TIMEOUT) -> Any:
    try:
        return await asyncio.wait_for(what, seconds)
    except TimeoutError:
        raise LeomaError(f"no answer within {seconds:g}s") from None


async def run_preflight(settings: Settings, *, consensus: Consensus | None = None, signer: Any = None,
                        clock_tolerance: float = CLOCK_TOLERANCE_SECONDS) -> list[Check]:
    """Run every check against what `settings` point at; never raises for a failed check."""
    from leoma.adapters.chain import Chain
    from leoma.adapters.storage import open_store
    from leoma.services.context import load_signer

    consensus = consensus or settings.consensus()
    checks: list[Check] = []
    state: dict[str, Any] = {}

    async def check(name: str, fix: str, fn: Callable[[], Awaitable[str]]) -> bool:
        try:
            detail = await fn()
        except _Skip as skip:
            checks.append(Check(name=name, ok=False, detail=f"skipped: {skip}"))  # the earlier line has the fix
            return False
        except Exception as exc:  # every failure becomes a line; nothing here may stop the others
            checks.append(Check(name=name, ok=False, detail=_one_line(exc), fix=fix))
            return False
        checks.append(Check(name=name, ok=True, detail=detail))
        return True

    def need(key: str, what: str) -> Any:
        if key not in state:
            raise _Skip(f"needs {what}")
        return state[key]

    async def wallet() -> str:
        state["signer"] = signer or load_signer(settings)
        return f"hotkey {state['signer'].ss58_address}"

    await check("wallet", "check WALLET_NAME, WALLET_HOTKEY and WALLET_PATH (LEOMA_DEV_KEY on a devnet)", wallet)
    hotkey = str(state["signer"].ss58_address) if "signer" in state else ""
    netuid = settings.netuid
    chain = Chain(settings.network, timeout=CALL_TIMEOUT)
    env = settings.store_env()
    try:
        async def connect() -> str:
            head, _ = await chain.head()
            state["head"] = head
            return f"{settings.network} at block {head}"

        await check("chain", "check NETWORK (finney, test, a ws:// or wss:// URL) and that the node is reachable",
                    connect)

        async def registered() -> str:
            need("head", "the chain")
            need("signer", "the wallet")
            uid = await chain.uid_of(netuid, hotkey)
            if uid is None:
                raise LeomaError(f"hotkey {hotkey} is not registered on subnet {netuid}")
            state["uid"] = uid
            return f"uid {uid} on subnet {netuid}"

        await check("registered", f"register the hotkey on subnet {netuid} (btcli subnet register --netuid {netuid}) "
                    "or fix NETUID / the wallet", registered)

        async def permit() -> str:
            uid = need("uid", "a registered hotkey")
            mg = await chain.metagraph(netuid)
            if uid >= len(mg.validator_permit) or not mg.validator_permit[uid]:
                raise LeomaError(f"uid {uid} has no validator permit on subnet {netuid}")
            return f"uid {uid} holds a validator permit (stake {mg.stakes[uid]} rao)"

        await check("validator permit", "stake enough to be among the subnet's permitted validators, then wait for "
                    "the next epoch", permit)

        async def clock() -> str:
            need("head", "the chain")
            chain_ms = await chain.timestamp_ms()
            skew = time.time() - chain_ms / 1000
            if abs(skew) > clock_tolerance:
                raise LeomaError(f"this machine's clock is {skew:+.0f}s off the chain's head timestamp "
                                 f"(more than {clock_tolerance:g}s)")
            return f"agrees with the chain's head timestamp ({skew:+.1f}s)"

        await check("clock", "synchronise this machine's clock (chrony or systemd-timesyncd), or check that the node "
                    "is not stuck behind the chain", clock)

        async def own_bucket() -> str:
            need("signer", "the wallet")
            settings.require("LEOMA_OWN_BUCKET_URL", why="the validator publishes its log there")
            store = open_store(settings.own_store_url, env=env)
            key = f"{PROBE_PREFIX}/{hotkey}/{secrets.token_hex(8)}.txt"
            body = f"leoma preflight {time.time():.0f}\n".encode()
            try:
                await _timed(store.put(key, body, content_type="text/plain"))
                back = await _timed(store.get(key))
                await _timed(store.delete(key))
            finally:
                await store.close()
            if back != body:
                raise LeomaError(f"read {len(back)} bytes back from {key} but wrote {len(body)}")
            return f"wrote, read back and deleted {key}"

        await check("own bucket", "check LEOMA_OWN_BUCKET_URL and the write keys (R2_OWN_WRITE_ACCESS_KEY, "
                    "R2_OWN_WRITE_SECRET_KEY, R2_ACCOUNT_ID)", own_bucket)

        async def source_bucket() -> str:
            settings.require("LEOMA_SOURCE_URL", why="the sampler takes its clips and the allowlist from it")
            store = open_store(settings.source_store_url, env=env)
            try:
                first = await _timed(_first_key(store))
            finally:
                await store.close()
            if first is None:
                raise LeomaError("the source bucket lists no objects: wrong bucket or prefix?")
            state["source_ok"] = True
            return f"lists objects (first: {first})"

        await check("source bucket", "check LEOMA_SOURCE_URL and the source read keys (R2_SOURCE_READ_ACCESS_KEY, "
                    "R2_SOURCE_READ_SECRET_KEY)", source_bucket)

        async def allowlist() -> str:
            from leoma.mirror.allowlist import read_allowlist

            need("head", "the chain")
            need("source_ok", "a readable source bucket")
            store = open_store(settings.source_store_url, env=env)
            try:
                found = await read_allowlist(chain, store, netuid)
            finally:
                await store.close()
            if hotkey not in found.validators:
                raise LeomaError(f"the owner's allowlist ({len(found.validators)} validators, digest "
                                 f"{found.digest[:16]}) does not include {hotkey}")
            return f"anchored by owner {found.owner_hotkey[:12]}, verifies, includes this hotkey " \
                   f"({len(found.validators)} validators)"

        await check("allowlist", "ask the subnet owner to add this hotkey and publish again (leoma validator publish)",
                    allowlist)

        for problem in settings.peer_problems():
            checks.append(Check(name="peers", ok=False, detail=problem, fix="fix the entry in PEER_VALIDATORS"))
        for peer_hotkey, entry in sorted(settings.peers().items()):
            if peer_hotkey == hotkey:
                continue
            await check(f"peer {peer_hotkey[:12]}", f"check {peer_hotkey[:12]}'s URL and read keys in PEER_VALIDATORS; "
                        "if its digest differs, one of you runs another consensus.toml (LEOMA_CONSENSUS)",
                        _peer(peer_hotkey, entry, env, consensus.digest))

        async def judge() -> str:
            settings.require("GEMINI_API_KEY", why="the sampler needs the judge to reach verdicts")
            return await _timed(_gemini_ping(settings, consensus), CALL_TIMEOUT * 2)

        await check("judge", "check GEMINI_API_KEY (and LEOMA_GEMINI_BASE_URL if set): the key must be valid and "
                    "have quota for the judge models", judge)

        async def chutes() -> str:
            return await _timed(_chutes_ping(settings))

        await check("chutes", "check CHUTES_API_KEY (and CHUTES_API_URL if set)", chutes)
    finally:
        await chain.close()
    return checks


async def _first_key(store: Any) -> str | None:
    async for info in store.list("", limit=1):
        return str(info.key)
    return None


def _peer(hotkey: str, entry: Any, env: dict[str, str], digest: str) -> Callable[[], Awaitable[str]]:
    async def go() -> str:
        from leoma.mirror.peers import peer_store
        from leoma.mirror.segments import fetch_checkpoint

        store = peer_store(entry, env=env)
        try:
            cp = await _timed(fetch_checkpoint(store, hotkey))
        finally:
            await store.close()
        if cp is None:
            raise LeomaError(f"no checkpoint published for {hotkey[:12]} (log/{hotkey}/checkpoint.json): "
                             "is the peer running and is this its bucket?")
        if cp.consensus_digest != digest:
            raise LeomaError(f"its checkpoint is under consensus digest {cp.consensus_digest[:16]}, "
                             f"this validator runs {digest[:16]}")
        return f"checkpoint verifies: {cp.size} events, same consensus digest {digest[:16]}"

    return go


async def _gemini_ping(settings: Settings, consensus: Consensus) -> str:
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=settings.gemini_base_url or None, timeout=int(CALL_TIMEOUT * 1000),
                                retry_options=types.HttpRetryOptions(attempts=1))
    client = genai.Client(api_key=settings.gemini_api_key, http_options=options)
    model = consensus.judge.evaluation_model
    try:
        reply = await client.aio.models.generate_content(
            model=model, contents=["Reply with the single word: ready"],
            config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=8))
    finally:
        await client.aio.aclose()
        client.close()
    if not reply.candidates:
        raise LeomaError(f"{model} answered with no candidate")
    return f"{model} answers"


async def _chutes_ping(settings: Settings) -> str:
    import httpx

    api = settings.chutes_api_url.rstrip("/")
    key = settings.chutes_api_key
    async with httpx.AsyncClient(timeout=CALL_TIMEOUT, follow_redirects=False) as http:
        # the same two requests the miner tools and the checker make, with the key as each sends it
        listing = await http.get(f"{api}/chutes/", headers={"Authorization": f"Bearer {key}"} if key else {})
        _refused(listing, api, key)
        body = listing.json()
        items = body.get("items", []) if isinstance(body, dict) else body
        first = next((i for i in items if isinstance(i, dict) and i.get("chute_id")), None) if isinstance(items, list) else None
        if first is None:
            return f"{api} answers (no chutes listed to read the info of)"
        info = await http.get(f"{api}/chutes/{first['chute_id']}", headers={"Authorization": key} if key else {})
        _refused(info, api, key)
    keyed = "the key is accepted" if key else "no key set; the API answers without one"
    return f"{api}: chute info reads, {keyed}"


def _refused(resp: Any, api: str, key: str) -> None:
    if resp.status_code in (401, 403):
        what = "refused the key" if key else "needs a key (CHUTES_API_KEY is not set)"
        raise LeomaError(f"{api} {what}: HTTP {resp.status_code} on {resp.request.url.path}")
    if resp.status_code != 200:
        raise LeomaError(f"{api} answered HTTP {resp.status_code} on {resp.request.url.path}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
