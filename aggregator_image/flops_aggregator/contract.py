"""The aggregator image's contract with the operator: one typed model of what the plan renders into its
environment, used by the renderer (flops_operator.plan.desired) and by the entrypoint alike.

Every value is set by the plan (no defaults hide here: a field the plan forgets is a validation error, not a
silent fallback). Only pydantic is imported, so the operator's slim image can import it.

    FLOPS_CONFIG              AggregatorConfig as JSON (the training; never credentials)
    FLOPS_SUPERLINK_ADDRESS   host:port the SuperLink listens on (Fleet, Control, Runtime APIs)
    FLOPS_WORKDIR             a writable directory (FLWR_HOME, best model, result)
    MLFLOW_TRACKING_URI       the tracking server; empty: bare mode, nothing is logged (benchmarks)
    FLOPS_FLOWER_CA_CERT      the project's CA certificate (base64 of PEM: flops_runtime.pki; never its key); with the
                              three below, the SuperLink serves TLS and admits only learners whose certificate that CA
                              issued. All four unset: plain HTTP, anyone who reaches the port may join (tests and
                              benchmarks only)
    FLOPS_SUPERLINK_CERT      the SuperLink's TLS certificate, issued by the operator from that CA for the address the
                              learners use and loopback (base64 of PEM)
    FLOPS_SUPERLINK_KEY       its private key (base64 of PKCS#8 PEM; random, a new one for every aggregator created)
    FLOPS_ENROLL_ADDRESS      host:port where learners present their certificates (HTTPS with the same certificate;
                              flops_aggregator.enrollment)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flops_learner.contract import DataRef, TaskRef, Wire

STRATEGIES = ("FedAvg", "FedProx", "FedAdam", "FedAdagrad", "FedYogi", "FedMedian", "FedTrimmedAvg")


class ProjectId(Wire):
    namespace: str
    name: str
    uid: str


class Strategy(Wire):
    name: Literal[STRATEGIES]  # type: ignore[valid-type]
    arguments: dict[str, float]
    """The strategy's own arguments, snake_case as Flower names them (proximal_mu, eta, ...)."""
    fraction_train: float = Field(gt=0, le=1)
    fraction_evaluate: float = Field(ge=0, le=1)


Evaluation = Literal["fused", "separate"]
"""fused: the learners evaluate the global model they receive at the start of the next round's train message
and reply with both, plus one final evaluate exchange (one exchange per round). separate: Flower's loop as is,
a train and an evaluate exchange per round. The metrics keep their round numbers either way."""
MlflowLogging = Literal["async", "sync"]
"""async: per-round metrics and tags go through MLflow's asynchronous logging (flushed when the run ends) and
the final model is exported while the last evaluation runs; sync: every call waits for the tracking server."""

ObjectPulls = Literal["quick", "flower"]
"""How the ServerApp retries pulling a reply's objects that are not at the SuperLink yet: quick (0.05 s, doubling
up to 1 s; flops_runtime.flower_pulls) or as Flower does (1 s, doubling up to 10 s)."""

class BestModel(Wire):
    metric: str
    mode: Literal["max", "min"]


class Training(Wire):
    rounds: int = Field(ge=1)
    strategy: Strategy
    min_train_learners: int = Field(ge=1)
    min_evaluate_learners: int = Field(ge=1)
    min_available_learners: int = Field(ge=1)
    local_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    round_timeout_seconds: float = Field(gt=0)
    best_model: BestModel
    evaluation: Evaluation
    object_pulls: ObjectPulls


class Registry(Wire):
    model_name: str
    alias: str


class AggregatorConfig(Wire):
    """FLOPS_CONFIG: one training of one project."""

    project: ProjectId
    training_id: str = Field(min_length=1)
    """The training identity (flops_operator.models.edits): the MLflow run is tagged with it, and the
    operator reads only runs of the identity its spec asks for."""
    experiment: str
    """The MLflow experiment: <namespace>/<name>."""
    task: TaskRef
    data: DataRef
    num_learners: int = Field(ge=1)
    training: Training
    registry: Registry
    mlflow_logging: MlflowLogging


ENV_CONFIG = "FLOPS_CONFIG"
ENV_SUPERLINK_ADDRESS = "FLOPS_SUPERLINK_ADDRESS"
ENV_WORKDIR = "FLOPS_WORKDIR"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_FLOWER_CA_CERT = "FLOPS_FLOWER_CA_CERT"
ENV_SUPERLINK_CERT = "FLOPS_SUPERLINK_CERT"
ENV_SUPERLINK_KEY = "FLOPS_SUPERLINK_KEY"
ENV_ENROLL_ADDRESS = "FLOPS_ENROLL_ADDRESS"


class FlowerAdmission(BaseModel):
    """TLS and SuperNode authentication for the aggregator's SuperLink (placeholders until a platform renders them).
    Secret: key alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: str = Field(min_length=1)
    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)
    enroll_address: str = Field(min_length=1)


class AggregatorEnv(BaseModel):
    """The aggregator's whole environment as the plan renders it. String fields may hold the plan's
    placeholders ({{bind}}, {{workdir}}, {{addr:...}}) until a platform resolves them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: AggregatorConfig
    superlink_address: str
    workdir: str
    tracking_uri: str = ""
    admission: FlowerAdmission | None
    """None: the SuperLink runs --insecure (tests and benchmarks that compare against it)."""

    def to_env(self) -> dict[str, str]:
        env = {ENV_SUPERLINK_ADDRESS: self.superlink_address, ENV_WORKDIR: self.workdir,
               ENV_TRACKING_URI: self.tracking_uri, ENV_CONFIG: self.config.dumps()}
        if self.admission is not None:
            env.update({ENV_FLOWER_CA_CERT: self.admission.ca_cert, ENV_SUPERLINK_CERT: self.admission.cert,
                        ENV_SUPERLINK_KEY: self.admission.key, ENV_ENROLL_ADDRESS: self.admission.enroll_address})
        return env
