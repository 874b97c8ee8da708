"""The credentials a project needs and who logs in with which: the catalogue and the login policy, pure.

Generated credentials are kept in the project's Secret (cluster) or a 0600 file (local); referenced ones come from
a Secret the spec names. The plan renders them as {{secret:NAME}} placeholders, which only platforms resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from flops_tracking.contract import (AGGREGATOR_USER, ENV_CLIENT_PASSWORD, ENV_CLIENT_USERNAME, READER_USER)

from ..models.spec import FLOpsProjectSpec
from .render import render

# Credentials a project may need; generated once, kept in a Secret (cluster) or a 0600 file (local).
BACKEND_PASSWORD = "backend-password"
BACKEND_ROOT_PASSWORD = "backend-root-password"
FTP_PASSWORD = "ftp-password"
# The tracking server's logins (MLflow basic auth; flops_tracking.bootstrap says who may do what).
MLFLOW_ADMIN_PASSWORD = "mlflow-admin-password"
MLFLOW_AGGREGATOR_PASSWORD = "mlflow-aggregator-password"
MLFLOW_READER_PASSWORD = "mlflow-reader-password"
MLFLOW_SECRET_KEY = "mlflow-flask-secret-key"
MLFLOW_CREDENTIALS = (MLFLOW_ADMIN_PASSWORD, MLFLOW_AGGREGATOR_PASSWORD, MLFLOW_READER_PASSWORD, MLFLOW_SECRET_KEY)
# The project's Flower PKI (flops_runtime.pki): its CA (key and certificate; the operator's alone), the SuperLink's
# TLS key (the aggregator's) and each learner's SuperNode key (that learner's). flower_keys.py says when each is
# generated anew and when deleted.
FLOWER_CA = "flower-ca"
SUPERLINK_KEY = "flower-superlink-key"
LEARNER_KEY_PREFIX = "flower-learner-key-"
# Kept by earlier versions (every learner key derived from it): deleted at the next change of services.
RETIRED_CREDENTIALS = ("flower-learner-key-seed",)
# An existing tracking server's login, read from the Secret spec.tracking.credentialsSecret names.
TRACKING_USERNAME = "tracking-username"
TRACKING_PASSWORD = "tracking-password"


def credential_names(spec: FLOpsProjectSpec) -> list[str]:
    """The credentials the operator generates for the project (kept in its Secret or credentials file)."""
    names = []
    if spec.tracking.uri is None and spec.tracking.backend_store.type == "mysql":
        names += [BACKEND_PASSWORD, BACKEND_ROOT_PASSWORD]
    if spec.tracking.uri is None and spec.tracking.artifact_store.type == "ftp":
        names.append(FTP_PASSWORD)
    if spec.tracking.uri is None:
        names += MLFLOW_CREDENTIALS
    return names + flower_credentials(spec.learners.replicas)


def learner_key(partition: int) -> str:
    """The credential holding learner `partition`'s SuperNode key."""
    return f"{LEARNER_KEY_PREFIX}{partition}"


def flower_credentials(learners: int) -> list[str]:
    """The Flower PKI's credentials for a project of `learners` learners."""
    return [FLOWER_CA, SUPERLINK_KEY, *(learner_key(i) for i in range(learners))]


def is_flower_key(name: str) -> bool:
    """A service's own Flower key (the SuperLink's, a learner's): a new random P-384 key when generated."""
    return name == SUPERLINK_KEY or (name.startswith(LEARNER_KEY_PREFIX) and name[len(LEARNER_KEY_PREFIX):].isdigit())


def referenced_credentials(spec: FLOpsProjectSpec) -> dict[str, str]:
    """Credentials the spec names in a Secret of its own: {credential name: key in that Secret}."""
    ref = spec.tracking.credentials_secret
    if ref is None:
        return {}
    return {TRACKING_USERNAME: ref.username_key, TRACKING_PASSWORD: ref.password_key}


@dataclass(frozen=True)
class Login:
    """A tracking-server login as the plan renders it: literals or {{secret:NAME}} placeholders."""

    username: str
    password: str
    secrets: tuple[str, ...]

    def env(self) -> tuple[tuple[str, str], ...]:
        return ((ENV_CLIENT_USERNAME, self.username), (ENV_CLIENT_PASSWORD, self.password))


def secret_ref(name: str) -> str:
    """The placeholder a platform renders into the credential `name` (plan/render.py)."""
    return "{{secret:%s}}" % name


def login(spec: FLOpsProjectSpec, writer: bool) -> Login | None:
    """The login a client of the project's tracking server uses: the aggregator's (writer) or the read-only
    one (the model server, the operator's progress reads). With tracking.uri, the referenced Secret's (or none)."""
    if spec.tracking.uri is not None:
        if spec.tracking.credentials_secret is None:
            return None
        return Login(secret_ref(TRACKING_USERNAME), secret_ref(TRACKING_PASSWORD), (TRACKING_USERNAME, TRACKING_PASSWORD))
    if writer:
        return Login(AGGREGATOR_USER, secret_ref(MLFLOW_AGGREGATOR_PASSWORD), (MLFLOW_AGGREGATOR_PASSWORD,))
    return Login(READER_USER, secret_ref(MLFLOW_READER_PASSWORD), (MLFLOW_READER_PASSWORD,))


class _Values:
    """Resolves only {{secret:NAME}} (a login's placeholders) from values at hand."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values

    def secret(self, name: str) -> str:
        return self._values[name]


def login_values(spec: FLOpsProjectSpec, values: Mapping[str, str], *, writer: bool) -> tuple[str, str] | None:
    """The login of `login(spec, writer)` with its secrets filled in from `values` (generated and referenced
    credentials by name). None: the server takes none, or a credential it needs is not there (yet)."""
    chosen = login(spec, writer=writer)
    if chosen is None or any(name not in values for name in chosen.secrets):
        return None
    resolver = _Values(values)
    return render(chosen.username, resolver), render(chosen.password, resolver)  # type: ignore[arg-type]
