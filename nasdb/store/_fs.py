"""Where the store's files live: a local directory (fast path) or any fsspec filesystem.

The rest of the store touches files only through ``StoreFS``. Its one promise beyond plain
file access is atomic publication: ``atomic_output`` yields a place to write and makes the
file visible under its final name only once it is complete (temp name + rename locally;
write-once keys on object stores, which appear only when their upload completes).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import io
import os
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import fsspec

from nasdb.errors import StoreError

TMP_PREFIX = "_tmp-"


@dataclass(frozen=True)
class FileInfo:
    """A file as listed: its fs-native path, size and modification stamp (for validity caches)."""

    path: str
    size: int
    mtime: Any

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


class StoreFS(abc.ABC):
    """File access under one root. Paths are fs-native strings (what ``fs`` methods accept)."""

    def __init__(self, root: str, fs: fsspec.AbstractFileSystem):
        self.root = root.rstrip("/") or "/"
        self.fs = fs

    is_local: bool = False

    @property
    def uri(self) -> str:
        """The address any process reopens this root with (``open_store_fs(uri)``): a local
        directory's absolute path, or the full URI, scheme included, of any other filesystem."""
        return self.root

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def relpath(self, path: str) -> str:
        return path[len(self.root):].lstrip("/")

    # -- primitives every back end provides ---------------------------------------------
    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def makedirs(self, path: str) -> None: ...

    @abc.abstractmethod
    def listdir(self, path: str) -> list[FileInfo]:
        """Entries directly under ``path`` (files and folders; folders have size -1); [] if missing."""

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def tail(self, path: str, n: int, size: int) -> bytes:
        """The last ``n`` bytes of a file of ``size`` bytes (as listed)."""

    @abc.abstractmethod
    def remove(self, path: str) -> None:
        """Delete a file; a file already gone is not an error (another process may have removed it)."""

    @abc.abstractmethod
    def move(self, src: str, dst: str) -> None: ...

    @abc.abstractmethod
    def atomic_output(self, path: str) -> contextlib.AbstractContextManager[Any]:
        """Yield a sink (local path or binary file) whose content appears at ``path`` only when complete."""

    @abc.abstractmethod
    def publish_dir(self, tmp_dir: str, final_dir: str) -> None:
        """Make a fully written folder visible as ``final_dir``; FileExistsError if it already exists."""

    @abc.abstractmethod
    def remove_tree(self, path: str) -> None: ...

    # -- DuckDB --------------------------------------------------------------------------
    def duckdb_path(self, path: str) -> str:
        """``path`` as DuckDB must spell it (after ``prepare_duckdb``)."""
        return path

    def fs_path(self, duckdb_path: str) -> str:
        """The inverse of ``duckdb_path``."""
        return duckdb_path

    def prepare_duckdb(self, conn: Any) -> None:
        """Make the files reachable from an in-memory DuckDB connection."""

    # -- derived helpers -----------------------------------------------------------------
    def write_many(self, items: list[tuple[str, Callable[[Any], None]]]) -> None:
        """Publish several files, each atomically: ``write(sink)`` fills the file for ``path``."""
        for path, write in items:
            with self.atomic_output(path) as sink:
                write(sink)

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.atomic_output(path) as sink:
            if isinstance(sink, str):
                with open(sink, "wb") as f:
                    f.write(data)
            else:
                sink.write(data)

    def tmp_sibling(self, path: str) -> str:
        head, _, name = path.rpartition("/")
        return f"{head}/{TMP_PREFIX}{name}-{secrets.token_hex(4)}.tmp"


class LocalFS(StoreFS):
    """A local (or POSIX shared) directory: temp name, fsync, rename."""

    is_local = True

    def __init__(self, root: str, *, fsync: bool = True):
        super().__init__(os.path.abspath(os.path.expanduser(root)), fsspec.filesystem("file"))
        self.fsync = fsync

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[FileInfo]:
        out = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    try:
                        if e.is_dir():
                            out.append(FileInfo(e.path, -1, 0))
                        else:
                            st = e.stat()
                            out.append(FileInfo(e.path, st.st_size, st.st_mtime_ns))
                    except FileNotFoundError:  # vanished between listing and stat
                        continue
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(out, key=lambda f: f.path)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def tail(self, path: str, n: int, size: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(max(0, size - n))
            return f.read(n)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)

    def move(self, src: str, dst: str) -> None:
        self._mkdir(os.path.dirname(dst))
        os.replace(src, dst)
        self._sync_dir(os.path.dirname(dst))
        self._sync_dir(os.path.dirname(src))

    @contextlib.contextmanager
    def atomic_output(self, path: str) -> Iterator[str]:
        tmp = self.tmp_sibling(path)
        self._mkdir(os.path.dirname(path))
        try:
            yield tmp
            if self.fsync:
                _fsync(tmp)
            os.replace(tmp, path)
            self._sync_dir(os.path.dirname(path))  # the new name itself survives a power cut
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise

    def write_many(self, items: list[tuple[str, Callable[[Any], None]]]) -> None:
        """Write every file under a temp name, fsync them together (in threads: one journal commit
        serves several), then rename each into place."""
        temps: list[str] = []
        try:
            for path, write in items:
                temps.append(self.tmp_sibling(path))
                self._mkdir(os.path.dirname(path))
                write(temps[-1])
            if self.fsync:
                if len(temps) == 1:
                    _fsync(temps[0])
                else:
                    list(_fsync_pool().map(_fsync, temps))
            for i, (path, _) in enumerate(items):
                os.replace(temps[i], path)
                temps[i] = ""  # published: nothing to clean up
            for folder in sorted({os.path.dirname(path) for path, _ in items}):
                self._sync_dir(folder)
        finally:
            for tmp in temps:
                if tmp:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(tmp)

    def publish_dir(self, tmp_dir: str, final_dir: str) -> None:
        if self.fsync:  # the folder's files and entries are on disk before it appears under its name
            for entry in os.scandir(tmp_dir):
                if entry.is_file():
                    _fsync(entry.path)
            self._sync_dir(tmp_dir)
        try:
            os.rename(tmp_dir, final_dir)  # fails if final_dir exists and is non-empty
        except OSError as e:
            if os.path.exists(final_dir):
                raise FileExistsError(final_dir) from None
            raise e
        self._sync_dir(os.path.dirname(final_dir))

    def _mkdir(self, path: str) -> None:
        """``os.makedirs``; a folder it creates gets its entry in its parent fsynced."""
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            self._sync_dir(os.path.dirname(path))

    def _sync_dir(self, path: str) -> None:
        """fsync a folder, so the renames and creations in it survive a power cut (POSIX keeps a
        rename only in memory until its folder is synced)."""
        if self.fsync:
            _fsync_dir(path)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (FileNotFoundError, PermissionError, IsADirectoryError):  # gone, or no folder handles (Windows)
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # filesystems that cannot sync folders
            raise
    finally:
        os.close(fd)


