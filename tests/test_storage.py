"""One ObjectStore contract, run against a directory and against S3 (a moto subprocess)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from leoma.errors import ConfigError, ObjectExists, ObjectNotFound, ObjectTooLarge, StorageError
from leoma.adapters.storage import DEFAULT_CONTENT_TYPE, ObjectInfo, ObjectStore, open_store, validate_key
from leoma.adapters.directory import DirectoryStore
from leoma.adapters.s3 import S3Store
from tests.storage_fixtures import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, moto_endpoint, s3_bucket  # noqa: F401

PAGE = 4  # a small S3 page size, so paging is exercised with a handful of keys


def make_s3(endpoint: str, bucket: str, **options: object) -> S3Store:
    settings: dict[str, object] = {"base_delay": 0.001, "max_delay": 0.01, "page_size": PAGE}
    settings.update(options)
    return S3Store(
        bucket, endpoint_url=endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **settings  # type: ignore[arg-type]
    )


@pytest.fixture(params=["directory", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    """Each contract test runs once per backend."""
    st: ObjectStore
    if request.param == "directory":
        st = DirectoryStore(tmp_path / "bucket")
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        s3 = make_s3(endpoint, request.getfixturevalue("s3_bucket"))
        await s3.ensure_bucket()
        st = s3
    async with st:
        yield st


async def keys_of(st: ObjectStore, prefix: str = "", **kw: object) -> list[str]:
    return [info.key async for info in st.list(prefix, **kw)]  # type: ignore[arg-type]


# ---- contract -----------------------------------------------------------------------------


async def test_store_satisfies_protocol(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


async def test_put_get_round_trip_and_head(store: ObjectStore) -> None:
    data = b"\x00\x01 video bytes \xff" * 100
    await store.put("7/original_clip.mp4", data, content_type="video/mp4")
    assert await store.get("7/original_clip.mp4") == data
    info = await store.head("7/original_clip.mp4")
    assert info == ObjectInfo(
        key="7/original_clip.mp4", size=len(data), etag=hashlib.md5(data).hexdigest(), content_type="video/mp4"
    )


async def test_put_without_content_type_reports_the_default(store: ObjectStore) -> None:
    await store.put("a.bin", b"x")
    info = await store.head("a.bin")
    assert info is not None and info.content_type == DEFAULT_CONTENT_TYPE


async def test_missing_object(store: ObjectStore) -> None:
    assert await store.head("nope/none.json") is None
    with pytest.raises(ObjectNotFound, match="nope/none.json"):
        await store.get("nope/none.json")
    with pytest.raises(ObjectNotFound):
        await store.get("nope/none.json", max_bytes=10)


async def test_plain_put_overwrites(store: ObjectStore) -> None:
    await store.put("k", b"first")
    await store.put("k", b"second")
    assert await store.get("k") == b"second"
    info = await store.head("k")
    assert info is not None and info.size == 6 and info.etag == hashlib.md5(b"second").hexdigest()


async def test_write_once_refuses_a_taken_key(store: ObjectStore) -> None:
    await store.put("seg/0000000001-0000000010", b"first", if_absent=True)
    with pytest.raises(ObjectExists, match="seg/0000000001-0000000010"):
        await store.put("seg/0000000001-0000000010", b"second", if_absent=True)
    assert await store.get("seg/0000000001-0000000010") == b"first"


async def test_write_once_race_has_exactly_one_winner(store: ObjectStore) -> None:
    async def attempt(i: int) -> int | None:
        try:
            await store.put("race/key", f"writer {i}".encode(), if_absent=True)
            return i
        except ObjectExists:
            return None

    results = await asyncio.gather(*(attempt(i) for i in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert await store.get("race/key") == f"writer {winners[0]}".encode()


KEYS = ["1-x", "1/a", "1/b", "10/a", "2/a", "2/b", "2/c", "20", "2a", "b/é", "b/z"]


async def test_list_is_lexicographic_and_paged(store: ObjectStore) -> None:
    for key in reversed(KEYS):
        await store.put(key, key.encode())
    assert await keys_of(store) == sorted(KEYS)
    infos = [i async for i in store.list("2/")]
    assert [i.key for i in infos] == ["2/a", "2/b", "2/c"]
    assert all(i.size == 3 and i.etag == hashlib.md5(i.key.encode()).hexdigest() for i in infos)
    assert await keys_of(store, "2") == ["2/a", "2/b", "2/c", "20", "2a"]
    assert await keys_of(store, "1/") == ["1/a", "1/b"]
    assert await keys_of(store, "missing/") == []


async def test_list_start_after_and_limit(store: ObjectStore) -> None:
    for key in KEYS:
        await store.put(key, b".")
    assert await keys_of(store, start_after="2/a") == [k for k in sorted(KEYS) if k > "2/a"]
    assert await keys_of(store, "2/", start_after="2/a") == ["2/b", "2/c"]
    # A poll that is up to date: nothing after the last key.
    assert await keys_of(store, start_after=sorted(KEYS)[-1]) == []
    assert await keys_of(store, limit=5) == sorted(KEYS)[:5]
    assert await keys_of(store, start_after="1/b", limit=PAGE + 1) == sorted(KEYS)[3 : 3 + PAGE + 1]
    assert await keys_of(store, limit=0) == []


async def test_delete(store: ObjectStore) -> None:
    await store.put("d/one", b"1")
    await store.put("d/two", b"2")
    await store.delete("d/one")
    assert await store.head("d/one") is None
    assert await keys_of(store) == ["d/two"]
    await store.delete("d/one")  # absent: not an error
    await store.delete("d/two")
    assert await keys_of(store) == []
    await store.put("d", b"a key where a folder was", if_absent=True)
    assert await store.get("d") == b"a key where a folder was"


async def test_max_bytes(store: ObjectStore) -> None:
    await store.put("big", b"x" * 100)
    with pytest.raises(ObjectTooLarge, match="big"):
        await store.get("big", max_bytes=99)
    assert await store.get("big", max_bytes=100) == b"x" * 100


async def test_presign_get(store: ObjectStore) -> None:
    await store.put("5/first_frame.png", b"\x89PNG fake", content_type="image/png")
    url = await store.presign_get("5/first_frame.png", expires=600)
    if url.startswith("file://"):
        with urllib.request.urlopen(url) as resp:
            assert resp.read() == b"\x89PNG fake"
    else:
        async with httpx.AsyncClient() as client:
            resp = await client.get(url)
        assert resp.status_code == 200 and resp.content == b"\x89PNG fake"


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../escape",
    "a/..",
    "./a",
    "a//b",
    "a/",
    "a\\..\\b",
    "nul\x00byte",
    "line\nbreak",
    "del\x7f",
    "x" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_path_tricks_are_refused(store: ObjectStore, key: str, tmp_path: Path) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    for call in (
        store.put(key, b"evil"),
        store.put(key, b"evil", if_absent=True),
        store.get(key),
        store.head(key),
        store.delete(key),
        store.presign_get(key),
    ):
        with pytest.raises(StorageError, match="invalid object key") as err:
            await call
        assert repr(key)[:12] in str(err.value)  # the message names the key
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert await keys_of(store) == []


@pytest.mark.parametrize("prefix", ["/", "../", "a/../", "a\\", "\x00"])
async def test_bad_list_prefix_is_refused(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        await keys_of(store, prefix)


def test_validate_key_accepts_ordinary_keys() -> None:
    for key in ["a", "12/evaluation_results/5Grw.json", "seg/a.b", "x..y/..z", "é/ü"]:
        assert validate_key(key) == key


# ---- directory store specifics -------------------------------------------------------------


async def test_directory_store_hides_its_own_files_and_reserves_their_folder(tmp_path: Path) -> None:
    st = DirectoryStore(tmp_path)
    await st.put("a/b", b"1", content_type="text/plain")
    assert await keys_of(st) == ["a/b"]
    assert (tmp_path / "a" / "b").read_bytes() == b"1"
    with pytest.raises(StorageError, match="reserved"):
        await st.put(".leoma-store/meta/a/b.json", b"{}")


async def test_directory_store_describes_hand_placed_files(tmp_path: Path) -> None:
    st = DirectoryStore(tmp_path)
    await st.put("k", b"old", content_type="text/plain")
    (tmp_path / "k").unlink()
    (tmp_path / "k").write_bytes(b"replaced by hand")  # new inode: the sidecar no longer applies
    info = await st.head("k")
    assert info == ObjectInfo(
        key="k", size=16, etag=hashlib.md5(b"replaced by hand").hexdigest(), content_type=DEFAULT_CONTENT_TYPE
    )


async def test_directory_store_key_and_folder_clash_is_a_clear_error(tmp_path: Path) -> None:
    st = DirectoryStore(tmp_path)
    await st.put("a", b"1")
    with pytest.raises(StorageError, match="a/b"):
        await st.put("a/b", b"2")


# ---- S3 specifics ----------------------------------------------------------------------------


@pytest.mark.slow
async def test_s3_list_pages_past_1000_keys(moto_endpoint: str, s3_bucket: str) -> None:
    async with make_s3(moto_endpoint, s3_bucket, page_size=1000, max_pool_connections=8) as st:
        await st.ensure_bucket()
        keys = [f"p/{i:05d}" for i in range(1003)]
        sem = asyncio.Semaphore(8)

        async def put(key: str) -> None:
            async with sem:
                await st.put(key, b"")

        await asyncio.gather(*(put(k) for k in keys))
        assert await keys_of(st, "p/") == keys
        assert await keys_of(st, "p/", start_after="p/00998") == keys[999:]


async def test_s3_ensure_bucket_creates_once_and_keeps_what_is_there(moto_endpoint: str, s3_bucket: str) -> None:
    async with make_s3(moto_endpoint, s3_bucket) as st:
        with pytest.raises(StorageError, match=s3_bucket):
            await st.put("k", b"v")  # the bucket does not exist yet
        await st.ensure_bucket()
        await st.put("k", b"v", if_absent=True)
        await st.ensure_bucket()  # again: the bucket is there, nothing is recreated or emptied
        assert await st.get("k") == b"v"
        assert await keys_of(st, "") == ["k"]
        with pytest.raises(ObjectExists):
            await st.put("k", b"other", if_absent=True)


async def test_s3_missing_bucket_is_named(moto_endpoint: str, s3_bucket: str) -> None:
    async with make_s3(moto_endpoint, s3_bucket) as st:
        with pytest.raises(StorageError, match=s3_bucket):
            await st.put("k", b"v")


async def test_s3_repr_holds_no_secret() -> None:
    st = S3Store("bucket", access_key="AKIDVISIBLE", secret_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(st) and "AKIDVISIBLE" not in repr(st)


# ---- faults: a misbehaving proxy in front of moto -------------------------------------------


@pytest.fixture
async def proxied(moto_endpoint: str, s3_bucket: str) -> AsyncIterator[tuple[FaultProxy, S3Store]]:
    async with make_s3(moto_endpoint, s3_bucket) as direct:
        await direct.ensure_bucket()
    with FaultProxy(moto_endpoint, hold=1.5) as proxy:
        async with make_s3(proxy.endpoint, s3_bucket, attempts=5, read_timeout=0.4, connect_timeout=0.4) as st:
            yield proxy, st


def object_writes(proxy: FaultProxy, key: str) -> list[int]:
    return [status for method, path, status in proxy.forwarded if method == "PUT" and path.endswith("/" + key)]


async def test_retries_500_429_timeout_then_writes_exactly_once(
    proxied: tuple[FaultProxy, S3Store], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, st = proxied
    proxy.script = ["500", "429", "timeout"]
    with caplog.at_level(logging.WARNING, logger="leoma.storage"):
        await st.put("seg/0001", b"segment bytes", if_absent=True)
    # The timed-out attempt did write; the retry met If-None-Match, saw our own bytes, and stopped.
    assert object_writes(proxy, "seg/0001") == [200, 412]
    assert [a for _, _, a in proxy.seen[:3]] == ["500", "429", "timeout"]
    assert await st.get("seg/0001") == b"segment bytes"
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 3
    assert "testing" not in caplog.text  # neither key appears in a log line


async def test_write_once_after_a_timeout_still_refuses_someone_elses_object(
    proxied: tuple[FaultProxy, S3Store],
) -> None:
    proxy, st = proxied
    await st.put("seg/0002", b"theirs", if_absent=True)
    proxy.script = ["503"]
    with pytest.raises(ObjectExists, match="seg/0002"):
        await st.put("seg/0002", b"ours", if_absent=True)
    assert await st.get("seg/0002") == b"theirs"


async def test_get_list_and_head_retry_too(proxied: tuple[FaultProxy, S3Store]) -> None:
    proxy, st = proxied
    await st.put("r/1", b"one")
    proxy.script = ["500", "timeout"]
    assert await st.get("r/1") == b"one"
    proxy.script = ["429"]
    assert await keys_of(st, "r/") == ["r/1"]
    proxy.script = ["502"]
    info = await st.head("r/1")
    assert info is not None and info.size == 3


async def test_exhausted_retries_name_bucket_key_and_last_error(
    proxied: tuple[FaultProxy, S3Store], s3_bucket: str
) -> None:
    proxy, st = proxied
    proxy.script = ["500"] * 4 + ["503"]
    with pytest.raises(StorageError) as err:
        await st.put("seg/0003", b"x")
    message = str(err.value)
    assert s3_bucket in message and "seg/0003" in message and "503" in message and "5 attempts" in message
    assert object_writes(proxy, "seg/0003") == []


async def test_client_errors_are_not_retried(proxied: tuple[FaultProxy, S3Store], s3_bucket: str) -> None:
    proxy, st = proxied
    proxy.script = ["403"]
    with pytest.raises(StorageError, match="refused") as err:
        await st.put("seg/0004", b"x")
    assert s3_bucket in str(err.value)
    assert len(proxy.seen) == 1


async def test_max_bytes_refuses_before_any_download(proxied: tuple[FaultProxy, S3Store]) -> None:
    proxy, st = proxied
    await st.put("huge", b"y" * 5000)
    proxy.seen.clear()
    with pytest.raises(ObjectTooLarge, match="5000 bytes"):
        await st.get("huge", max_bytes=4999)
    assert [method for method, _, _ in proxy.seen] == ["GET"], "one request, refused by its Content-Length"


# ---- open_store ------------------------------------------------------------------------------


def test_open_store_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = open_store(tmp_path.as_uri())
    assert isinstance(st, DirectoryStore) and st.root == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    rel = open_store("file:buckets/own")
    assert isinstance(rel, DirectoryStore) and rel.root == (tmp_path / "buckets" / "own").resolve()


def test_open_store_s3_reads_keys_from_named_variables() -> None:
    env = {"R2_OWN_WRITE_ACCESS_KEY": "ak", "R2_OWN_WRITE_SECRET_KEY": "sk"}
    st = open_store(
        "s3://leoma-val-3?endpoint=https://acct.r2.cloudflarestorage.com"
        "&access_key_env=R2_OWN_WRITE_ACCESS_KEY&secret_key_env=R2_OWN_WRITE_SECRET_KEY",
        env=env,
        attempts=2,
    )
    assert isinstance(st, S3Store)
    assert (st.bucket, st.endpoint_url, st.region, st.attempts) == (
        "leoma-val-3",
        "https://acct.r2.cloudflarestorage.com",
        "auto",
        2,
    )
    default = open_store("s3://bucket-x?region=us-east-1", env={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"})
    assert isinstance(default, S3Store) and default.region == "us-east-1" and default.endpoint_url is None


@pytest.mark.parametrize(
    ("url", "env", "needle"),
    [
        ("s3://bucket-x", {}, "AWS_ACCESS_KEY_ID is not set"),
        ("s3://bucket-x", {"AWS_ACCESS_KEY_ID": "a"}, "AWS_SECRET_ACCESS_KEY is not set"),
        ("s3://bucket-x?access_key_env=MY_KEY&secret_key_env=MY_SECRET", {"AWS_ACCESS_KEY_ID": "a"}, "MY_KEY"),
        ("s3://bucket-x?endpoit=https://x", {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}, "endpoit"),
        ("s3://bucket-x/some/prefix", {}, "prefix"),
        ("s3://", {}, "BUCKET"),
        ("file://relative/path", {}, "file:///absolute/path"),
        ("gs://bucket", {}, "scheme"),
        ("/just/a/path", {}, "scheme"),
    ],
)
def test_open_store_config_errors(url: str, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        open_store(url, env=env)


async def test_directory_store_that_is_gone_raises_a_storage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from leoma.adapters.directory import DirectoryStore
    from leoma.errors import StorageError

    root = tmp_path / "bucket"
    store = DirectoryStore(root)
    await store.put("a/b", b"x")
    import shutil

    shutil.rmtree(root)
    root.write_bytes(b"not a folder any more")
    with pytest.raises(StorageError, match="cannot write 'c'"):
        await store.put("c", b"y")
