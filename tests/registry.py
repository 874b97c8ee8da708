"""A real container registry for tests: CNCF distribution 2.8 (Debian's `docker-registry`) on a free port.

    from tests.registry import registry, auth_registry   # fixtures (import them into the test module)
    def test_x(auth_registry):
        auth_registry.host          # "127.0.0.1:<port>"
        auth_registry.login         # ("flops", "<random>") or None
        auth_registry.blobs()       # digests of every blob it stores (what a push added)

`start_registry(root, auth=..., tls=True)` serves HTTPS with a certificate from a new CA (`ca_file`,
flops_runtime.pki); `address` picks where it listens (e.g. a podman network's gateway). Two registries may
serve one storage root (`storage=` another's): pushed once, seen on both addresses.

`push_local_image(image, registry, repository)` copies an image from podman's storage into it (`podman push`;
the FL bases are gigabytes: `real_bases` does it once per session and says how long it took).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from flops_runtime import pki

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
START_TIMEOUT = 30.0


@dataclass
class Registry:
    host: str
    """host:port clients use."""
    storage: Path
    login: tuple[str, str] | None
    ca_file: Path | None
    """The CA that signed its TLS certificate (None: plain HTTP)."""
    process: subprocess.Popen
    log_file: Path
    workdir: Path = field(repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.ca_file else "http"

    @property
    def username(self) -> str | None:
        return self.login[0] if self.login else None

    @property
    def password(self) -> str | None:
        return self.login[1] if self.login else None

    def blobs(self) -> set[str]:
        """Every blob digest in the storage (distribution's layout: blobs/sha256/<2>/<hex>/data)."""
        root = self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
        return {f"sha256:{d.name}" for d in root.glob("*/*") if (d / "data").exists()} if root.exists() else set()

    def tags(self, repository: str) -> set[str]:
        root = self.storage / "docker" / "registry" / "v2" / "repositories" / repository / "_manifests" / "tags"
        return {p.name for p in root.iterdir()} if root.exists() else set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _htpasswd(user: str, password: str) -> str:
    # bcrypt is the only hash distribution accepts; htpasswd (apache2-utils) makes it.
    done = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True,
                          timeout=30)
    return done.stdout.strip() + "\n"