_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0


def _fsync_pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    if _POOL is None or _POOL_PID != os.getpid():
        _POOL, _POOL_PID = ThreadPoolExecutor(max_workers=8, thread_name_prefix="nasdb-fsync"), os.getpid()
    return _POOL


def _stamp(info: dict) -> Any:
    for key in ("mtime", "LastModified", "last_modified", "updated", "created", "ETag", "etag"):
        if info.get(key) is not None:
            return str(info[key])
    return None


class FsspecFS(StoreFS):
    """Any fsspec filesystem (s3://, gs://, memory://, ...): objects are written once under their final key."""

    def __init__(self, url: str):
        try:
            fs, path = fsspec.core.url_to_fs(url)
        except ImportError as e:  # the scheme's fsspec implementation is an optional extra
            raise StoreError(f"store {url!r} needs {_missing_extra(url, e)}") from None
        super().__init__(path, fs)

    @property
    def uri(self) -> str:
        return self.fs.unstrip_protocol(self.root)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[FileInfo]:
        try:
            entries = self.fs.ls(path, detail=True, refresh=True) if self.fs.isdir(path) else []
        except FileNotFoundError:
            return []
        except TypeError:  # filesystems without the refresh flag
            entries = self.fs.ls(path, detail=True)
        out = [FileInfo(e["name"], -1 if e.get("type") == "directory" else int(e.get("size") or 0), _stamp(e))
               for e in entries]
        return sorted(out, key=lambda f: f.path)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def tail(self, path: str, n: int, size: int) -> bytes:
        return self.fs.cat_file(path, start=max(0, size - n), end=size)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def move(self, src: str, dst: str) -> None:
        self.fs.makedirs(dst.rpartition("/")[0], exist_ok=True)
        self.fs.mv(src, dst)

    @contextlib.contextmanager
    def atomic_output(self, path: str) -> Iterator[Any]:
        """Buffer in memory, then publish the complete bytes in one ``pipe_file`` (one PUT, or a
        multipart upload that S3 shows only once completed). Not ``fs.open(path, "wb")``: its
        ``close`` on an exception would upload the partial content under the final key."""
        buf = io.BytesIO()
        yield buf
        self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)
        self.fs.pipe_file(path, buf.getvalue())

    def publish_dir(self, tmp_dir: str, final_dir: str) -> None:
        # No atomic folder rename on object stores: copy, and let the caller write its
        # commit marker (metadata) last. An existing final folder is refused.
        if self.fs.exists(final_dir):
            raise FileExistsError(final_dir)
        self.fs.mv(tmp_dir, final_dir, recursive=True)

    def remove_tree(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

    def duckdb_path(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def fs_path(self, duckdb_path: str) -> str:
        return self.fs._strip_protocol(duckdb_path)

    def prepare_duckdb(self, conn: Any) -> None:
        conn.register_filesystem(self.fs)


#: fsspec schemes whose implementation comes with one of nasdb's extras (pyproject.toml).
EXTRAS = {"s3": "s3", "s3a": "s3"}


def _missing_extra(url: str, error: ImportError) -> str:
    """What to install for ``url``'s scheme, as one line (fsspec's own hint for other schemes)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in EXTRAS:
        return f"an optional extra: pip install 'nasdb[{EXTRAS[scheme]}]'"
    return " ".join(str(error).split()) or f"the fsspec implementation of {scheme}://"


def open_store_fs(root: str, *, fsync: bool = True) -> StoreFS:
    """A local path or ``file://`` URI -> LocalFS; any other URI -> FsspecFS."""
    if "://" not in root or root.startswith("file://"):
        return LocalFS(root[len("file://"):] if root.startswith("file://") else root, fsync=fsync)
    return FsspecFS(root)
