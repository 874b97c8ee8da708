"""The builder image's contract with the operator: one typed model for the environment of a build.

The operator renders a builder service's environment with `BuilderEnv.to_env()` and `flops-builder` reads it
back with `BuilderEnv.from_env()`, so a field renamed on one side cannot go unnoticed on the other. Only pydantic
is imported here: the operator imports this module.

    FLOPS_BUILD               JSON BuildSpec: {"source": {"url", "commit", "path"}, "entrypoint": str|null,
                              "bases": {"learner": ref, "aggregator": ref}, "target": "<registry>/<prefix>",
                              "tlsVerify": bool}
    FLOPS_GIT_USERNAME        optional Git login (with FLOPS_GIT_PASSWORD, a password or token)
    FLOPS_GIT_PASSWORD        optional
    FLOPS_GIT_SSH_KEY         optional private key (PEM/OpenSSH text) for ssh:// and scp-like URLs
    FLOPS_GIT_KNOWN_HOSTS     optional known_hosts lines for that key (without them the host key is not checked)
    FLOPS_REGISTRY_USERNAME   optional login to the target registry (Basic, or exchanged for a Bearer token)
    FLOPS_REGISTRY_PASSWORD   optional
    FLOPS_REGISTRY_CA         optional CA certificate (PEM, or base64 of PEM) the target registry's TLS certificate
                              chains to, trusted besides the public CAs (or set REQUESTS_CA_BUNDLE to a bundle file)
    FLOPS_WORKDIR             a writable directory (the checkout, the environment cache and the layers go there)

Secrets travel only in the FLOPS_GIT_* / FLOPS_REGISTRY_* variables, never in FLOPS_BUILD.
"""

from __future__ import annotations

import re
from typing import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

ENV_BUILD = "FLOPS_BUILD"
ENV_GIT_USERNAME = "FLOPS_GIT_USERNAME"
ENV_GIT_PASSWORD = "FLOPS_GIT_PASSWORD"
ENV_GIT_SSH_KEY = "FLOPS_GIT_SSH_KEY"
ENV_GIT_KNOWN_HOSTS = "FLOPS_GIT_KNOWN_HOSTS"
ENV_REGISTRY_USERNAME = "FLOPS_REGISTRY_USERNAME"
ENV_REGISTRY_PASSWORD = "FLOPS_REGISTRY_PASSWORD"
ENV_REGISTRY_CA = "FLOPS_REGISTRY_CA"
ENV_WORKDIR = "FLOPS_WORKDIR"

_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1, or SHA-256 object format
# An image reference without tag or digest is "<registry host>/<repository>"; the host has a dot, a colon or is
# localhost (Docker's rule), so a reference here always names its registry: the builder never guesses docker.io.
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


class Wire(BaseModel):
    """JSON as the operator writes it: camelCase, nothing unknown, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class SourceSpec(Wire):
    """Where the task's code is: a Git repository at one commit (the operator resolved the ref), and a folder."""

    url: str = Field(min_length=1)
    commit: str
    path: str = ""

    @field_validator("url")
    @classmethod
    def _no_secret(cls, value: str) -> str:
        # A token in the URL would end up in logs and in the images' labels.
        if re.match(r"[a-z][a-z0-9+.-]*://[^/@]*:[^/@]*@", value, re.IGNORECASE):
            raise ValueError("url holds a password; give it in the Git credentials Secret instead")
        return value

    @field_validator("commit")
    @classmethod
    def _full_commit(cls, value: str) -> str:
        if not _COMMIT.fullmatch(value):
            raise ValueError("commit is a full hexadecimal object name (40 or 64 lower-case hex digits)")
        return value

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = [p for p in value.strip("/").split("/") if p not in ("", ".")]
        if value.startswith("/") or ".." in parts:
            raise ValueError("path is relative to the repository's root and stays inside it")
        return "/".join(parts)


