"""Layers made from a folder: the same content gives the same bytes, whatever the machine, time or umask."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from flops_builder.layers import default_skip, diff_id_of, extract_layer, keep_bytecode, walk, write_layer


def tree(root: Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if name in executable else 0o644)
    return root


FILES = {"task.py": "x = 1\n", "pkg/__init__.py": "", "pkg/util.py": "y = 2\n", "run.sh": "#!/bin/sh\n",
         "data/a-b.txt": "a\n"}


def members(blob: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(blob, "r:gz") as tar:
        return tar.getmembers()


def test_same_content_same_digest_whatever_the_times_order_and_umask(tmp_path):
    one = tree(tmp_path / "one", FILES, executable=("run.sh",))
    old = os.umask(0o077)
    try:
        two = tree(tmp_path / "two", dict(reversed(FILES.items())), executable=("run.sh",))
    finally:
        os.umask(old)
    for path in two.rglob("*"):
        os.utime(path, (1e9, 1e9))
    (two / "run.sh").chmod(0o700)  # another umask: only the owner's exec bit counts
    a = write_layer(one, "opt/flops/task", tmp_path / "a.tar.gz")
    b = write_layer(two, "opt/flops/task", tmp_path / "b.tar.gz")
    assert (a.digest, a.diff_id, a.size) == (b.digest, b.diff_id, b.size)
    assert a.path.read_bytes() == b.path.read_bytes()


def test_digests_are_of_the_blob_and_of_the_uncompressed_tar(tmp_path):
    layer = write_layer(tree(tmp_path / "src", FILES), "opt/flops/task", tmp_path / "l.tar.gz")
    blob = layer.path.read_bytes()
    assert layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.size == len(blob)
    assert layer.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_id_of(layer.path)
    header = blob[:10]  # gzip: no name flag, mtime 0
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"


def test_entries_sorted_under_the_prefix_owned_by_root_at_time_zero(tmp_path):
    layer = write_layer(tree(tmp_path / "src", FILES, executable=("run.sh",)), "opt/flops/task",
                        tmp_path / "l.tar.gz")
    entries = members(layer.path)
    names = [m.name for m in entries]
    assert names[:3] == ["opt", "opt/flops", "opt/flops/task"]
    assert names == sorted(names)
    assert set(names[3:]) == {"opt/flops/task/" + n for n in
                              ["data", "data/a-b.txt", "pkg", "pkg/__init__.py", "pkg/util.py", "run.sh", "task.py"]}
    assert all((m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0) for m in entries)
    modes = {m.name.rsplit("/", 1)[-1]: (m.type, m.mode) for m in entries}
    assert modes["run.sh"] == (tarfile.REGTYPE, 0o755)
    assert modes["task.py"] == (tarfile.REGTYPE, 0o644)
    assert modes["pkg"] == (tarfile.DIRTYPE, 0o755)


@pytest.mark.parametrize("relative, is_dir, skipped", [
    (".git", True, True),
    ("pkg/__pycache__", True, True),
    ("pkg/mod.pyc", False, True),
    ("pkg/mod.py", False, False),
    ("gitignore.txt", False, False),
    (".github", True, False),
])
def test_code_layers_leave_out_git_and_bytecode(relative, is_dir, skipped):
    assert default_skip(relative, is_dir) is skipped


@pytest.mark.parametrize("relative, is_dir, skipped", [
    ("numpy/__pycache__", True, False),    # environment.py compiles unchecked-hash bytecode: no timestamps
    ("pkg/mod.cpython-311.pyc", False, False),
    (".git", True, True),
])
def test_dependency_layers_keep_their_bytecode(relative, is_dir, skipped):
    assert keep_bytecode(relative, is_dir) is skipped


def test_symlinks_stay_links_and_are_not_followed(tmp_path):
    src = tree(tmp_path / "src", {"real/x.py": "x\n"})
    (src / "link").symlink_to("real")
    (src / "file-link.py").symlink_to("real/x.py")
    found = dict(walk(src))
    assert set(found) == {"file-link.py", "link", "real", "real/x.py"}
    entries = {m.name: m for m in members(write_layer(src, "t", tmp_path / "l.tar.gz").path)}
    assert entries["t/link"].issym() and entries["t/link"].linkname == "real"
    assert entries["t/file-link.py"].issym()


def test_no_folder_gives_just_the_prefix_directories(tmp_path):
    layer = write_layer(None, "opt/flops/deps", tmp_path / "empty.tar.gz")
    assert [m.name for m in members(layer.path)] == ["opt", "opt/flops", "opt/flops/deps"]


def test_extract_gives_back_the_files(tmp_path):
    layer = write_layer(tree(tmp_path / "src", FILES, executable=("run.sh",)), "opt/flops/deps",
                        tmp_path / "l.tar.gz")
    data = layer.path.read_bytes()
    extract_layer(iter([data[:100], data[100:]]), tmp_path / "out")
    root = tmp_path / "out" / "opt" / "flops" / "deps"
    assert (root / "pkg" / "util.py").read_text() == "y = 2\n"
    assert os.access(root / "run.sh", os.X_OK)


def test_extract_refuses_paths_outside(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        extract_layer([raw.getvalue()], tmp_path / "out")
    assert not (tmp_path / "escape").exists()
