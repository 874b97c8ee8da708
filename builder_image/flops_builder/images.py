"""Images made by appending layers to a base image in the registry, as ko and jib do: no container runtime, no
privileges, nothing executed inside the image.

The base's manifest (Docker schema 2 or OCI; from a manifest list or index, the entry for this machine's
platform) and config are read; the new config is the base's with the layers' diff_ids, one history entry each,
PYTHONPATH and labels added; the new manifest is the base's with the layers' descriptors appended. Blobs are
put only where the target repository lacks them: a cross-repository mount when the registry holds them in the
base's repository (no bytes travel), else a copy (a base on another registry) or an upload (our own layers).
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import BuildError
from .registry import INDEXES, MANIFESTS, OCI_MANIFEST, SCHEMA2_MANIFEST, Client, Reference, Repository, sha256

FORMAT = "flops-builder/1"
"""Part of every image tag: a builder that lays out images differently must not reuse older tags."""
TASK_DIR = "/opt/flops/task"
DEPS_DIR = "/opt/flops/deps"
LAYER_MEDIA_TYPES = {SCHEMA2_MANIFEST: "application/vnd.docker.image.rootfs.diff.tar.gzip",
                     OCI_MANIFEST: "application/vnd.oci.image.layer.v1.tar+gzip"}
CONFIG_MEDIA_TYPES = {SCHEMA2_MANIFEST: "application/vnd.docker.container.image.v1+json",
                      OCI_MANIFEST: "application/vnd.oci.image.config.v1+json"}
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def this_platform() -> tuple[str, str]:
    """(os, architecture) in OCI's words of the machine the builder runs on: the dependency layer holds wheels
    for it, so the images are for it too."""
    machine = platform.machine().lower()
    return "linux", _ARCHES.get(machine, machine)


@dataclass(frozen=True)
class NewLayer:
    """A layer to append: its file to upload, or the repository where the registry already holds its blob."""

    digest: str
    diff_id: str
    size: int
    created_by: str
    file: Path | None = None
    source: Repository | None = None


@dataclass(frozen=True)
class Base:
    reference: Reference
    repository: Repository
    manifest: dict
    media_type: str
    digest: str
    """The digest of the image manifest used (the platform's entry of a list, or the manifest itself)."""
    config: dict


@dataclass
class Transfers:
    """What went to the registry for a build: blobs it had, mounted, copied across registries or uploaded."""

    existed: int = 0
    mounted: int = 0
    copied: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    manifests: int = 0

    def since(self, before: Transfers) -> Transfers:
        return Transfers(**{f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self)})

    def summary(self) -> str:
        return (f"blobs: {self.uploaded} uploaded ({self.uploaded_bytes / 1e6:.1f} MB), {self.mounted} mounted, "
                f"{self.copied} copied, {self.existed} already there; {self.manifests} manifests")


def pick_platform(index: dict, os_name: str, architecture: str) -> dict:
    """The descriptor of a manifest list's / index's image for the platform (a variant is ignored)."""
    for entry in index.get("manifests", []):
        wanted = entry.get("platform", {})
        if wanted.get("os") == os_name and wanted.get("architecture") == architecture:
            return entry
    offered = ", ".join(f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                        for m in index.get("manifests", []))
    raise BuildError("registry", None, f"the base image has no {os_name}/{architecture} entry (it has: {offered})")


def read_base(client: Client, text: str, platform_: tuple[str, str] | None = None) -> Base:
    """The base image `text` names: its (platform's) manifest, config and digest."""
    reference = Reference.parse(text)
    repository = client.repository(reference.repository)
    manifest = repository.manifest(reference.reference)
    if manifest is None:
        raise BuildError("registry", None, f"base image {text} not found in registry {reference.host}")
    if manifest.media_type in INDEXES or "manifests" in manifest.json():
        entry = pick_platform(manifest.json(), *(platform_ or this_platform()))
        manifest = repository.manifest(entry["digest"])
        if manifest is None:
            raise BuildError("registry", None, f"base image {text}: its entry {entry['digest']} is missing")
    body = manifest.json()
    media_type = body.get("mediaType") or manifest.media_type
    if media_type not in MANIFESTS:
        raise BuildError("registry", None, f"base image {text} has a {media_type or 'schema 1'} manifest; "
                                           "Docker schema 2 or OCI images only")
    config = json.loads(repository.blob(body["config"]["digest"]))
    return Base(reference, repository, {**body, "mediaType": media_type}, media_type, manifest.digest, config)


def image_tag(tree: str, entrypoint: str, base_digests: list[str]) -> str:
    """The tag of the images built from a source tree with an entrypoint on bases: same inputs, same tag (the
    cache key of the whole build)."""
    basis = json.dumps([FORMAT, tree, entrypoint, base_digests])
    return "src-" + hashlib.sha256(basis.encode()).hexdigest()[:24]


def python_path(has_deps: bool, existing: str | None) -> str:
    paths = [TASK_DIR] + ([DEPS_DIR] if has_deps else [])
    return ":".join(paths + ([existing] if existing else []))


