"""`DirectoryStore`: the object-store contract (`leoma.adapters.storage`) over a local directory.

The devnet's buckets are directories; they behave like R2 (write-once puts, paged lexicographic
lists, the same key rules), so the code that runs against them is the code that runs in production.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from leoma.adapters.storage import DEFAULT_CONTENT_TYPE, ObjectInfo, validate_key, validate_prefix
from leoma.errors import ObjectExists, ObjectNotFound, ObjectTooLarge, StorageError

__all__ = [
    "DirectoryStore",
]


# Temporary files and metadata sidecars live under this reserved top-level folder, so a
# listing never shows them and a crash never leaves half a file at a real key.
_RESERVED = ".leoma-store"


class _Sidecar(msgspec.Struct, frozen=True):
    etag: str
    content_type: str | None
    size: int
    # The inode of the data file this sidecar describes; a mismatch means the data was replaced
    # (or the sidecar is stale after a crash), and the etag is recomputed instead of trusted.
    ino: int


class DirectoryStore:
    """Objects as files under `root`: atomic writes, write-once via `os.link`, S3-ordered listing.

    Limits compared with S3: a key cannot be both an object and a "folder" of other objects
    (`a` and `a/b`), and each path segment must fit the file system (usually 255 bytes).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / _RESERVED / "tmp"
        self._meta = self.root / _RESERVED / "meta"

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    async def __aenter__(self) -> DirectoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Nothing to release; present for the contract."""

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == _RESERVED:
            raise StorageError(f"invalid object key {key!r}: {_RESERVED}/ is reserved by the directory store")
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        return self._meta / (key + ".json")

    # -- reads ---------------------------------------------------------------------------------

    def _info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        try:
            side = msgspec.json.decode(self._meta_path(key).read_bytes(), type=_Sidecar)
        except (OSError, msgspec.DecodeError):
            side = None
        if side is not None and side.ino == st.st_ino and side.size == st.st_size:
            return ObjectInfo(key=key, size=st.st_size, etag=side.etag, content_type=side.content_type)
        # A file placed by hand or a stale sidecar: describe the bytes that are really there.
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        return ObjectInfo(key=key, size=st.st_size, etag=digest, content_type=DEFAULT_CONTENT_TYPE)

    async def head(self, key: str) -> ObjectInfo | None:
        """Return size, etag and content type of `key`, or None if absent."""
        return await asyncio.to_thread(self._info, key)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLarge(
                        f"{self.root}: {key!r} is {size} bytes, more than the {max_bytes} allowed"
                    )
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{self.root}: no object {key!r}") from None
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot read {key!r}: {exc}") from exc

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """Return the bytes of `key` (see ObjectStore.get)."""
        return await asyncio.to_thread(self._read, key, max_bytes)

    # -- writes --------------------------------------------------------------------------------

    def _write_tmp(self, data: bytes) -> Path:
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / secrets.token_hex(12)
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def _place(self, key: str, data: bytes, content_type: str | None, if_absent: bool) -> None:
        path = self._path(key)
        tmp = self._write_tmp(data)
        try:
            ino = tmp.stat().st_ino
            for attempt in range(2):
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if if_absent:
                        # link() fails if the name exists, so of two racing writers exactly one wins.
                        os.link(tmp, path)
                    else:
                        os.replace(tmp, path)
                    break
                except FileNotFoundError:
                    # A concurrent delete pruned the parent folder between mkdir and link; once more.
                    if attempt:
                        raise
            _fsync_dir(path.parent)
        except FileExistsError:
            raise ObjectExists(f"{self.root}: {key!r} already exists (write-once)") from None
        except (NotADirectoryError, IsADirectoryError) as exc:
            raise StorageError(
                f"{self.root}: cannot store {key!r}: a directory store cannot hold both a key and "
                f"keys below it ({exc})"
            ) from exc
        except OSError as exc:
            raise StorageError(f"{self.root}: cannot write {key!r}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        side = _Sidecar(
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            content_type=content_type or DEFAULT_CONTENT_TYPE,
            size=len(data),
            ino=ino,
        )
        meta = self._meta_path(key)
        meta.parent.mkdir(parents=True, exist_ok=True)
        mtmp = self._write_tmp(msgspec.json.encode(side))
        os.replace(mtmp, meta)

    async def put(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> None:
        """Write `data` under `key` atomically (see ObjectStore.put)."""
        try:
            await asyncio.to_thread(self._place, key, bytes(data), content_type, if_absent)
        except StorageError:
            raise
        except OSError as exc:  # the store's own folders are missing or not folders (bucket down)
            raise StorageError(f"{self.root}: cannot write {key!r}: {exc}") from exc

    def _remove(self, key: str) -> None:
        path = self._path(key)
        for p in (path, self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                p.unlink()
        # Empty folders would block a later key of the same name; S3 has no folders to leave.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def delete(self, key: str) -> None:
        """Remove `key`; absent keys are fine."""
        await asyncio.to_thread(self._remove, key)

    # -- listing -------------------------------------------------------------------------------

    def _keys(self, prefix: str) -> builtins.list[str]:
        # Walk only the deepest folder the prefix pins down, not the whole store.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / base_key if base_key else self.root
        found: builtins.list[str] = []
        stack = [base]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                rel = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
                if rel == _RESERVED:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif rel.startswith(prefix):
                    found.append(rel)
        found.sort()  # code-point order of str == UTF-8 byte order, which is S3's order
        return found

    async def list(
        self, prefix: str = "", *, start_after: str | None = None, limit: int | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Yield objects under `prefix` in key order (see ObjectStore.list)."""
        validate_prefix(prefix)
        keys = await asyncio.to_thread(self._keys, prefix)
        count = 0
        for key in keys:
            if start_after is not None and key <= start_after:
                continue
            if limit is not None and count >= limit:
                return
            info = await asyncio.to_thread(self._info, key)
            if info is not None:  # deleted while listing
                count += 1
                yield info

    async def presign_get(self, key: str, expires: int = 3600) -> str:
        """Return the object's `file://` URL (no expiry: the file system has no signatures)."""
        return self._path(key).as_uri()


def _fsync_dir(folder: Path) -> None:
    # Makes the new directory entry durable; not every platform can open a folder for fsync.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
