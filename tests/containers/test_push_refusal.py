"""`make push` refuses images built on the stand-in bases local_bases.sh makes when no registry answers (they trust
the build host's extra CA certificates), saying why: run with base_image/stand_in.sh's own functions, on tiny
images (one small file, no container started), in seconds."""

from __future__ import annotations

import subprocess
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.oakestra_emulator.podman import available, podman_env, podman_sync

from .conftest import _unusable

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = ROOT / "base_image" / "stand_in.sh"


def stand_in(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """One function of stand_in.sh, as build.sh and local_bases.sh call it."""
    script = f'set -euo pipefail; source "{STAND_IN}"; "$@"'
    return subprocess.run(["bash", "-c", script, "bash", *args], capture_output=True, text=True, cwd=cwd,
                          env=podman_env(), timeout=120)


@dataclass
class Images:
    """A tiny root filesystem to import (in `dir`), and the images made from it (removed afterwards)."""

    dir: Path
    prefix: str
    made: list[str] = field(default_factory=list)

    def name(self, what: str) -> str:
        image = f"{self.prefix}-{what}:t"
        self.made.append(image)
        return image

    def build(self, what: str, containerfile: str) -> str:
        image = self.name(what)
        path = self.dir / f"{what}.Containerfile"
        path.write_text(containerfile)
        podman_sync("build", "--quiet", "--format", "docker", "-t", image, "-f", str(path), str(self.dir))
        return image


@pytest.fixture
def images(tmp_path) -> Iterator[Images]:
    why = available()
    if why:
        _unusable(why)
    (tmp_path / "hello").write_text("hello\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(tmp_path / "hello", arcname="hello")
    made = Images(tmp_path, f"localhost/flops-push-test-{uuid.uuid4().hex[:8]}")
    try:
        yield made
    finally:
        podman_sync("rmi", "--force", *made.made, check=False)


def test_push_refuses_an_image_built_on_a_stand_in_base_and_says_why(images):
    base = images.name("base")
    done = stand_in("import_stand_in", "podman", "rootfs.tar", base, "sh", cwd=images.dir)
    assert done.returncode == 0, done.stderr
    # Two builds on top, as fl-base and then the aggregator are: the label comes down both.
    middle = images.build("middle", f"FROM {base}\nLABEL org.opencontainers.image.title=middle\n")
    final = images.build("final", f"FROM {middle}\nLABEL org.opencontainers.image.title=final\n")
    clean = images.build("clean", "FROM scratch\nCOPY hello /hello\n")

    assert stand_in("refuse_stand_ins", "podman", clean, cwd=images.dir).returncode == 0
    refused = stand_in("refuse_stand_ins", "podman", clean, final, cwd=images.dir)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"make push: refusing to push {final}: it is built on a stand-in")
    assert "trusts the build host's extra CA certificates" in lines[0]


def test_a_stand_in_made_before_they_were_labelled_is_labelled_and_other_images_are_not(images):
    old = images.name("old")
    podman_sync("import", "--quiet", str(images.dir / "rootfs.tar"), old)  # as local_bases.sh used to
    clean = images.build("clean", "FROM scratch\nCOPY hello /hello\n")
    assert stand_in("refuse_stand_ins", "podman", old, cwd=images.dir).returncode == 0  # not recognised yet

    for image in (old, clean):
        done = stand_in("label_old_stand_in", "podman", image, cwd=images.dir)
        assert done.returncode == 0, done.stderr
    assert stand_in("refuse_stand_ins", "podman", old, cwd=images.dir).returncode == 1
    assert stand_in("refuse_stand_ins", "podman", clean, cwd=images.dir).returncode == 0
