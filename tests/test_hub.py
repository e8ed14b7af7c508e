"""leoma.adapters.hub: the weights hash (seed §2.6) through the real huggingface_hub client."""

from __future__ import annotations

import types

import pytest

from leoma.adapters.hub import HubClient, _weights_from_info, hash_weight_shas
from leoma.devnet.world import World
from leoma.errors import AdapterError


@pytest.fixture(scope="module")
def world():
    w = World()
    w.add_miner("faithful", name="faithful", hotkey="5FhotKEY")
    w.add_miner("copycat", name="copycat", copies="faithful")
    w.add_miner("static", name="static")
    w.start_thread()
    yield w
    w.stop_thread()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _hub_requests(world: World) -> int:
    return sum(1 for r in world.requests if r[1].startswith("/api/models/"))


def test_seed_vector():
    assert hash_weight_shas({"bb", "aa"}) == "486b34250bd4400c0aa90516fce9a9c0633a922eb40d0828cf299bc4e825acf4"


async def test_model_hash_of_a_miner(world):
    m = world.miners["faithful"]
    assert m.repo_id.endswith("-5fhotkey")
    digest, sha = await HubClient(endpoint=world.url).model_hash(m.repo_id, m.revision)
    assert sha == m.revision
    assert digest == hash_weight_shas(m.lfs_shas)


async def test_branch_name_resolves_to_the_commit(world):
    m = world.miners["static"]
    _, sha = await HubClient(endpoint=world.url).model_hash(m.repo_id, "main")
    assert sha == m.revision  # so a commitment naming "main" fails the revision check


async def test_copycat_shares_the_hash(world):
    hub = HubClient(endpoint=world.url)
    a = await hub.model_hash(world.miners["faithful"].repo_id, world.miners["faithful"].revision)
    b = await hub.model_hash(world.miners["copycat"].repo_id, world.miners["copycat"].revision)
    assert a[0] == b[0] and a[1] != b[1]


@pytest.mark.parametrize("repo, rev, reason", [
    ("devnet/nobody", "a" * 40, "RepositoryNotFound"),
    ("devnet/leoma-static", "b" * 40, "RevisionNotFound"),
])
async def test_unknown_repo_or_revision(world, repo, rev, reason):
    with pytest.raises(AdapterError, match=reason):
        await HubClient(endpoint=world.url).model_hash(repo, rev)


async def test_success_cached_for_an_hour(world):
    clock = Clock()
    m = world.miners["static"]
    hub = HubClient(endpoint=world.url, clock=clock)
    before = _hub_requests(world)
    await hub.model_hash(m.repo_id, m.revision)
    clock.now += 3599
    await hub.model_hash(m.repo_id, m.revision)
    assert _hub_requests(world) - before == 1
    clock.now += 2
    await hub.model_hash(m.repo_id, m.revision)
    assert _hub_requests(world) - before == 2


async def test_failures_cached_only_briefly(world):
    """Fix of seed §12.14: a failed lookup is not remembered for an hour."""
    clock = Clock()
    hub = HubClient(endpoint=world.url, clock=clock, failure_ttl=60)
    before = _hub_requests(world)
    for _ in range(2):
        with pytest.raises(AdapterError):
            await hub.model_hash("devnet/nobody", "a" * 40)
    assert _hub_requests(world) - before == 1
    clock.now += 61
    with pytest.raises(AdapterError):
        await hub.model_hash("devnet/nobody", "a" * 40)
    assert _hub_requests(world) - before == 2


async def test_token_is_sent_as_bearer(world):
    m = world.miners["faithful"]
    await HubClient(endpoint=world.url, token="hf_devnet").model_hash(m.repo_id, m.revision)
    last = [r for r in world.requests if r[1].startswith("/api/models/")][-1]
    assert last[2]["authorization"] == "Bearer hf_devnet"


async def test_unreachable_hub_is_an_adapter_error():
    with pytest.raises(AdapterError, match="failed"):
        await HubClient(endpoint="http://127.0.0.1:9").model_hash("a/b", "c" * 40)


def _info(sha, *files):
    siblings = [types.SimpleNamespace(rfilename=name, lfs=types.SimpleNamespace(sha256=lfs) if lfs else None)
                for name, lfs in files]
    return types.SimpleNamespace(sha=sha, siblings=siblings)


def test_only_lfs_weight_files_count():
    info = _info("s", ("a/w.safetensors", "bb"), ("x.bin", "aa"), ("README.md", "cc"), ("y.pt", None))
    assert _weights_from_info(info, "r", "s") == (hash_weight_shas({"aa", "bb"}), "s")


def test_no_weights_or_no_sha_is_an_error():
    with pytest.raises(AdapterError, match="no LFS weight files"):
        _weights_from_info(_info("s", ("README.md", "cc")), "r", "s")
    with pytest.raises(AdapterError, match="no commit sha"):
        _weights_from_info(_info(None, ("w.bin", "aa")), "r", "s")
