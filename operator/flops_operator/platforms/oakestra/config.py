"""How to reach Oakestra and how hard to push it: from env vars or a Kubernetes Secret's data."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from ...plan.images import IMAGE_REGISTRY

# Setting -> (env var, Secret/dict key). Secret keys are the lowercase short names.
_KEYS = {
    "url": ("FLOPS_OAKESTRA_URL", "url"),
    "username": ("FLOPS_OAKESTRA_USERNAME", "username"),
    "password": ("FLOPS_OAKESTRA_PASSWORD", "password"),
    "organization": ("FLOPS_OAKESTRA_ORGANIZATION", "organization"),
    "max_in_flight": ("FLOPS_OAKESTRA_MAX_IN_FLIGHT", "maxInFlight"),
    "request_timeout": ("FLOPS_OAKESTRA_REQUEST_TIMEOUT", "requestTimeout"),
    "retries": ("FLOPS_OAKESTRA_RETRIES", "retries"),
    "failure_grace": ("FLOPS_OAKESTRA_FAILURE_GRACE", "failureGrace"),
    "ready_after": ("FLOPS_OAKESTRA_READY_AFTER", "readyAfter"),
    "health_checks": ("FLOPS_OAKESTRA_HEALTH_CHECKS", "healthChecks"),
    "image_registry": ("FLOPS_OAKESTRA_IMAGE_REGISTRY", "imageRegistry"),
    "service_subnet": ("FLOPS_OAKESTRA_SERVICE_SUBNET", "serviceSubnet"),
    "build_registry": ("FLOPS_OAKESTRA_BUILD_REGISTRY", "buildRegistry"),
    "build_registry_username": ("FLOPS_OAKESTRA_BUILD_REGISTRY_USERNAME", "buildRegistryUsername"),
    "build_registry_password": ("FLOPS_OAKESTRA_BUILD_REGISTRY_PASSWORD", "buildRegistryPassword"),
    "build_registry_insecure": ("FLOPS_OAKESTRA_BUILD_REGISTRY_INSECURE", "buildRegistryInsecure"),
}


class ConfigError(ValueError):
    pass


def _boolean(name: str, text: Any) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: {text!r} is not true/false")


@dataclass(frozen=True)
class OakestraConfig:
    url: str
    """System Manager base URL, e.g. http://oakestra-root:10000."""
    username: str = "Admin"
    password: str = field(default="", repr=False)
    organization: str | None = None
    """Organization to log in to (organization_name); None = Oakestra's default ("root")."""
    max_in_flight: int = 32
    """Calls in flight at once, across all projects."""
    request_timeout: float = 10.0
    """Seconds for one call, connect and body included."""
    connect_timeout: float = 5.0
    retries: int = 4
    """Attempts for a call that is safe to repeat (reads, deletes, login)."""
    write_attempts: int = 6
    """Observe-then-write rounds for a create before giving up for this reconcile."""
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    token_refresh_margin: float = 60.0
    """Refresh the access token this many seconds before it expires."""
    failure_grace: float = 120.0
    """FAILED/DEAD instances are retried by Oakestra; only this long a failure is a failure."""
    ready_after: float = 10.0
    """A service without a health endpoint is ready once RUNNING this long (as seen by the driver):
    Oakestra re-deploys crashed instances, so a crash-looping one is RUNNING for a few seconds each time."""
    health_checks: bool = True
    """Ready = its health endpoint answers, for services that publish one (tracking and model server);
    the operator must reach the workers' public addresses (it reads MLflow there too)."""
    health_timeout: float = 3.0
    unschedulable_retry: float = 300.0
    """After a negative scheduling answer, ask for the instance again after this long."""
    rr_ip_attempts: int = 16
    host_port_range: tuple[int, int] = (30000, 40000)
    """Host ports for published container ports (deterministic per project and service)."""
    workdir: str = "/var/lib/flops"
    """FLOPS_WORKDIR of every service: each image of this repository owns it (user 10001)."""
    image_registry: str | None = None
    """Where Oakestra's workers pull the project's own images from, in place of the plan's default
    prefix (ghcr.io/flops-operator): e.g. registry.example.com/flops after `make push REGISTRY=...`."""
    service_subnet: str = "10.30.0.0/16"
    """The network plugin's range of service (round-robin) IPs; Oakestra's is fixed, the test emulator's
    container worker uses its network's."""
    customer_id: str | None = None
    """SLA customerID (Oakestra ignores it for ownership); defaults to the username."""
    build_registry: str | None = None
    """Where the image builder finds the base images and pushes the images it builds from task.source (as
    <registry>/projects/<namespace>/<name>/...); default image_registry. The workers pull from it too."""
    build_registry_username: str | None = None
    build_registry_password: str | None = field(default=None, repr=False)
    """The builder's login to the build registry (push); the workers' pull login is set up on the workers."""
    build_registry_insecure: bool = False
    """true: the build registry's TLS certificate is not verified (a test or private registry, explicitly)."""

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"Oakestra URL must start with http:// or https:// (got {self.url!r})")
        if not self.username or not self.password:
            raise ConfigError("Oakestra username and password are required")
        if self.max_in_flight < 1 or self.retries < 1 or self.write_attempts < 1:
            raise ConfigError("max_in_flight, retries and write_attempts must be at least 1")
        try:
            ipaddress.IPv4Network(self.service_subnet)
        except ValueError as exc:
            raise ConfigError(f"Oakestra service subnet {self.service_subnet!r} is not an IPv4 network: {exc}") from None
        if self.image_registry is not None:
            object.__setattr__(self, "image_registry", self.image_registry.rstrip("/"))
        object.__setattr__(self, "url", self.url.rstrip("/"))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "OakestraConfig":
        env = os.environ if env is None else env
        return cls._build({name: env.get(var) for name, (var, _) in _KEYS.items()}, overrides)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base64_values: bool = False,
                     **overrides: Any) -> "OakestraConfig":
        """From a dict or a Kubernetes Secret: `.data` (base64_values=True) or `.stringData`.

        Keys: url, username, password, organization (and optional maxInFlight, requestTimeout,
        retries, failureGrace, imageRegistry, serviceSubnet); the env-var names are accepted as keys too.
        """
        def value(name: str) -> Any:
            var, key = _KEYS[name]
            raw = data.get(key, data.get(var))
            if raw is None or not base64_values:
                return raw.decode() if isinstance(raw, bytes) else raw
            try:
                return base64.b64decode(raw, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ConfigError(f"Secret key {key!r} is not valid base64") from None
        return cls._build({name: value(name) for name in _KEYS}, overrides)

    @classmethod
    def _build(cls, raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> "OakestraConfig":
        if not raw.get("url"):
            raise ConfigError("Oakestra URL is missing (FLOPS_OAKESTRA_URL or Secret key 'url')")
        types = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, text in raw.items():
            if text in (None, ""):
                continue
            kind = types[name]
            try:
                values[name] = (int(text) if kind == "int" else float(text) if kind == "float"
                                else _boolean(name, text) if kind == "bool" else str(text))
            except ValueError:
                raise ConfigError(f"Oakestra setting {name} must be a {kind.replace('bool', 'true/false')} "
                                  f"(got {text!r})") from None
        return cls(**{**values, **overrides})

    def with_(self, **changes: Any) -> "OakestraConfig":
        return replace(self, **changes)

    @property
    def registry(self) -> str:
        """The registry prefix of the project's images, built ones included."""
        return (self.build_registry or self.image_registry or IMAGE_REGISTRY).rstrip("/")

    def builder_env(self, rendered: Mapping[str, str]) -> dict[str, str]:
        """The image builder's env as the plan rendered it, with this registry's login and TLS choice."""
        env = dict(rendered)
        if "FLOPS_BUILD" in env:
            build = json.loads(env["FLOPS_BUILD"])
            build["tlsVerify"] = not self.build_registry_insecure
            env["FLOPS_BUILD"] = json.dumps(build, sort_keys=True)
        if self.build_registry_username:
            env["FLOPS_REGISTRY_USERNAME"] = self.build_registry_username
        if self.build_registry_password:
            env["FLOPS_REGISTRY_PASSWORD"] = self.build_registry_password
        return env

    def image(self, planned: str) -> str:
        """The image a worker pulls for one the plan names: the plan's default prefix moved to
        image_registry when one is set; users' own images untouched."""
        if self.image_registry and planned.startswith(IMAGE_REGISTRY + "/"):
            return self.image_registry + planned[len(IMAGE_REGISTRY):]
        return planned
