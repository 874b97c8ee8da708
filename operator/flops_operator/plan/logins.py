"""The credentials a project needs and who logs in with which: the catalogue and the login policy, pure.

Generated credentials are kept in the project's Secret (cluster) or a 0600 file (local); referenced ones come from
a Secret the spec names. The plan renders them as {{secret:NAME}} placeholders, which only platforms resolve.
"""

from __future__ import annotations

from dataclasses import dataclass

from flops_tracking.contract import (AGGREGATOR_USER, ENV_CLIENT_PASSWORD, ENV_CLIENT_USERNAME, READER_USER)

from ..models.spec import FLOpsProjectSpec

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
# The project's Flower PKI (flops_runtime.pki): its CA (key and certificate) and the seed of the learners' keys.
FLOWER_CA = "flower-ca"
LEARNER_KEY_SEED = "flower-learner-key-seed"
FLOWER_CREDENTIALS = (FLOWER_CA, LEARNER_KEY_SEED)
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
    return names + list(FLOWER_CREDENTIALS)


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
