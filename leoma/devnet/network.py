"""`leoma devnet`: a whole subnet on one machine, with no keys and no internet.

    net = Devnet.create(Path("devnet"), DevnetConfig())     # or Devnet.resume(Path("devnet"))
    with net.running():                                     # world + validators started
        net.wait(epochs=2, progress=print)
    summary = net.summary()                                 # leaderboard, weights, agreement

What is in `--dir` (and what `--resume` continues):

    devnet.json             the DevnetConfig and the chain's start, so a resume rebuilds the same world
    consensus.toml          short intervals; every validator runs it (LEOMA_CONSENSUS, one digest)
    chain.jsonl             the simulated chain (realtime clock): owner, validators, miners, commitments
    source/                 the source bucket: generated clips and the owner's allowlist
    validatorK/events.db    validator K's event log (leoma replay/explain/export/verify work on it)
    validatorK/bucket/      validator K's own bucket (segments, checkpoint, the seed's task layout)
    validatorK/serve.log    validator K's `leoma serve` output (process mode)
    api/api.db              the owner's API log: the validators registered by the owner, their imported mirrors
    api/api.log             the owner's `leoma api` output (the dashboard is at `Devnet.api_url`)

Keys are dev URIs: `//Owner`, `//Validator1..N`, `//Miner1..M` (miners in `DevnetConfig.miners`
order; the copycat commits after the faithful miner, so duplicate detection keeps the faithful).
The world (Chutes, the reference miners, Hugging Face, the Gemini stand-in) runs in this
process; each validator is a separate `leoma serve` process unless `processes=False`. The
owner's API (`leoma api`, the dashboard) is one more process: the owner registered every
allowlisted validator in its log, and it imports their directory buckets as its peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from leoma.devnet import watch
from leoma.devnet.config import (
    OWNER_URI,
    DevnetConfig,
    Progress,
    consensus_toml,
    devnet_consensus,
    leoma_executable,
)
from leoma.errors import ConfigError
from leoma.log.consensus import Consensus

__all__ = ["Devnet"]


def _kp(uri: str) -> Any:
    from leoma.adapters.signing import keypair_from_uri

    return keypair_from_uri(uri)


def _wallet(kp: Any) -> Any:
    return SimpleNamespace(hotkey=kp, coldkey=kp, coldkeypub=kp)


class Node(msgspec.Struct, kw_only=True):
    """One devnet validator: its name, dev URI, hotkey and the consensus file it runs."""

    name: str
    uri: str
    hotkey: str
    consensus: str


class _State(msgspec.Struct, kw_only=True):
    config: DevnetConfig
    nodes: list[Node]
    miners: dict[str, str]
    """Behaviour -> miner hotkey."""
    uids: dict[str, int]
    allowlist: list[str]
    behaviours: dict[str, str] = {}
    """Miner name -> behaviour, for miners added while running (`Devnet.add_miner`); others are named by it."""


class Devnet:
    """A devnet directory and, while running, its world and validators."""

    def __init__(self, root: Path, state: _State) -> None:
        self.root = Path(root).resolve()
        self.state = state
        self.config = state.config
        self.world: Any = None
        self.sim: Any = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._inproc: dict[str, tuple[Any, asyncio.Event, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: Any = None
        self.api: subprocess.Popen[bytes] | None = None
        self.api_url = ""
        """The owner's API and dashboard (`http://127.0.0.1:PORT/`) once started; kept after it stops."""

    # -- layout ---------------------------------------------------------------------------

    @property
    def consensus_path(self) -> Path:
        return self.root / "consensus.toml"

    @property
    def chain_path(self) -> Path:
        return self.root / "chain.jsonl"

    @property
    def nodes(self) -> list[Node]:
        return self.state.nodes

    @property
    def validators(self) -> list[Node]:
        """The allowlisted validators (the ones that must agree)."""
        return [n for n in self.state.nodes if n.hotkey in self.state.allowlist]

    def node(self, name: str) -> Node:
        return next(n for n in self.state.nodes if n.name == name)

    def node_dir(self, node: Node | str) -> Path:
        return self.root / (node if isinstance(node, str) else node.name)

    def db_path(self, node: Node | str) -> Path:
        return self.node_dir(node) / "events.db"

    def bucket_path(self, node: Node | str) -> Path:
        return self.node_dir(node) / "bucket"

    @property
    def api_dir(self) -> Path:
        return self.root / "api"

    def miner_name(self, hotkey: str) -> str:
        """A miner's behaviour name (`owner` for the owner, whose allowlist commitment is no model)."""
        if hotkey == _kp(OWNER_URI).ss58_address:
            return "owner"
        return next((b for b, h in self.state.miners.items() if h == hotkey), hotkey[:12])

    # -- creation ---------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, config: DevnetConfig | None = None) -> Devnet:
        """Lay out a new devnet in `root`: chain, keys, consensus, clips, allowlist, commitments."""
        config = config or DevnetConfig()
        root = Path(root).resolve()
        if (root / "devnet.json").exists():
            raise ConfigError(f"a devnet already exists in {root}: continue it with --resume or choose another --dir")
        if config.validators < 1 or not config.miners:
            raise ConfigError("a devnet needs at least one validator and one miner")
        if "copycat" in config.miners and "faithful" not in config.miners:
            raise ConfigError("the copycat miner copies the faithful one: include faithful")
        root.mkdir(parents=True, exist_ok=True)
        from leoma.adapters.simchain import SimChain

        consensus = devnet_consensus(config)
        cls._write_consensus(root / "consensus.toml", consensus, config)
        owner = _kp(OWNER_URI)
        # Start the chain so the first task boundary comes soon after the validators are up.
        sim = SimChain.create(root / "chain.jsonl", owner=owner.ss58_address, block_time=config.block_time,
                              clock="realtime", netuid=config.netuid, tempo=config.tempo,
                              start_block=config.start_block,
                              weights_rate_limit=max(1, config.interval // 4), commit_reveal=config.commit_reveal)
        sim.register(owner.ss58_address, stake=10**12, validator_permit=True)
        nodes: list[Node] = []
        for i in range(1, config.validators + config.wrong_consensus + 1):
            kp = _kp(f"//Validator{i}")
            wrong = i > config.validators
            nodes.append(Node(name=f"validator{i}", uri=f"//Validator{i}", hotkey=kp.ss58_address,
                               consensus="consensus-wrong.toml" if wrong else "consensus.toml"))
            sim.register(kp.ss58_address, stake=10**11, validator_permit=True)
        if config.wrong_consensus:
            other = msgspec.structs.replace(consensus, ranking=msgspec.structs.replace(
                consensus.ranking, dominance_threshold="1/10"))
            cls._write_consensus(root / "consensus-wrong.toml", other, config, note="A DIFFERENT consensus (tests).")
        miners: dict[str, str] = {}
        uids: dict[str, int] = {}
        for i, behaviour in enumerate(config.miners, start=1):
            hk = _kp(f"//Miner{i}").ss58_address
            miners[behaviour] = hk
            uids[behaviour] = sim.register(hk)
        allowlist = sorted(n.hotkey for n in nodes[:config.validators])
        state = _State(config=config, nodes=nodes, miners=miners, uids=uids, allowlist=allowlist)
        net = cls(root, state)
        net.sim = sim
        asyncio.run(net._genesis())
        (root / "devnet.json").write_bytes(msgspec.json.format(msgspec.json.encode(state)))
        return net

    @staticmethod
    def _write_consensus(path: Path, consensus: Consensus, config: DevnetConfig, note: str = "") -> None:
        text = consensus_toml(consensus, comment=(
            "The devnet's consensus: the packaged one with short intervals (written by `leoma devnet`).\n"
            f"digest {consensus.digest}\n{note}").strip())
        path.write_text(text)
        from leoma.log.consensus import load_consensus

        if load_consensus(path).digest != consensus.digest:  # the writer must round-trip exactly
            raise ConfigError(f"{path} does not read back to the devnet's consensus")

    async def _genesis(self) -> None:
        from leoma.adapters.chain import Chain, commitment_payload
        from leoma.adapters.directory import DirectoryStore
        from leoma.devnet.clips import render_source
        from leoma.mirror.allowlist import publish_allowlist

        cfg = self.config
        source = DirectoryStore(self.root / "source")
        directions = ("right", "left", "down", "up")
        for i in range(cfg.clips):
            clip = await asyncio.to_thread(render_source, 20 + i, shots=((directions[i % 4], 7.5),),
                                           width=416, height=240, speed=2)
            await source.put(f"devnet/clip-{i}.mp4", clip.video, content_type="video/mp4")
        world = self._world()
        async with Chain(f"sim:{self.chain_path}") as chain:
            await publish_allowlist(source, chain, _wallet(_kp(OWNER_URI)), cfg.netuid, self.state.allowlist,
                                    cfg.interval)
            for i, behaviour in enumerate(cfg.miners, start=1):  # in order: faithful before the copycat
                m = world.miners[behaviour]
                await chain.set_timelocked_commitment(_wallet(_kp(f"//Miner{i}")), cfg.netuid,
                                                      commitment_payload(m.repo_id, m.revision, m.chute_id))

    @classmethod
    def resume(cls, root: Path) -> Devnet:
        """Open the devnet in `root` to continue it."""
        root = Path(root).resolve()
        path = root / "devnet.json"
        if not path.is_file():
            raise ConfigError(f"no devnet in {root}: run `leoma devnet --dir {root}` first")
        state = msgspec.json.decode(path.read_bytes(), type=_State)
        net = cls(root, state)
        from leoma.adapters.simchain import SimChain

        net.sim = SimChain.open(net.chain_path)
        return net

    def _world(self) -> Any:
        from leoma.devnet.world import World

        world = World(frames=self.config.frames, slow_seconds=self.config.slow_seconds)
        for name, hotkey in self.state.miners.items():
            behaviour = self.state.behaviours.get(name, name)
            world.add_miner(behaviour, name=name, hotkey=hotkey, copies="faithful" if behaviour == "copycat" else "")
        world.bucket_roots = (self.root,)  # where a source_clip miner finds the validators' public clips
        return world

    def add_miner(self, name: str, hotkey: str, *, coldkey: str | None = None, behaviour: str = "faithful") -> Any:
        """A new miner joins the running devnet: registered on the chain, its chute and repo in the world.

        What a real miner gets from registering and deploying; it still has to commit (`leoma
        miner commit`). Returns the world's `ReferenceMiner` (repo id, revision, chute id).
        """
        if name in self.state.miners:
            raise ConfigError(f"the devnet already has a miner named {name!r}: choose another name")
        if behaviour == "copycat":
            raise ConfigError("a miner added while running cannot be a copycat: choose another behaviour")
        uid = self.sim.register(hotkey, coldkey)
        self.state.miners[name] = hotkey
        self.state.uids[name] = uid
        self.state.behaviours[name] = behaviour
        (self.root / "devnet.json").write_bytes(msgspec.json.format(msgspec.json.encode(self.state)))
        if self.world is not None:
            return self.world.add_miner(behaviour, name=name, hotkey=hotkey)
        from leoma.devnet.world import World

        return World().add_miner(behaviour, name=name, hotkey=hotkey)  # the same ids the world will serve

    # -- running ----------------------------------------------------------------------------

    def env(self, node: Node) -> dict[str, str]:
        """The environment of `node`'s `leoma serve` (every setting it needs, nothing secret)."""
        cfg = self.config
        url = self.world.url
        peers = [{"hotkey": n.hotkey, "url": f"file://{self.bucket_path(n)}"} for n in self.nodes]
        return {
            "NETWORK": f"sim:{self.chain_path}", "NETUID": str(cfg.netuid), "LEOMA_DEV_KEY": node.uri,
            "GEMINI_API_KEY": "devnet", "LEOMA_GEMINI_BASE_URL": url, "CHUTES_API_URL": url,
            "LEOMA_CHUTE_URL_TEMPLATE": self.world.generate_url_template, "LEOMA_HF_ENDPOINT": url,
            "LEOMA_SOURCE_URL": f"file://{self.root / 'source'}",
            "LEOMA_OWN_BUCKET_URL": f"file://{self.bucket_path(node)}",
            "LEOMA_DB": str(self.db_path(node)), "LEOMA_STATE_DIR": str(self.node_dir(node)),
            "LEOMA_CONSENSUS": str(self.root / node.consensus), "PEER_VALIDATORS": json.dumps(peers),
            "REQUEST_TIMEOUT": str(cfg.request_timeout), "MAX_CONCURRENT_MINERS": "8",
            "MINER_VALIDATION_INTERVAL": str(max(5.0, cfg.interval * cfg.block_time)),
            "SAMPLER_POLL_INTERVAL": str(cfg.poll_seconds), "LEOMA_MIRROR_INTERVAL": str(cfg.mirror_seconds),
            "LEOMA_WEIGHTS_INTERVAL": str(cfg.poll_seconds), "LEOMA_METRICS_ADDR": "127.0.0.1:0",
            "LEOMA_LOG_FORMAT": "text", "LOG_LEVEL": "INFO", "LEOMA_FLUSH_TIMEOUT": "10",
        }

    def start_world(self) -> None:
        """Serve the world (Chutes, miners, HF, Gemini) from a thread of this process."""
        if self.world is None or not self.world.url:
            self.world = self._world().start_thread()

    def start(self, *, processes: bool = True, only: list[str] | None = None, api: bool = True) -> None:
        """Start the world, every validator (or the ones named in `only`) and the owner's API."""
        self.start_world()
        if api and only is None:
            self.start_api()
        for node in self.nodes:
            if only is not None and node.name not in only:
                continue
            self.node_dir(node).mkdir(parents=True, exist_ok=True)
            if processes:
                self._spawn(node)
            else:
                self._start_inproc(node)

    def _spawn(self, node: Node) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEOMA_", "R2_", "PEER_"))}
        env.update(self.env(node))
        env.setdefault("PYTHONUNBUFFERED", "1")
        logf = open(self.node_dir(node) / "serve.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[node.name] = subprocess.Popen(
            [leoma_executable(), "serve"], env=env, cwd=self.node_dir(node),
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()

    def _start_inproc(self, node: Node) -> None:
        """Run a validator in a background event loop of this process (no-processes mode)."""
        import threading

        from leoma.ops.config import Settings
        from leoma.services.serve import ServeOptions, Validator

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="leoma-devnet", daemon=True)
            self._thread.start()
        env = self.env(node)
        settings = Settings.load(env=env, dotenv=False)
        options = ServeOptions(metrics_addr="off", mirror_interval=self.config.mirror_seconds,
                               weights_interval=self.config.poll_seconds, flush_timeout=10.0)
        validator = Validator(settings, options=options)

        async def make() -> tuple[asyncio.Event, Any]:
            stop = asyncio.Event()
            return stop, asyncio.ensure_future(validator.run(stop))

        stop, task = asyncio.run_coroutine_threadsafe(make(), self._loop).result()
        self._inproc[node.name] = (validator, stop, task)

    def stop_node(self, name: str, *, timeout: float = 60.0) -> int | None:
        """Stop one validator gracefully (SIGTERM); its exit status."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
        entry = self._inproc.pop(name, None)
        if entry is not None and self._loop is not None:
            _validator, stop, task = entry
            self._loop.call_soon_threadsafe(stop.set)

            async def wait() -> int:
                return int(await task)

            return asyncio.run_coroutine_threadsafe(wait(), self._loop).result(timeout)
        return None

    def kill_node(self, name: str) -> None:
        """kill -9 a validator process (a crash, for the soak tests)."""
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    # -- the owner's API ----------------------------------------------------------------------

    def api_env(self, port: int) -> dict[str, str]:
        """The environment of the owner's `leoma api`: its log, the validators' buckets, the owner as admin."""
        cfg = self.config
        peers = [{"hotkey": n.hotkey, "url": f"file://{self.bucket_path(n)}"} for n in self.validators]
        return {
            "API_HOST": "127.0.0.1", "API_PORT": str(port), "LEOMA_API_DB": str(self.api_dir / "api.db"),
            "LEOMA_STATE_DIR": str(self.api_dir), "LEOMA_CONSENSUS": str(self.consensus_path),
            "PEER_VALIDATORS": json.dumps(peers), "ADMIN_HOTKEYS": _kp(OWNER_URI).ss58_address,
            "SAMPLING_ROTATION_INTERVAL": str(cfg.interval),
            "LEOMA_API_SYNC_SECONDS": str(max(1, round(cfg.mirror_seconds * 2))),
            "MINER_VALIDATION_INTERVAL": str(max(5, round(cfg.interval * cfg.block_time))),
        }

    def register_validators_with_api(self) -> None:
        """The owner registers every allowlisted validator in the API's log (as `leoma db add-validator` does).

        The API imports the mirrors of registered validators only; already registered ones are left alone.
        """
        from leoma.api.settings import DEFAULT_API_ID
        from leoma.api.state import VALIDATOR_ADD, ApiState
        from leoma.log.eventlog import EventLog
        from leoma.log.events import AdminActed

        self.api_dir.mkdir(parents=True, exist_ok=True)
        owner = _kp(OWNER_URI).ss58_address
        chain = self.sim.state()
        consensus = devnet_consensus(self.config)
        with EventLog(self.api_dir / "api.db", own=DEFAULT_API_ID) as log:
            state = ApiState(log, own=DEFAULT_API_ID, consensus=consensus)
            state.refresh()
            for node in self.validators:
                if node.hotkey in state.registry:
                    continue
                uid = chain.uid(node.hotkey)
                body = AdminActed(admin=owner, action=VALIDATOR_ADD, target=node.hotkey,
                                  uid=-1 if uid is None else uid, stake_rao=10**11)
                log.append(body, key=f"admin/{VALIDATOR_ADD}/{node.hotkey}/devnet", block=chain.block)

    def start_api(self, *, timeout: float = 60.0, port: int = 0) -> str:
        """Start the owner's API (`leoma api`, a process logging to api/api.log); its URL once it answers.

        `port` 0 picks a free one. Works on a finished devnet too (`leoma dashboard --dir`):
        the API reads the validators' buckets, which outlive their processes.
        """
        if self.api is not None and self.api.poll() is None:
            return self.api_url
        import socket

        import httpx

        self.register_validators_with_api()
        if not port:
            # A free port for the child to bind (the API's log line and the dashboard need a fixed URL).
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEOMA_", "R2_", "PEER_", "API_"))}
        env.update(self.api_env(port))
        env.setdefault("PYTHONUNBUFFERED", "1")
        logf = open(self.api_dir / "api.log", "ab")  # noqa: SIM115 - owned by the process
        self.api = subprocess.Popen([leoma_executable(), "api"], env=env, cwd=self.api_dir,
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise ConfigError(f"the owner's API exited with status {self.api.returncode}: "
                                  f"see {self.api_dir / 'api.log'}")
            try:
                if httpx.get(url + "health", timeout=2.0).status_code == 200:
                    self.api_url = url
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop_api()
        raise ConfigError(f"the owner's API did not answer on {url} within {timeout:.0f} s: "
                          f"see {self.api_dir / 'api.log'}")

    def stop_api(self, *, timeout: float = 30.0) -> int | None:
        """Stop the owner's API (SIGTERM); its exit status. `api_url` is kept for the summary."""
        proc, self.api = self.api, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def stop(self, *, keep_api: bool = False) -> dict[str, int | None]:
        """Stop every validator, then the API and the world; each validator's exit status.

        With `keep_api` the owner's API (the dashboard) stays up over the finished devnet: it
        keeps serving what it imported from the validators' buckets until `stop_api()`.
        """
        codes = {name: self.stop_node(name) for name in list(self.procs) + list(self._inproc)}
        if not keep_api:
            self.stop_api()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop = None
        if self.world is not None:
            self.world.stop_thread()
            self.world = None
        return codes

    @contextlib.contextmanager
    def running(self, *, processes: bool = True, api: bool = True) -> Iterator[Devnet]:
        """Start everything; stop everything on exit (also after an error or Ctrl-C)."""
        self.start(processes=processes, api=api)
        try:
            yield self
        finally:
            self.stop()

    def serve_api_until_interrupted(self, *, poll: float = 0.5) -> int | None:
        """Block while the owner's API runs; Ctrl-C (or SIGTERM) stops it. Its exit status.

        Only for a person at a terminal: `leoma devnet` calls it when stdin is a TTY (or with
        `--serve`), never from tests or CI, so nothing non-interactive can wait here forever.
        """
        previous = signal.getsignal(signal.SIGTERM)

        def terminate(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, terminate)
        try:
            while self.api is not None and self.api.poll() is None:
                time.sleep(poll)
        except KeyboardInterrupt:
            pass
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
        return self.stop_api()

    def dead(self) -> dict[str, int]:
        """Validator processes that exited on their own, with their status."""
        return {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}

    # -- looking at it (leoma.devnet.watch) -------------------------------------------------

    def decisions(self, node: Node) -> dict[int, Any]:
        """`node`'s own epoch decisions by epoch."""
        return watch.decisions(self, node)

    def progress(self) -> Progress:
        """Block, turn, tasks, verdicts, mirror lag and decisions, read from the logs."""
        return watch.progress(self)

    def target_epoch(self, epochs: int) -> int:
        """The epoch by whose decision `epochs` epochs with a full window have been scored."""
        return watch.target_epoch(self, epochs)

    def wait(self, epochs: int, *, progress: Callable[[Progress], None] | None = None, timeout: float | None = None,
             poll: float = 1.0) -> bool:
        """Wait until every validator decided the target epoch; False on timeout or a dead validator."""
        cfg = self.config
        deadline = time.monotonic() + (timeout if timeout is not None else
                                       (epochs + 3) * cfg.epoch_length * cfg.block_time + 120)
        target: int | None = None
        while time.monotonic() < deadline:
            if self.dead():
                return False
            if target is None and all(self.db_path(n).is_file() for n in self.validators):
                target = self.target_epoch(epochs)
            snap = msgspec.structs.replace(self.progress(), target=-1 if target is None else target)
            if progress is not None:
                progress(snap)
            if target is not None and all(target in self.decisions(n) for n in self.validators):
                return True
            time.sleep(poll)
        return False

    def wait_for(self, predicate: Callable[[], bool], timeout: float, poll: float = 0.5) -> bool:
        """Poll `predicate` until true or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll)
        return False

    def summary(self) -> dict[str, Any]:
        """Each validator's decisions, the leaderboard of the latest agreed epoch, and agreement."""
        return watch.summary(self)