def extended_config(config: dict, layers: list[NewLayer], env: dict[str, str], labels: dict[str, str]) -> dict:
    """The base's config with the layers, their history, `env` (set or replaced) and `labels` (added)."""
    out = copy.deepcopy(config)
    out.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", [])
    out["rootfs"]["diff_ids"] += [layer.diff_id for layer in layers]
    # One history entry per layer (not empty_layer): tools pair history with layers.
    out["history"] = out.get("history", []) + [{"created_by": layer.created_by, "comment": FORMAT}
                                               for layer in layers]
    settings = out.setdefault("config", {}) or {}
    out["config"] = settings
    variables = [v for v in settings.get("Env") or [] if v.split("=", 1)[0] not in env]
    settings["Env"] = variables + [f"{k}={v}" for k, v in env.items()]
    settings["Labels"] = {**(settings.get("Labels") or {}), **labels}
    return out


def env_value(config: dict, name: str) -> str | None:
    for variable in (config.get("config") or {}).get("Env") or []:
        key, _, value = variable.partition("=")
        if key == name:
            return value
    return None


def extended_manifest(manifest: dict, config_raw: bytes, layers: list[NewLayer]) -> dict:
    """The base's manifest with the new config and the layers appended (media types of the base's kind)."""
    kind = manifest["mediaType"]
    out = copy.deepcopy(manifest)
    out["config"] = {"mediaType": CONFIG_MEDIA_TYPES[kind], "digest": sha256(config_raw), "size": len(config_raw)}
    out["layers"] = out.get("layers", []) + [{"mediaType": LAYER_MEDIA_TYPES[kind], "digest": layer.digest,
                                              "size": layer.size} for layer in layers]
    return out


def ensure_blob(target: Repository, digest: str, transfers: Transfers, *, file: Path | None = None,
                data: bytes | None = None, source: Repository | None = None) -> bool:
    """Make the target repository hold the blob; True if it had it already. Cheapest first: a mount from `source`
    on the same registry, else an upload of `file` / `data`, else a copy from `source`."""
    if target.has_blob(digest):
        transfers.existed += 1
        return True
    if source is not None and source.client.host == target.client.host and target.mount(digest, source.name):
        transfers.mounted += 1
    elif file is not None:
        target.push_file(str(file), digest)
        transfers.uploaded += 1
        transfers.uploaded_bytes += file.stat().st_size
    elif data is not None:
        target.push_bytes(data, digest)
        transfers.uploaded += 1
        transfers.uploaded_bytes += len(data)
    elif source is None:
        raise BuildError("push", None, f"blob {digest} has no source to copy from")
    else:
        target.copy_blob(digest, source)
        transfers.copied += 1
    return False


def push_image(target: Repository, tag: str, base: Base, layers: list[NewLayer], env: dict[str, str],
               labels: dict[str, str], transfers: Transfers) -> str:
    """Push base + layers as target:tag; returns the manifest's digest."""
    for descriptor in base.manifest.get("layers", []):
        ensure_blob(target, descriptor["digest"], transfers, source=base.repository)
    for layer in layers:
        ensure_blob(target, layer.digest, transfers, file=layer.file, source=layer.source)
    config_raw = json.dumps(extended_config(base.config, layers, env, labels), separators=(",", ":")).encode()
    ensure_blob(target, sha256(config_raw), transfers, data=config_raw)
    digest = target.put_manifest(tag, extended_manifest(base.manifest, config_raw, layers))
    transfers.manifests += 1
    return digest


def layer_config(layer: NewLayer, labels: dict[str, str], platform_: tuple[str, str] | None = None) -> dict:
    """The config of a one-layer image (how a dependency layer is kept in the registry, under deps:<key>)."""
    os_name, architecture = platform_ or this_platform()
    return {"architecture": architecture, "os": os_name, "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created_by": layer.created_by, "comment": FORMAT}]}


def push_layer_image(target: Repository, tag: str, layer: NewLayer, labels: dict[str, str],
                     transfers: Transfers) -> str:
    """Keep one layer in the registry as the small image target:tag (Docker schema 2)."""
    ensure_blob(target, layer.digest, transfers, file=layer.file, source=layer.source)
    config_raw = json.dumps(layer_config(layer, labels), separators=(",", ":")).encode()
    ensure_blob(target, sha256(config_raw), transfers, data=config_raw)
    manifest = extended_manifest({"schemaVersion": 2, "mediaType": SCHEMA2_MANIFEST, "layers": []},
                                 config_raw, [layer])
    digest = target.put_manifest(tag, manifest)
    transfers.manifests += 1
    return digest


def read_layer_image(repository: Repository, tag: str) -> NewLayer | None:
    """The layer kept as repository:tag by push_layer_image, or None if there is none."""
    manifest = repository.manifest(tag)
    if manifest is None:
        return None
    body = manifest.json()
    layers = body.get("layers", [])
    config = json.loads(repository.blob(body["config"]["digest"]))
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if len(layers) != 1 or len(diff_ids) != 1:
        return None  # not one of ours: rebuild rather than trust it
    history = config.get("history") or [{}]
    return NewLayer(layers[0]["digest"], diff_ids[0], layers[0]["size"], history[0].get("created_by", ""),
                    source=repository)