_REFERENCE = re.compile(rf"(?P<host>[^/]+)/(?P<repository>{_REPOSITORY.pattern})"
                        r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?")


def _names_registry(host: str) -> bool:
    return "." in host or ":" in host or host == "localhost"


class Bases(Wire):
    """The images the built ones extend: <registry host>/<repository>:<tag> (or @sha256:...)."""

    learner: str
    aggregator: str

    @field_validator("learner", "aggregator")
    @classmethod
    def _reference(cls, value: str) -> str:
        match = _REFERENCE.fullmatch(value)
        if not match or not _names_registry(match["host"]) or not (match["tag"] or match["digest"]):
            raise ValueError("a base is <registry host>/<repository>:<tag> or ...@sha256:<digest>, "
                             "e.g. registry.example.com/flops/learner:0.1.0")
        return value


class BuildSpec(Wire):
    """FLOPS_BUILD: what to build, onto which bases, pushed where."""

    source: SourceSpec
    entrypoint: str | None = None
    bases: Bases
    target: str
    tls_verify: bool = True
    """False only for a registry explicitly marked insecure: HTTPS without verification, or plain HTTP."""

    @field_validator("entrypoint")
    @classmethod
    def _module_attribute(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
            raise ValueError("entrypoint is module:attribute, e.g. wine_task:task")
        return value

    @field_validator("target")
    @classmethod
    def _registry_prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        host, _, repository = value.partition("/")
        if not repository or not _names_registry(host) or not _REPOSITORY.fullmatch(repository):
            raise ValueError("target is <registry host>/<repository prefix>, e.g. registry.example.com/team/wine")
        return value


class BuilderEnv(BaseModel):
    """A builder's whole environment. Credentials are plain strings here: the operator fills them from the
    Secrets the spec names; they are never logged (repr hides them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    build: BuildSpec
    workdir: str = Field(min_length=1)
    git_username: str | None = Field(default=None, repr=False)
    git_password: str | None = Field(default=None, repr=False)
    git_ssh_key: str | None = Field(default=None, repr=False)
    git_known_hosts: str | None = Field(default=None, repr=False)
    registry_username: str | None = Field(default=None, repr=False)
    registry_password: str | None = Field(default=None, repr=False)
    registry_ca: str | None = None

    def to_env(self) -> dict[str, str]:
        env = {ENV_BUILD: self.build.model_dump_json(by_alias=True), ENV_WORKDIR: self.workdir}
        for name, value in self._secrets().items():
            if value is not None:
                env[name] = value
        return env

    def _secrets(self) -> dict[str, str | None]:  # and the CA, which is no secret but optional too
        return {ENV_GIT_USERNAME: self.git_username, ENV_GIT_PASSWORD: self.git_password,
                ENV_GIT_SSH_KEY: self.git_ssh_key, ENV_GIT_KNOWN_HOSTS: self.git_known_hosts,
                ENV_REGISTRY_USERNAME: self.registry_username, ENV_REGISTRY_PASSWORD: self.registry_password,
                ENV_REGISTRY_CA: self.registry_ca}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BuilderEnv:
        """Read a builder's environment (empty variables count as unset). Raises ValueError (pydantic's
        ValidationError) naming the variable or field that is wrong."""
        def get(name: str) -> str | None:
            return env.get(name) or None

        if get(ENV_BUILD) is None:
            raise ValueError(f"{ENV_BUILD} is not set")
        return cls(build=BuildSpec.model_validate_json(env[ENV_BUILD]), workdir=get(ENV_WORKDIR) or "",
                   git_username=get(ENV_GIT_USERNAME), git_password=get(ENV_GIT_PASSWORD),
                   git_ssh_key=get(ENV_GIT_SSH_KEY), git_known_hosts=get(ENV_GIT_KNOWN_HOSTS),
                   registry_username=get(ENV_REGISTRY_USERNAME), registry_password=get(ENV_REGISTRY_PASSWORD),
                   registry_ca=get(ENV_REGISTRY_CA))
