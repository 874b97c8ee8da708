"""Image layers made from a folder, byte for byte the same for the same content.

A layer is a gzip'd tar whose entries are the folder's files under a prefix (e.g. opt/flops/task). Nothing
of the machine that made it goes in: entries sorted by path, mtime 0, owner 0:0 without names, mode 0755 or
0644 by the file's exec bit (the checkout's umask must not decide whether user 10001 can read a file), gzip
header without name or time. The same content therefore gives the same digest wherever and whenever it is
built: the registry then already has the blob, and a rebuilt image whose code did not change is the same image.

Not in a code layer (`default_skip`): .git, __pycache__ and *.pyc. A .pyc a checkout may hold records its
source's mtime (0 in the image, so Python would ignore it anyway), and leaving them out keeps the digest a
function of the source alone. A dependency layer keeps its bytecode (`keep_bytecode`): flops_builder.environment
compiles it with unchecked hashes, so it holds no time and is used as it is.

digest  = sha256 of the compressed blob (what the registry stores and the manifest names)
diff_id = sha256 of the uncompressed tar (what the image config's rootfs lists)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

SKIPPED_DIRS = frozenset({".git", "__pycache__"})
SKIPPED_SUFFIXES = (".pyc",)
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Layer:
    path: Path
    """The tar.gz file."""
    digest: str
    diff_id: str
    size: int
    """Compressed size in bytes."""


def default_skip(relative: str, is_dir: bool) -> bool:
    name = relative.rsplit("/", 1)[-1]
    if is_dir:
        return name in SKIPPED_DIRS
    return name.endswith(SKIPPED_SUFFIXES)


def keep_bytecode(relative: str, is_dir: bool) -> bool:
    return relative.rsplit("/", 1)[-1] == ".git"


def walk(folder: Path, skip: Callable[[str, bool], bool] = default_skip) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of every directory, file and symlink under `folder`, sorted by relative path;
    symlinks are not followed, other file types (sockets, devices) are left out."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        rel_root = base.relative_to(folder).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        kept = []
        for name in dirs:
            path = base / name
            if skip(prefix + name, True):
                continue
            if path.is_symlink():   # os.walk lists a symlink to a directory among dirs; it is an entry, not a tree
                found.append((prefix + name, path))
            else:
                kept.append(name)
                found.append((prefix + name, path))
        dirs[:] = kept
        for name in files:
            path = base / name
            mode = path.lstat().st_mode
            if (stat.S_ISREG(mode) or stat.S_ISLNK(mode)) and not skip(prefix + name, False):
                found.append((prefix + name, path))
    return iter(sorted(found))


class _Hashing:
    """A write-only file object that hashes and counts what passes through it to `inner`."""

    def __init__(self, inner: BinaryIO):
        self.inner = inner
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


def _info(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, linkname
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _parents(prefix: str) -> list[str]:
    parts = [p for p in prefix.split("/") if p]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def write_layer(folder: Path | None, prefix: str, dest: Path,
                skip: Callable[[str, bool], bool] = default_skip) -> Layer:
    """Write `folder`'s tree as a layer at `prefix` (no leading slash) to the file `dest`. The prefix's own
    directories are entries too (mode 0755). `folder` None: a layer holding only those directories."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL) as gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for directory in _parents(prefix):
                    tar.addfile(_info(directory, tarfile.DIRTYPE, 0o755))
                base = "/".join(_parents(prefix)[-1:])
                for relative, path in (walk(folder, skip) if folder is not None else ()):
                    _add(tar, f"{base}/{relative}" if base else relative, path)
    return Layer(dest, compressed.digest, plain.digest, compressed.size)


def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, linkname=os.readlink(path)))
    elif stat.S_ISDIR(mode):
        tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
    else:
        executable = bool(mode & stat.S_IXUSR)  # the bit Git keeps (and source.tree_digest counts)
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            tar.addfile(_info(name, tarfile.REGTYPE, 0o755 if executable else 0o644, size), handle)


def diff_id_of(blob: Path) -> str:
    """The diff_id of a gzip'd layer file (sha256 of its uncompressed content)."""
    sha = hashlib.sha256()
    with gzip.open(blob, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def extract_layer(chunks: Iterable[bytes], dest: Path) -> None:
    """Unpack a gzip'd layer into `dest` (tarfile's "data" filter: nothing outside dest, no devices, no setuid)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=dest) as blob:
        for chunk in chunks:
            blob.write(chunk)
        blob.seek(0)
        with tarfile.open(fileobj=blob, mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
