"""`leoma serve`: the validator as one asyncio process of supervised loops.

    checker      one miner-validation pass every MINER_VALIDATION_INTERVAL seconds
    sampler      this validator's turn (resumes an open task first) every SAMPLER_POLL_INTERVAL
    mirror-out   own log -> own bucket (segments + signed checkpoint)
    mirror-in    peers' published logs -> the local log
    weights      decide each epoch once, submit when the chain allows (`weight_setter.step`)
    watchdog     chain head staleness (reconnect) and loop heartbeats (say so loudly)

Each loop is supervised: an exception is logged with its traceback and that loop alone starts
again after an exponential back-off with jitter; the others keep running. A loop "beats" each
time it finishes a round; one that has not beaten for `stall_after` seconds is reported
(log at ERROR, `/healthz` fails).

Start-up order: settings are checked first (a missing one stops start-up with one line naming
it and why), then the own bucket's published tail is restored into the log (`MirrorOut.restore`)
before any loop may append, so a restored machine never reuses a published seq.

`leoma servers sampler` and `leoma servers validator` are this same process with a subset of
the roles (`SAMPLER_ROLES`, `VALIDATOR_ROLES`). Deployed side by side they share one state
directory and so one event log: SQLite serialises their appends (`BEGIN IMMEDIATE`, the head
read inside the transaction), and each role's round takes a lock file beside the log
(`log_lock`), so one process at a time does a role's work: publishing the own log (restore,
push, the final flush) waits for its turn, so a checkpoint never goes backwards; a checker,
sampler or weights round that another process is running is skipped; and one checker pass
per interval is made, whichever process gets there first.

Stop (SIGINT/SIGTERM): the loops are cancelled at their next await — an append is a synchronous
SQLite transaction, so it is never cut in half — then the own log is pushed once more within
`flush_timeout` seconds, and `run()` returns 0. A second signal skips the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from leoma.adapters import retry as retry_policy
from leoma.errors import ChainError, ConfigError, LeomaError
from leoma.ops.config import Settings, environment, read_number
from leoma.ops.metrics import (
    CONTENT_TYPE as METRICS_CONTENT_TYPE,
    Facts,
    LoopFact,
    collect_facts,
    health,
    render_prometheus,
)

__all__ = [
    "ROLES", "SAMPLER_ROLES", "SERVE_ENV", "Loop", "ServeOptions", "Validator", "log_lock", "metrics_url_file",
    "parse_addr", "restore_own_log", "serve_options", "supervise", "VALIDATOR_ROLES", "required_settings",
    "run_until_signalled",
]

log = logging.getLogger("leoma.services.serve")

ROLES = ("checker", "sampler", "mirror-out", "mirror-in", "weights")
VALIDATOR_ROLES = ("checker", "mirror-out", "mirror-in", "weights")
"""`leoma servers validator`: weights plus the checker they need (the seed's §12.1 fix)."""
SAMPLER_ROLES = ("checker", "sampler", "mirror-out")
"""`leoma servers sampler`: the sampler with the checker it needs, publishing what it records."""
PROCESS_ROLES: dict[str, tuple[str, ...]] = {"serve": ROLES, "sampler": SAMPLER_ROLES, "validator": VALIDATOR_ROLES}
"""Each way to run a validator process, by the name its metrics file and `leoma healthz` use."""

# Settings of the process itself (not of the validator's world), read like every other setting:
# flags, then the environment, then `.env`. Name -> (default, one line for env.validator.example).
SERVE_ENV: dict[str, tuple[str, str]] = {
    "LEOMA_METRICS_ADDR": ("127.0.0.1:9108", "host:port of /metrics and /healthz; `off` disables them"),
    "LEOMA_LOG_FORMAT": ("text", "`text` for people, `json` for log shippers"),
    "LEOMA_MIRROR_INTERVAL": ("10", "seconds between pushes of the own log and pulls of the peers' logs"),
    "LEOMA_WEIGHTS_INTERVAL": ("12", "seconds between weight-setter steps (it decides each epoch once)"),
    "LEOMA_STALE_BLOCKS": ("10", "reconnect to the chain when the head has not moved for this many blocks' time"),
    "LEOMA_FLUSH_TIMEOUT": ("30", "seconds a stop may spend pushing the own log before exiting"),
    "LEOMA_WEIGHTS_OVERDUE_EPOCHS": ("3", "epochs without a decision landing on chain before /healthz is degraded"),
}
BLOCK_SECONDS = 12.0
_CHECKED_AT = "serve/checker/last_pass"
"""State entry: wall time of the last checker pass by any process of this log (never read by a projection)."""


@dataclass(frozen=True)
class ServeOptions:
    """How the process runs (not what it validates)."""

    metrics_addr: str = "127.0.0.1:9108"
    log_format: str = "text"
    mirror_interval: float = 10.0
    weights_interval: float = 12.0
    stale_blocks: int = 10
    flush_timeout: float = 30.0
    block_seconds: float = BLOCK_SECONDS
    weights_overdue_epochs: int = 3


def serve_options(flags: Mapping[str, Any] | None = None, *, env: Mapping[str, str] | None = None,
                  dotenv: str | os.PathLike[str] | bool = True) -> ServeOptions:
    """`ServeOptions` from flags (env names -> value, None = not given), the environment, `.env`."""
    merged = environment(env, dotenv=dotenv)
    values = {name: (merged.get(name) or "").strip() or default for name, (default, _) in SERVE_ENV.items()}
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = str(value)

    def number(name: str, kind: type = float) -> Any:
        return read_number(values, name, kind(SERVE_ENV[name][0]), positive=True)

    if values["LEOMA_LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError(f"LEOMA_LOG_FORMAT must be text or json, not {values['LEOMA_LOG_FORMAT']!r}")
    addr = values["LEOMA_METRICS_ADDR"]
    if addr.lower() != "off":
        parse_addr(addr)
    return ServeOptions(
        metrics_addr=addr, log_format=values["LEOMA_LOG_FORMAT"], mirror_interval=number("LEOMA_MIRROR_INTERVAL"),
        weights_interval=number("LEOMA_WEIGHTS_INTERVAL"), stale_blocks=number("LEOMA_STALE_BLOCKS", int),
        flush_timeout=number("LEOMA_FLUSH_TIMEOUT"),
        weights_overdue_epochs=number("LEOMA_WEIGHTS_OVERDUE_EPOCHS", int),
    )


def parse_addr(addr: str) -> tuple[str, int]:
    """`host:port` -> (host, port); ConfigError naming LEOMA_METRICS_ADDR otherwise."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"LEOMA_METRICS_ADDR={addr!r} must be host:port (e.g. 127.0.0.1:9108) or off")
    return host.strip("[]"), int(port)


def required_settings(settings: Settings, roles: tuple[str, ...]) -> None:
    """Raise `ConfigError` for the first setting `roles` cannot run without (one line: which, why)."""
    if "sampler" in roles:
        settings.require("GEMINI_API_KEY", why="the sampler needs the judge (Gemini) to reach verdicts")
        settings.require("LEOMA_OWN_BUCKET_URL",
                         why="the sampler publishes tasks and the log to the own bucket (or set R2_OWN_BUCKET)")
        settings.require("LEOMA_SOURCE_URL",
                         why="the allowlist and the source clips are read from it (or set R2_VIDEOS_READ_ACCESS_KEY)")
    if "mirror-out" in roles and "sampler" in roles:
        settings.require("LEOMA_OWN_BUCKET_URL", why="the own log is published there for peers and auditors")
    # A consensus file with unknown or missing keys, or a prompt that does not match its pin,
    # stops start-up here, naming them (the validator would otherwise decide under other rules).
    settings.consensus(from_log=False).prompts()


# -- processes sharing one log ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def log_lock(db_path: str | os.PathLike[str], name: str, *, wait: bool = True,
                   poll: float = 0.05) -> AsyncIterator[bool]:
    """Hold the lock file `<db>.<name>.lock` that every process writing this log shares.

    Yields True once held; with `wait=False` yields False at once when another process holds
    it. Waiting polls without blocking the event loop, so a stop can still cancel it. The lock
    is the kernel's (`flock`): a process that dies, even by SIGKILL, releases it.
    """
    path = Path(f"{os.fspath(db_path)}.{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                await asyncio.sleep(poll)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def restore_own_log(ctx: Any) -> int:
    """Restore the own bucket's published tail into `ctx.log` before appending; how many events.

    Every command that appends own events calls this first (as `leoma serve` does on start), so
    a machine that lost its log's tail never reuses a seq the bucket already published. Nothing
    to do without an own bucket. `ConfigError` when the bucket's chain and the log's disagree.
    """
    from leoma.errors import MirrorError
    from leoma.mirror.out import MirrorOut

    if ctx.own is None:
        return 0
    out = MirrorOut(ctx.log, ctx.own, ctx.signer, ctx.consensus.digest)
    async with log_lock(ctx.log.path, "mirror"):
        try:
            restored = await out.restore()
        except MirrorError as exc:
            raise ConfigError(f"the own bucket and the local log disagree: {exc}") from None
    if restored:
        log.warning("restored %d own events from the own bucket before appending", restored)
    return restored


def metrics_url_file(state_dir: str | os.PathLike[str], process: str = "serve") -> Path:
    """Where a process records the URL its `/metrics` and `/healthz` really listen on."""
    return Path(state_dir) / ("metrics.url" if process == "serve" else f"metrics-{process}.url")


# -- supervised loops --------------------------------------------------------------------------


@dataclass
class Loop:
    """One supervised loop: `body()` is one round; it runs every `interval` seconds."""

    name: str
    body: Callable[[], Awaitable[Any]]
    interval: float
    stall_after: float = 0.0
    max_backoff: float = 300.0
    last_beat: float = 0.0
    started: float = field(default_factory=time.time)
    restarts: int = 0
    failures: int = 0
    last_error: str = ""
    task: asyncio.Task[None] | None = None
    stall_reported: bool = False

    def __post_init__(self) -> None:
        if self.stall_after <= 0:
            # A sampler round may take minutes (miners, judge); only silence far beyond that is a stall.
            self.stall_after = max(10 * self.interval, 1800.0)

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def stalled(self, now: float | None = None) -> bool:
        """No finished round for `stall_after` seconds (counted from start before the first)."""
        now = time.time() if now is None else now
        return now - (self.last_beat or self.started) > self.stall_after

    def fact(self, now: float | None = None) -> LoopFact:
        return LoopFact(name=self.name, running=self.running, last_beat=self.last_beat, restarts=self.restarts,
                        stalled=self.stalled(now), last_error=self.last_error)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


async def supervise(loop: Loop, stop: asyncio.Event, *, rng: random.Random | None = None,
                    sleep: retry_policy.Sleep | None = None) -> None:
    """Run `loop.body` every `loop.interval` until `stop`; an exception restarts it after a back-off.

    The back-off is `leoma.adapters.retry.restart_policy`; `sleep` (default: until `stop` or the wait
    passes) is what waits, so a test can count restarts without sleeping.
    """
    wait: retry_policy.Sleep = sleep or (lambda seconds: _sleep_or_stop(stop, seconds))

    def crashed(state: Any) -> None:  # the supervisor's job: log it, back off, start the round again
        exc = state.outcome.exception()
        delay = state.upcoming_sleep
        loop.failures += 1
        loop.restarts += 1
        loop.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if isinstance(exc, LeomaError):
            log.error("loop %s failed (%d in a row): %s; restarting in %.1fs", loop.name, loop.failures, exc,
                      delay, extra={"loop": loop.name})
        else:
            log.error("loop %s crashed (%d in a row); restarting in %.1fs", loop.name, loop.failures, delay,
                      exc_info=exc, extra={"loop": loop.name})

    policy = retry_policy.restart_policy(interval=loop.interval, cap=loop.max_backoff, stopped=stop.is_set,
                                         sleep=wait, before_sleep=crashed, rng=rng)
    async def one_round() -> None:  # a coroutine function: tenacity calls a plain callable without awaiting
        await loop.body()

    while not stop.is_set():
        try:
            await policy.copy()(one_round)
        except asyncio.CancelledError:
            raise
        except Exception:  # only when `stop` came during the back-off: the last crash is logged already
            return
        loop.failures = 0
        loop.last_beat = time.time()
        if loop.stall_reported:
            log.warning("loop %s is beating again", loop.name, extra={"loop": loop.name})
            loop.stall_reported = False
        await wait(loop.interval)


# -- the validator -----------------------------------------------------------------------------


def _wallet_for(settings: Settings, signer: Any) -> Any:
    """What the chain adapter signs weights with: the dev keypair, or the configured wallet."""
    if settings.dev_key:
        return SimpleNamespace(hotkey=signer, coldkey=signer, coldkeypub=signer)
    from leoma.adapters.wallets import load_wallet

    return load_wallet(settings.wallet_name, settings.hotkey_name, settings.wallet_path or None)


def _peer_stores(settings: Settings, own: str) -> dict[str, Any]:
    """Peers' stores from PEER_VALIDATORS (seed entries or `url` entries); problems are logged."""
    from leoma.mirror.peers import peer_store, peers_from_env

    entries, problems = peers_from_env(settings.peer_validators, own=own)
    for problem in problems:
        log.warning("PEER_VALIDATORS: %s", problem)
    stores: dict[str, Any] = {}
    for entry in entries:
        try:
            stores[entry.hotkey] = peer_store(entry, env=settings.store_env())
        except ConfigError as exc:
            log.warning("peer %s bucket cannot be opened: %s", entry.hotkey[:12], exc)
    return stores


class Validator:
    """The validator process: `await Validator(settings).run(stop)` until `stop` is set."""

    def __init__(self, settings: Settings, *, roles: tuple[str, ...] = ROLES, options: ServeOptions | None = None,
                 process: str | None = None, **overrides: Any) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise ConfigError(f"unknown role(s) {sorted(unknown)}: choose from {', '.join(ROLES)}")
        self.settings = settings
        self.roles = tuple(r for r in ROLES if r in roles)
        self.process = process or next((n for n, r in PROCESS_ROLES.items() if r == self.roles), "serve")
        self.options = options or ServeOptions()
        self.overrides = overrides
        self.loops: dict[str, Loop] = {}
        self.ctx: Any = None
        self.chain_head: int | None = None
        self.started_block: int | None = None
        self.tempo = 360
        self.published: dict[str, int] = {}
        self.peer_problems: dict[str, str] = {}
        self.metrics_url = ""
        self._restore_sleep: retry_policy.Sleep | None = None  # tests: the wait between restore attempts
        self._head_seen_at = time.monotonic()
        self._mirror_out: Any = None
        self._mirror_in: Any = None
        self._flush_task: asyncio.Task[Any] | None = None
        self._server_task: asyncio.Task[Any] | None = None

    # -- facts --------------------------------------------------------------------------------

    def facts(self) -> Facts:
        """The facts `/metrics`, `/healthz` and `leoma status` show."""
        now = time.time()
        return collect_facts(
            self.ctx.log, self.ctx.hotkey, chain_head=self.chain_head, started_block=self.started_block,
            tempo=self.tempo, loops=[lp.fact(now) for lp in self.loops.values()], published=self.published,
            peer_problems=self.peer_problems, peers=list(self.ctx.peers),
            epoch_length=self.ctx.consensus.epoch.length, overdue_epochs=self.options.weights_overdue_epochs,
        )

    # -- rounds -------------------------------------------------------------------------------

    async def _check(self) -> None:
        """One checker pass, unless a process sharing this log is making one or just made one."""
        from leoma.services.checker import check_miners

        raw = self.ctx.log.get_state(_CHECKED_AT)
        if raw and time.time() - float(raw) < self.settings.miner_validation_interval / 2:
            log.debug("checker pass skipped: a process of this log checked %.0fs ago", time.time() - float(raw))
            return
        await check_miners(self.ctx)
        self.ctx.log.set_state(_CHECKED_AT, repr(time.time()).encode())

    async def _sample(self) -> None:
        from leoma.services.sampler import sample_turn

        await sample_turn(self.ctx)

    async def _push(self) -> Any:
        # One publisher at a time per log: a process sharing it must not write an older checkpoint.
        async with log_lock(self.ctx.log.path, "mirror"):
            return await self._mirror_out.push()

    def _exclusive(self, role: str, body: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        """`body` as a round that only one process of this log runs at a time; the others skip it."""

        async def round_() -> Any:
            async with log_lock(self.ctx.log.path, role, wait=False) as held:
                if not held:
                    log.debug("%s round skipped: another process of this log is running it", role)
                    return None
                return await body()

        return round_

    async def _pull(self) -> None:
        block = self.chain_head
        async with log_lock(self.ctx.log.path, "mirror-in"):
            reports = await self._mirror_in.sync(block=block)
        for r in reports:
            if r.checkpoint_size is not None:
                self.published[r.peer] = r.checkpoint_size
            self.peer_problems[r.peer] = r.rejected or r.error

    async def _weights(self) -> None:
        from leoma.services import weight_setter

        if self.ctx.consensus.anchors.enabled:  # the anchored rule: anchor what the mirror published
            from leoma.mirror import anchors

            await anchors.anchor_step(self.ctx.log, self.ctx.chain, self._wallet, self.settings.netuid,
                                      self.ctx.consensus)
        result = await weight_setter.step(
            log_=self.ctx.log, chain=self.ctx.chain, wallet=self._wallet, netuid=self.settings.netuid,
            consensus=self.ctx.consensus, sync_peers=self._pull if self._mirror_in is not None else None,
        )
        if result.scored:
            log.info("epoch %s decided at block %s", result.epoch, result.block, extra={"epoch": result.epoch})

    async def _watch(self) -> None:
        """Chain staleness (reconnect) and loop heartbeats (say so loudly)."""
        try:
            head, _ = await self.ctx.chain.head()
        except ChainError as exc:
            log.warning("chain head unreadable: %s", exc)
            head = None
        now = time.monotonic()
        if head is not None and (self.chain_head is None or head > self.chain_head):
            self.chain_head = head
            self._head_seen_at = now
            if self.started_block is None:
                self.started_block = head
        stale_after = self.options.stale_blocks * self.options.block_seconds
        if now - self._head_seen_at > stale_after:
            log.error("the chain head has not moved past block %s for %.0fs (%d blocks' time): reconnecting",
                      self.chain_head, now - self._head_seen_at, self.options.stale_blocks,
                      extra={"block": self.chain_head})
            await self.ctx.chain.close()  # the next call opens a fresh connection
            self._head_seen_at = now
        wall = time.time()
        for lp in self.loops.values():
            if lp.name == "watchdog":
                continue
            if not lp.running:
                log.error("LOOP %s IS NOT RUNNING", lp.name, extra={"loop": lp.name})
            elif lp.stalled(wall) and not lp.stall_reported:
                lp.stall_reported = True
                log.error("LOOP %s HAS NOT FINISHED A ROUND FOR %.0fs (stalled?)", lp.name,
                          wall - (lp.last_beat or lp.started), extra={"loop": lp.name})

    # -- lifecycle ----------------------------------------------------------------------------

    async def _restore(self, stop: asyncio.Event) -> bool:
        """Restore the own bucket's tail before anything appends; retries while the bucket is down."""
        from leoma.errors import MirrorError, StorageError

        async def once() -> bool:
            async with log_lock(self.ctx.log.path, "mirror"):
                restored = await self._mirror_out.restore()
            if restored:
                log.warning("restored %d own events from the own bucket before starting", restored)
            return True

        def down(state: Any) -> None:
            log.error("cannot read the own bucket to restore the log (%s); retrying in %.0fs",
                      state.outcome.exception(), state.upcoming_sleep)

        if stop.is_set():
            return False
        policy = retry_policy.restore_policy(retry_on=StorageError, stopped=stop.is_set, before_sleep=down,
                                             sleep=self._restore_sleep or (lambda s: _sleep_or_stop(stop, s)))
        try:
            return await policy(once)
        except StorageError:  # `stop` came while the bucket was still down
            pass
        except MirrorError as exc:
            raise ConfigError(f"the own bucket and the local log disagree: {exc}") from None
        return False

    def _build_loops(self) -> None:
        s, o = self.settings, self.options
        plan: list[tuple[str, Callable[[], Awaitable[Any]], float]] = []
        # Processes sharing this log (split roles, or a stray second `serve`) take turns: a role's
        # round runs in one of them at a time. Publishing and importing wait for their turn.
        if "checker" in self.roles:
            plan.append(("checker", self._exclusive("checker", self._check), s.miner_validation_interval))
        if "sampler" in self.roles:
            plan.append(("sampler", self._exclusive("sampler", self._sample), s.sampler_poll_interval))
        if self._mirror_out is not None:
            plan.append(("mirror-out", self._push, o.mirror_interval))
        if self._mirror_in is not None:
            plan.append(("mirror-in", self._pull, o.mirror_interval))
        if "weights" in self.roles:
            plan.append(("weights", self._exclusive("weights", self._weights), o.weights_interval))
        plan.append(("watchdog", self._watch, min(5.0, o.block_seconds)))
        for name, body, interval in plan:
            # Back off at most 30 rounds' worth (5 minutes at most): a loop that recovers resumes soon.
            self.loops[name] = Loop(name, body, interval, max_backoff=min(300.0, 30 * interval))

    async def run(self, stop: asyncio.Event | None = None) -> int:
        """Run until `stop` is set; returns the exit status (0 after a clean stop)."""
        from leoma.mirror.inbound import MirrorIn, Peer
        from leoma.mirror.out import MirrorOut
        from leoma.services.context import load_signer, open_context

        stop = stop or asyncio.Event()
        required_settings(self.settings, self.roles)
        overrides = dict(self.overrides)
        signer = overrides.get("signer") or load_signer(self.settings)
        overrides["signer"] = signer
        peer_stores = overrides.pop("peers", None)
        own_peers = peer_stores is None
        if own_peers:
            peer_stores = _peer_stores(self.settings, signer.ss58_address)
        self._wallet = overrides.pop("wallet", None) or _wallet_for(self.settings, signer)
        try:
            async with open_context(self.settings, peers=peer_stores, **overrides) as ctx:
                self.ctx = ctx
                digest = ctx.consensus.digest
                log.info("validator %s starting (%s): roles %s, consensus %s, log %s", ctx.hotkey, self.process,
                         ",".join(self.roles), digest[:16], ctx.log.path)
                if ctx.own is not None and ("mirror-out" in self.roles or "sampler" in self.roles):
                    self._mirror_out = MirrorOut(ctx.log, ctx.own, ctx.signer, digest)
                    if not await self._restore(stop):
                        return 0
                if "mirror-in" in self.roles:
                    self._mirror_in = MirrorIn(ctx.log, [Peer(h, st) for h, st in ctx.peers.items()], digest,
                                               consensus=ctx.consensus)
                await self._read_chain_params()
                self._record_consensus()
                return await self._run_loops(stop)
        finally:
            if own_peers:
                for st in (peer_stores or {}).values():
                    with contextlib.suppress(Exception):
                        await st.close()

    def _record_consensus(self) -> None:
        # The log says which rules it runs under (whole content, once per digest), so anyone
        # holding it or its mirror can explain and replay its decisions with those rules.
        from leoma.log.consensus import record_consensus

        self.ctx.consensus.prompts()  # a prompt file that does not match its pin stops start-up
        record_consensus(self.ctx.log, self.ctx.consensus, block=self.chain_head or 0)

    async def _read_chain_params(self) -> None:
        try:
            self.tempo = await self.ctx.chain.tempo(self.settings.netuid) or self.tempo
            self.chain_head, _ = await self.ctx.chain.head()
            self.started_block = self.chain_head
        except ChainError as exc:
            log.warning("chain not reachable at start (%s); the loops will retry", exc)

    async def _run_loops(self, stop: asyncio.Event) -> int:
        self._build_loops()
        server = await self._start_metrics()
        for lp in self.loops.values():
            lp.started = time.time()
            lp.task = asyncio.create_task(supervise(lp, stop), name=f"leoma-{lp.name}")
        try:
            await stop.wait()
        finally:
            log.info("stopping: finishing the current step of every loop")
            for lp in self.loops.values():
                if lp.task is not None:
                    lp.task.cancel()
            await asyncio.gather(*(lp.task for lp in self.loops.values() if lp.task), return_exceptions=True)
            await self._flush()
            if server is not None:
                server.should_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._server_task, 5)  # type: ignore[arg-type]
        log.info("stopped cleanly")
        return 0

    async def _flush(self) -> None:
        """Push the own log once more, bounded by `flush_timeout`; the next start resumes otherwise."""
        if self._mirror_out is None:
            return
        self._flush_task = asyncio.create_task(self._push(), name="leoma-flush")
        try:
            report = await asyncio.wait_for(self._flush_task, self.options.flush_timeout)
            log.info("flushed the own log: %d events published", report.size)
        except TimeoutError:
            log.warning("flushing the own log took over %.0fs; the next start resumes it", self.options.flush_timeout)
        except (LeomaError, asyncio.CancelledError) as exc:
            log.warning("flushing the own log failed: %s; the next start resumes it", exc or "skipped")

    def skip_flush(self) -> None:
        """Abandon the final push (a second stop signal); the next start resumes it."""
        self.options = ServeOptions(**{**self.options.__dict__, "flush_timeout": 0.001})
        if self._flush_task is not None:
            self._flush_task.cancel()

    # -- /metrics and /healthz ----------------------------------------------------------------

    def app(self) -> Any:
        """The starlette app serving `/metrics` and `/healthz`."""
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        async def metrics(_request: Any) -> Any:
            return PlainTextResponse(render_prometheus(self.facts()), media_type=METRICS_CONTENT_TYPE)

        async def healthz(_request: Any) -> Any:
            ok, problems = health(self.facts())
            return JSONResponse({"ok": ok, "problems": problems}, status_code=200 if ok else 503)

        return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)])

    async def _start_metrics(self) -> Any:
        addr = self.options.metrics_addr
        if addr.lower() == "off":
            return None
        import uvicorn

        host, port = parse_addr(addr)
        server = uvicorn.Server(uvicorn.Config(self.app(), host=host, port=port, log_level="warning",
                                               lifespan="off", access_log=False))
        # Our handlers own SIGINT/SIGTERM: uvicorn would otherwise take them over and re-raise them on exit.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._server_task = asyncio.create_task(server.serve(), name="leoma-metrics")
        while not server.started:
            if self._server_task.done():
                exc = self._server_task.exception()
                raise ConfigError(f"cannot serve metrics on {addr} (LEOMA_METRICS_ADDR): {exc or 'the server exited'}")
            await asyncio.sleep(0.01)
        bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
        self.metrics_url = f"http://{bound_host}:{bound_port}"
        log.info("metrics on %s/metrics and %s/healthz", self.metrics_url, self.metrics_url)
        state = self.settings.state_path
        with contextlib.suppress(OSError):
            state.mkdir(parents=True, exist_ok=True)
            metrics_url_file(state, self.process).write_text(self.metrics_url + "\n")
        return server


async def run_until_signalled(validator: Validator) -> int:
    """Run `validator` until SIGINT or SIGTERM; a second signal skips the final flush."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("received %s: stopping (send again to skip the final flush)", signal.Signals(signum).name)
            stop.set()
        else:
            log.warning("second signal: skipping the final flush")
            validator.skip_flush()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await validator.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
