"""The tracking-server image's contract with the operator: what the plan renders into its environment,
shared by the renderer (flops_operator.plan.desired) and the entrypoint (flops_tracking.__main__).

Only pydantic is imported, so the operator's slim image can import it.

    FLOPS_WORKDIR                     a writable directory: the auth ini and the user store (SQLite)
    FLOPS_MLFLOW_EXPERIMENT           the project's experiment (created if missing)
    FLOPS_MLFLOW_MODEL                the project's registered model (created if missing)
    MLFLOW_AUTH_ADMIN_PASSWORD        the admin's password (user `admin`)
    FLOPS_MLFLOW_AGGREGATOR_PASSWORD  the aggregator's password (user `flops-aggregator`: EDIT on both)
    FLOPS_MLFLOW_READER_PASSWORD      the read-only user's password (user `flops-reader`: READ on both)
    MLFLOW_FLASK_SERVER_SECRET_KEY    signs the UI's sessions and CSRF tokens
    FLOPS_ALLOWED_HOSTS_TAG           optional: the experiment tag whose value (host:port, comma-separated) the
                                      server must also answer to; MLflow is restarted with it when it changes
                                      (flops_tracking.allowed_hosts). Unset: --allowed-hosts as given, exec.

Passwords come through the environment only: never argv, never the ini file.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ADMIN_USER = "admin"
AGGREGATOR_USER = "flops-aggregator"
READER_USER = "flops-reader"

ENV_WORKDIR = "FLOPS_WORKDIR"
ENV_EXPERIMENT = "FLOPS_MLFLOW_EXPERIMENT"
ENV_MODEL = "FLOPS_MLFLOW_MODEL"
ENV_ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
ENV_AGGREGATOR_PASSWORD = "FLOPS_MLFLOW_AGGREGATOR_PASSWORD"
ENV_READER_PASSWORD = "FLOPS_MLFLOW_READER_PASSWORD"
ENV_SECRET_KEY = "MLFLOW_FLASK_SERVER_SECRET_KEY"
ENV_ALLOWED_HOSTS_TAG = "FLOPS_ALLOWED_HOSTS_TAG"
# The experiment tag the operator writes the server's public address to (Oakestra: the worker's IP and host
# port, known only once the server runs).
ALLOWED_HOSTS_TAG = "flops.allowed-hosts"
# What every MLflow client reads (the aggregator, the model server, people's scripts).
ENV_CLIENT_USERNAME = "MLFLOW_TRACKING_USERNAME"
ENV_CLIENT_PASSWORD = "MLFLOW_TRACKING_PASSWORD"


class TrackingEnv(BaseModel):
    """The tracking server's own environment (besides MLflow's store URIs). Fields may hold the plan's
    placeholders until a platform resolves them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workdir: str = Field(min_length=1)
    experiment: str = Field(min_length=1)
    model: str = Field(min_length=1)
    admin_password: str = Field(min_length=1)
    aggregator_password: str = Field(min_length=1)
    reader_password: str = Field(min_length=1)
    secret_key: str = Field(min_length=1)
    allowed_hosts_tag: str | None = None

    def to_env(self) -> dict[str, str]:
        env = {ENV_WORKDIR: self.workdir, ENV_EXPERIMENT: self.experiment, ENV_MODEL: self.model,
               ENV_ADMIN_PASSWORD: self.admin_password, ENV_AGGREGATOR_PASSWORD: self.aggregator_password,
               ENV_READER_PASSWORD: self.reader_password, ENV_SECRET_KEY: self.secret_key}
        if self.allowed_hosts_tag:
            env[ENV_ALLOWED_HOSTS_TAG] = self.allowed_hosts_tag
        return env

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "TrackingEnv":
        keys = {"workdir": ENV_WORKDIR, "experiment": ENV_EXPERIMENT, "model": ENV_MODEL,
                "admin_password": ENV_ADMIN_PASSWORD, "aggregator_password": ENV_AGGREGATOR_PASSWORD,
                "reader_password": ENV_READER_PASSWORD, "secret_key": ENV_SECRET_KEY}
        missing = [var for var in keys.values() if not env.get(var)]
        if missing:
            raise ValueError(f"the tracking server needs {', '.join(missing)} in its environment")
        return cls(**{field: env[var] for field, var in keys.items()},
                   allowed_hosts_tag=env.get(ENV_ALLOWED_HOSTS_TAG) or None)
