"""Named areas of the store for whole-file artifacts: predictor checkpoints, aliases, search state.

Each file is written atomically (StoreFS.write_bytes: temp file, fsync and rename on a local or
shared disk; one PUT on an object store), so a reader sees the old bytes or the new ones, never a
part. A writer that needs several files to appear together writes its commit file last.
"""

from __future__ import annotations

from nasdb.errors import ArgumentError, MissingFileError
from nasdb.store._fs import TMP_PREFIX, StoreFS

#: The artifact areas, each a folder under the store root (README, "Store layout").
AREAS = ("predictors", "aliases", "search")


class ArtifactArea:
    """The files under ``<root>/<area>/``, addressed by keys such as ``"<run_id>/run.json"``."""

    def __init__(self, sfs: StoreFS, area: str):
        if area not in AREAS:
            raise ArgumentError(f"`area` must be one of {AREAS}, but got area={area!r}.")
        self._sfs, self.area = sfs, area

    def path(self, key: str = "") -> str:
        """The fs-native path of ``key`` (the area's folder for ``""``)."""
        parts = key.split("/") if key else []
        if any(p in ("", ".", "..") for p in parts):
            raise ArgumentError(f"an artifact key is '/'-separated names without '.' or '..', but got key={key!r}.")
        return self._sfs.join(self.area, *parts)

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically, replacing what was there."""
        self._sfs.write_bytes(self.path(key), data)

    def get(self, key: str) -> bytes:
        """The bytes at ``key``; MissingFileError when there are none."""
        path = self.path(key)
        if not self._sfs.exists(path):
            raise MissingFileError(f"no {self.area}/{key} in the store {self._sfs.uri}")
        return self._sfs.read_bytes(path)

    def has(self, key: str) -> bool:
        return self._sfs.exists(self.path(key))

    def list(self, prefix: str = "", *, folders: bool | None = None) -> list[str]:
        """Sorted names directly under ``prefix`` (temp files left out); ``folders``: only folders
        (True), only files (False), or both (None)."""
        entries = self._sfs.listdir(self.path(prefix))
        return sorted(e.name for e in entries if not e.name.startswith(TMP_PREFIX)
                      and (folders is None or (e.size < 0) == folders))

    def delete(self, key: str) -> None:
        """Remove the file or the whole folder at ``key`` (nothing there: nothing to do)."""
        path = self.path(key)
        if self._sfs.listdir(path):
            self._sfs.remove_tree(path)
        else:
            self._sfs.remove(path)
