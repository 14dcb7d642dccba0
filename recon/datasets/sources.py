"""Where a dataset's files come from: a folder or a zip, and the checks that keep reading them safe.

:func:`open_source` finds the folder that holds the transforms JSON and returns a :class:`Source`
that reads files by their path relative to it. A folder's files must resolve inside it (symbolic
links included). A zip is never extracted: before anything is read from it, every member's header is
checked (names reaching outside the archive, encryption, declared sizes and compression ratios, the
member count); then each file is read from it into memory.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from pathlib import Path

from .limits import (
    LOAD_SIZE,
    MAX_FILE_BYTES,
    MAX_FRAMES,
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_UNCOMPRESSED_BYTES,
    MAX_ZIP_BYTES,
    DatasetError,
    show_name,
    show_size,
)


class Source:
    """The files of a dataset by POSIX path relative to its root (the folder holding the JSON)."""

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source (a zip's file handle)."""


class _FolderSource(Source):
    def __init__(self, root: Path):
        self.root = root.resolve()

    def _path(self, rel: str) -> Path:
        path = (self.root / rel).resolve()  # follows symbolic links: they must stay inside too
        if not path.is_relative_to(self.root):
            raise DatasetError(f"{rel} points outside the dataset folder.")
        return path

    def exists(self, rel: str) -> bool:
        return self._path(rel).is_file()

    def read(self, rel: str) -> bytes:
        path = self._path(rel)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise DatasetError(f"{rel} is {show_size(size)}; the limit per file is {show_size(MAX_FILE_BYTES)}.")
            return path.read_bytes()
        except OSError as exc:
            raise DatasetError(f"{rel} could not be read ({exc.strerror or type(exc).__name__}).") from None


class _ZipSource(Source):
    def __init__(self, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], prefix: str):
        self.zf, self.members, self.prefix = zf, members, prefix

    def exists(self, rel: str) -> bool:
        return self.prefix + rel in self.members

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(self.members[self.prefix + rel])  # sizes were checked when the zip was opened
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError):
            raise DatasetError(f"{rel} could not be read from the zip: the archive is damaged, or compressed "
                               "with a method other than Deflate.") from None

    def close(self) -> None:
        self.zf.close()



def _unsafe_member(name: str) -> bool:
    """Whether a zip member name could reach outside the archive's folder (zip slip)."""
    n = name.replace("\\", "/")
    return n.startswith("/") or bool(re.match(r"[A-Za-z]:", n)) or ".." in n.split("/")


def _check_zip(path: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """Open a zip and check every member's header before anything is read from it."""
    size = path.stat().st_size
    if size > MAX_ZIP_BYTES:
        raise DatasetError(f"the zip is {show_size(size)}, over the {show_size(MAX_ZIP_BYTES)} limit. "
                           f"Use fewer or smaller images (they are read at {LOAD_SIZE} px at most).")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise DatasetError("is not a zip archive (or a damaged one). Upload a .zip of the dataset folder.") from None
    try:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise DatasetError(f"the zip holds {len(infos):,} files; the limit is {MAX_MEMBERS:,} "
                               f"(and {MAX_FRAMES} frames). Refused before extracting anything.")
        for info in infos:
            if _unsafe_member(info.filename):
                raise DatasetError(f"the zip holds a file named {show_name(info.filename)}, which points "
                                   "outside the archive (an absolute path or '..'): refused (zip slip).")
            if info.flag_bits & 0x1:
                raise DatasetError("the zip is encrypted (password-protected); upload an unencrypted zip.")
            if info.file_size > MAX_FILE_BYTES:
                raise DatasetError(f"the zip holds {show_name(info.filename)}, declaring {show_size(info.file_size)} "
                                   f"uncompressed; the limit per file is {show_size(MAX_FILE_BYTES)}. Refused "
                                   "before extracting anything (a zip bomb?).")
            if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise DatasetError(f"the zip holds {show_name(info.filename)}, which compresses "
                                   f"{info.file_size / max(info.compress_size, 1):,.0f} times (the limit is "
                                   f"{MAX_RATIO}): refused before extracting anything (a zip bomb?).")
        total = sum(info.file_size for info in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise DatasetError(f"the zip's files declare {show_size(total)} uncompressed; the limit is "
                               f"{show_size(MAX_UNCOMPRESSED_BYTES)}. Refused before extracting anything (a zip bomb?).")
    except BaseException:
        zf.close()
        raise
    members = {info.filename.replace("\\", "/"): info for info in infos
               if not info.is_dir() and not info.filename.startswith("__MACOSX/")}
    return zf, members


_JSON_NAMES = ("transforms_train.json", "transforms.json")


def open_source(path: Path) -> Source:
    """The dataset's files, rooted at the folder that holds its transforms JSON."""
    expected = ("no transforms_train.json or transforms.json found; a dataset in the NeRF-synthetic (Blender) "
                "layout has them next to its image folders")
    if path.is_dir():
        source: Source = _FolderSource(path)
        if not any(source.exists(name) for name in _JSON_NAMES):
            raise DatasetError(expected + ".")
        return source
    zf, members = _check_zip(path)
    roots = sorted({name.rsplit("/", 1)[0] + "/" if "/" in name else "" for name in members
                    if name.rsplit("/", 1)[-1] in _JSON_NAMES and name.count("/") <= 1})
    if len(roots) != 1:
        zf.close()
        if not roots:
            raise DatasetError(expected + " (at the top of the zip or in one folder at its top).")
        raise DatasetError(f"the zip holds several datasets ({', '.join(r or '(top)' for r in roots)}); zip one.")
    return _ZipSource(zf, members, roots[0])