def start_registry(workdir: Path, *, auth: tuple[str, str] | None = None, tls: bool = False,
                   address: str = "127.0.0.1", storage: Path | None = None, ca_bundle: str | None = None,
                   read_only: bool = False) -> Registry:
    """Start a registry and wait until /v2/ answers. `ca_bundle` (flops_runtime.pki.new_ca) signs its TLS
    certificate (default: a new CA); `storage` serves another registry's root; `read_only` refuses every push
    (distribution's maintenance mode)."""
    workdir.mkdir(parents=True, exist_ok=True)
    storage = storage or workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = _free_port(address)
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}, "readonly": {"enabled": read_only}}},
        "http": {"addr": f"{address}:{port}", "secret": secrets.token_hex(16)},
    }
    ca_file = None
    if tls:
        bundle = ca_bundle or pki.new_ca("flops test registry CA")
        cert, key = pki.server_certificate(bundle, [address])
        ca_file = workdir / "ca.pem"
        ca_file.write_text(pki.pem(pki.ca_certificate(bundle)))
        (workdir / "server.pem").write_text(cert)
        pki.write_private(workdir / "server.key", key)
        config["http"]["tls"] = {"certificate": str(workdir / "server.pem"), "key": str(workdir / "server.key")}
    if auth:
        (workdir / "htpasswd").write_text(_htpasswd(*auth))
        config["auth"] = {"htpasswd": {"realm": "flops-test", "path": str(workdir / "htpasswd")}}
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    log_file = workdir / "registry.log"
    with open(log_file, "ab") as log:
        process = subprocess.Popen([REGISTRY_BIN, "serve", str(workdir / "config.yml")], stdout=log,
                                   stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    host = f"{address}:{port}"
    registry = Registry(host, storage, auth, ca_file, process, log_file, workdir)
    _wait_ready(registry)
    return registry


def _wait_ready(registry: Registry) -> None:
    context = ssl.create_default_context(cafile=str(registry.ca_file)) if registry.ca_file else None
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if registry.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited ({registry.process.returncode}):\n{registry.log_tail()}")
        try:
            urllib.request.urlopen(f"{registry.scheme}://{registry.host}/v2/", timeout=2, context=context)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # answering, and asking for the login it was given
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            registry.stop()
            raise RuntimeError(f"docker-registry did not answer within {START_TIMEOUT:.0f}s:\n{registry.log_tail()}")
        time.sleep(0.1)


@pytest.fixture
def registry(tmp_path_factory) -> Iterator[Registry]:
    """A registry without login, plain HTTP on loopback."""
    started = start_registry(tmp_path_factory.mktemp("registry"))
    yield started
    started.stop()


@pytest.fixture
def auth_registry(tmp_path_factory) -> Iterator[Registry]:
    """A registry with a login (user `flops`, a random password), plain HTTP on loopback."""
    started = start_registry(tmp_path_factory.mktemp("registry"), auth=("flops", secrets.token_urlsafe(12)))
    yield started
    started.stop()


@pytest.fixture
def tls_registry(tmp_path_factory) -> Iterator[Registry]:
    """A registry with a login behind HTTPS, its certificate from a CA of its own (`ca_file`)."""
    started = start_registry(tmp_path_factory.mktemp("registry"), auth=("flops", secrets.token_urlsafe(12)),
                             tls=True)
    yield started
    started.stop()


# -- images from podman's storage -------------------------------------------------------------------------------
def push_local_image(image: str, registry: Registry, repository: str) -> str:
    """`podman push` a local image to registry/repository (same tag); returns the pushed reference."""
    from tests.oakestra_emulator.podman import podman_sync

    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"
    target = f"{registry.host}/{repository}:{tag}"
    args = ["push", "--quiet", "--format", "v2s2"]
    if registry.ca_file:
        args += ["--cert-dir", str(_cert_dir(registry))]
    else:
        args += ["--tls-verify=false"]
    if registry.login:
        args += ["--creds", f"{registry.login[0]}:{registry.login[1]}"]
    podman_sync(*args, image, target, timeout=1800)
    return target


def _cert_dir(registry: Registry) -> Path:
    directory = registry.workdir / "certs.d"
    directory.mkdir(exist_ok=True)
    shutil.copy(registry.ca_file, directory / "ca.crt")
    return directory


# -- a tiny base image, pushed with the builder's own client (milliseconds, not the FL bases' gigabytes) ----------
def client_for(registry: Registry, **overrides):
    from flops_builder.registry import Client

    options = dict(username=registry.username, password=registry.password, tls_verify=registry.ca_file is not None,
                   ca_bundle=str(registry.ca_file) if registry.ca_file else None, attempts=2, wait_max=0.5)
    return Client(registry.host, **{**options, **overrides})


def push_synthetic_base(registry: Registry, repository: str, tag: str = "0.1.0", *, workdir: Path,
                        oci_index: bool = False, marker: str = "") -> str:
    """Push a two-layer image (a file in etc/, one in usr/share/) with an entrypoint, env and labels, as Docker
    schema 2, or (`oci_index`) as an OCI index of an arm64 and an amd64 image; returns its reference.
    `marker` changes a layer's content (another base digest)."""
    import json

    from flops_builder.images import CONFIG_MEDIA_TYPES, LAYER_MEDIA_TYPES
    from flops_builder.layers import write_layer
    from flops_builder.registry import OCI_INDEX, OCI_MANIFEST, SCHEMA2_MANIFEST, sha256

    repo = client_for(registry).repository(repository)
    stem = f"{repository.replace('/', '_')}-{tag}"
    layers = []
    for i, (folder, name, text) in enumerate([("etc", "flops-base", f"synthetic base {marker}\n"),
                                               ("usr/share/flops", "README", "a base layer\n")]):
        src = workdir / f"{stem}-src{i}"
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
        layer = write_layer(src, folder, workdir / f"{stem}-{i}.tar.gz")
        repo.push_file(str(layer.path), layer.digest)
        layers.append(layer)
    kind = OCI_MANIFEST if oci_index else SCHEMA2_MANIFEST

    def image(architecture: str, manifest_tag: str) -> tuple[str, int]:
        config = {"architecture": architecture, "os": "linux", "created": "2024-01-01T00:00:00Z",
                  "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "FLOPS_WORKDIR=/var/lib/flops"],
                             "Entrypoint": ["flops-learner"], "User": "10001:10001",
                             "Labels": {"org.opencontainers.image.title": f"synthetic {repository}"}},
                  "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
                  "history": [{"created_by": f"synthetic layer {i}"} for i in range(len(layers))]}
        config_raw = json.dumps(config).encode()
        repo.push_bytes(config_raw, sha256(config_raw))
        manifest = {"schemaVersion": 2, "mediaType": kind,
                    "config": {"mediaType": CONFIG_MEDIA_TYPES[kind], "digest": sha256(config_raw),
                               "size": len(config_raw)},
                    "layers": [{"mediaType": LAYER_MEDIA_TYPES[kind], "digest": layer.digest, "size": layer.size}
                               for layer in layers]}
        return repo.put_manifest(manifest_tag, manifest), len(json.dumps(manifest, separators=(",", ":")))

    if not oci_index:
        image("amd64", tag)
        return f"{registry.host}/{repository}:{tag}"
    entries = []
    for architecture in ("arm64", "amd64"):  # amd64 second: found by its platform, not by its place
        digest, size = image(architecture, f"{tag}-{architecture}")
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                        "platform": {"architecture": architecture, "os": "linux"}})
    repo.put_manifest(tag, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return f"{registry.host}/{repository}:{tag}"


# -- the real FL bases, pushed once ----------------------------------------------------------------------------
CACHE_ROOT = Path(os.environ.get("FLOPS_TEST_CACHE") or Path.home() / ".cache" / "flops-tests") / "registry-bases"


def bases_storage(images: dict[str, str], workdir: Path) -> tuple[Path, float]:
    """A registry storage holding `images` ({repository: local podman image}), and the seconds making it took.

    `podman push` of the FL images compresses gigabytes (about a minute here), so the pushed storage is kept in
    CACHE_ROOT under the images' ids (FLOPS_TEST_CACHE overrides where): the next session with the same images
    only copies it (blobs hard-linked: distribution never rewrites a blob; the small rest copied, as a registry
    does rewrite tag links). Other ids' storages are removed: only the images of today are kept."""
    import hashlib
    import json as json_

    from tests.oakestra_emulator.podman import podman_sync

    started = time.monotonic()
    ids = {repo: podman_sync("image", "inspect", "--format", "{{.Id}}", image).out.strip()
           for repo, image in images.items()}
    key = hashlib.sha256(json_.dumps(sorted(ids.items())).encode()).hexdigest()[:16]
    cached = CACHE_ROOT / key
    if not (cached / "complete").exists():
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        for other in CACHE_ROOT.iterdir():
            shutil.rmtree(other, ignore_errors=True)
        pusher = start_registry(CACHE_ROOT / f".{key}-building")
        try:
            for repository, image in images.items():
                push_local_image(image, pusher, repository)
        finally:
            pusher.stop()
        (CACHE_ROOT / f".{key}-building" / "complete").write_text(json_.dumps(ids))
        os.rename(CACHE_ROOT / f".{key}-building", cached)
    storage = workdir / "storage"
    v2 = Path("docker") / "registry" / "v2"
    (storage / v2).mkdir(parents=True)
    subprocess.run(["cp", "-al", str(cached / "storage" / v2 / "blobs"), str(storage / v2 / "blobs")], check=True,
                   timeout=600)
    shutil.copytree(cached / "storage" / v2 / "repositories", storage / v2 / "repositories", symlinks=True)
    return storage, time.monotonic() - started


@dataclass
class RealBases:
    registry: Registry
    learner: str
    aggregator: str
    seconds: float
    """How long getting them into the registry took (a push, or a copy of the cached push)."""


@pytest.fixture(scope="session")
def real_bases(tmp_path_factory) -> Iterator[RealBases]:
    """A registry with a login (loopback, plain HTTP) holding the locally built learner and aggregator images as
    flops/learner:<version> and flops/aggregator:<version>. Skips when podman or the images are missing."""
    from flops_operator.plan import images
    from tests.oakestra_emulator.podman import available, podman_sync

    why = available()
    local = {f"flops/{name}": images.image(name) for name in ("learner", "aggregator")}
    missing = [i for i in local.values() if why is None and podman_sync("image", "exists", i, check=False).code]
    if why or missing:
        reason = why or f"images not built: {', '.join(missing)} (run `make images`)"
        if os.environ.get("FLOPS_REQUIRE_CONTAINERS") == "1":
            pytest.fail(f"{reason} (FLOPS_REQUIRE_CONTAINERS=1)")
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("real-bases")
    storage, seconds = bases_storage(local, workdir)
    started = start_registry(workdir / "registry", auth=("flops", secrets.token_urlsafe(12)), storage=storage)
    version = images.IMAGE_VERSION
    print(f"\nreal bases in the test registry in {seconds:.1f}s")
    yield RealBases(started, f"{started.host}/flops/learner:{version}", f"{started.host}/flops/aggregator:{version}",
                    seconds)
    started.stop()
