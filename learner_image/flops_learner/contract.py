"""The learner image's contract with the operator, and the task/data shapes both FL images share.

One typed model per image: the operator's plan renders a learner's environment with `LearnerEnv.to_env()`
(flops_operator.plan.desired) and the entrypoint reads it back with the same model, so a field renamed or
added on one side cannot go unnoticed on the other. Only pydantic is imported here: the operator, whose
image has no torch or Flower, imports this module.

    FLOPS_TASK                 {"task": TaskRef, "data": DataRef} as JSON
    FLOPS_SUPERLINK            host:port of the aggregator's SuperLink
    FLOPS_PARTITION_ID         this learner's partition, 0-based
    FLOPS_NUM_PARTITIONS       how many partitions (learners) the data is split into
    FLOPS_CLIENTAPPIO_ADDRESS  host:port of the SuperNode's own local ClientApp IO API
    FLOPS_WORKDIR              a writable directory
    FLOPS_MAX_WAIT_SECONDS     optional: how long an unreachable aggregator is waited for
    FLOPS_CLIENTAPP            warm | subprocess: how each message's ClientApp process starts
    FLOPS_IDLE_POLL_SECONDS    optional: the SuperNode's wait after a pull that found no message (unset: Flower's 3 s)
    FLOPS_FLOWER_ROOT_CERT     the project's CA certificate (base64 of PEM): the only one the SuperNode trusts; with
    FLOPS_SUPERNODE_KEY        this learner's own SuperNode key (base64 of PKCS#8 PEM; random, a new one for every
                               learner service the operator creates),
    FLOPS_SUPERNODE_CERT       the certificate the project's CA issued for that key, naming this learner (base64 of
                               PEM),
    FLOPS_ENROLL_ADDRESS       host:port where the aggregator takes that certificate (HTTPS) and admits the key.
                               All four unset: plain HTTP, no authentication (tests and benchmarks only)

It also names what the ServerApp and the ClientApp add to Flower's message records (both images import it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class Wire(BaseModel):
    """JSON as the operator writes it: camelCase, nothing unknown, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              protected_namespaces=())

    def to_wire(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def dumps(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


_DOTTED_NAME = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
ENTRYPOINT_PATTERN = f"^{_DOTTED_NAME}:{_DOTTED_NAME}$"
"""module:attribute, both dotted Python names (e.g. wine_task:task)."""


class TaskRef(Wire):
    """Which task: a built-in one by name, a user task by entrypoint ("module:attribute", its source folder on the
    path), or a user module in a user image."""

    name: str | None = None
    module: str | None = None
    entrypoint: str | None = Field(default=None, pattern=ENTRYPOINT_PATTERN)
    image: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TaskRef:
        if sum(value is not None for value in (self.name, self.module, self.entrypoint)) != 1:
            raise ValueError("a task has exactly one of name (built-in), entrypoint (module:attribute) or module "
                             "(user code)")
        return self


class Partitioning(Wire):
    scheme: Literal["iid", "dirichlet"]
    alpha: float = Field(gt=0)
    seed: int = Field(ge=0)


class DataRef(Wire):
    """Where a learner's data comes from: a built-in dataset or a node-local file."""

    dataset: str | None = None
    path: str | None = None
    label_column: str | None = None
    partitioning: Partitioning

    @model_validator(mode="after")
    def _one_source(self) -> DataRef:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("data has exactly one of dataset (built-in) or path (node-local file)")
        if self.path is not None and self.label_column is None:
            raise ValueError("data.path needs labelColumn")
        return self


class LearnerTask(Wire):
    """FLOPS_TASK: what the learner trains, on which data."""

    task: TaskRef
    data: DataRef


ENV_TASK = "FLOPS_TASK"
ENV_SUPERLINK = "FLOPS_SUPERLINK"
ENV_PARTITION_ID = "FLOPS_PARTITION_ID"
ENV_NUM_PARTITIONS = "FLOPS_NUM_PARTITIONS"
ENV_CLIENTAPPIO = "FLOPS_CLIENTAPPIO_ADDRESS"
ENV_WORKDIR = "FLOPS_WORKDIR"
ENV_MAX_WAIT = "FLOPS_MAX_WAIT_SECONDS"
ENV_CLIENTAPP = "FLOPS_CLIENTAPP"
ENV_IDLE_POLL = "FLOPS_IDLE_POLL_SECONDS"
ENV_ROOT_CERT = "FLOPS_FLOWER_ROOT_CERT"
ENV_SUPERNODE_KEY = "FLOPS_SUPERNODE_KEY"
ENV_SUPERNODE_CERT = "FLOPS_SUPERNODE_CERT"
ENV_ENROLL_ADDRESS = "FLOPS_ENROLL_ADDRESS"


class LearnerAdmission(BaseModel):
    """What a learner needs to reach a SuperLink that serves TLS and admits the project's learners only: its own
    key and the certificate for it (presented at enroll_address first), and the CA certificate it trusts. Secret:
    supernode_key alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root_cert: str = Field(min_length=1)
    supernode_key: str = Field(min_length=1)
    supernode_cert: str = Field(min_length=1)
    enroll_address: str = Field(min_length=1)

ClientAppLaunch = Literal["warm", "subprocess"]
"""warm: a long-lived launcher beside the SuperNode (Flower's `process` isolation) forks each message's
ClientApp from an interpreter that already holds torch, the task and the data. subprocess: Flower's default,
a fresh `flwr-clientapp` process per message that imports everything again."""


class LearnerEnv(BaseModel):
    """A learner's whole environment as the plan renders it. String fields may hold the plan's
    placeholders ({{addr:...}}, {{workdir}}) until a platform resolves them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: LearnerTask
    superlink: str
    partition_id: int = Field(ge=0)
    num_partitions: int = Field(ge=1)
    clientappio_address: str
    workdir: str
    max_wait_seconds: float | None = Field(default=None, ge=1)
    clientapp: ClientAppLaunch
    idle_poll_seconds: float | None = Field(ge=0.05, le=3)
    """None: Flower's own interval (3 s)."""
    admission: LearnerAdmission | None
    """None: plain HTTP without authentication (tests and benchmarks that compare against it)."""

    @model_validator(mode="after")
    def _partition_exists(self) -> LearnerEnv:
        if self.partition_id >= self.num_partitions:
            raise ValueError(f"partition id {self.partition_id} is outside 0..{self.num_partitions - 1}")
        return self

    def to_env(self) -> dict[str, str]:
        env = {ENV_TASK: self.task.dumps(), ENV_SUPERLINK: self.superlink, ENV_PARTITION_ID: str(self.partition_id),
               ENV_NUM_PARTITIONS: str(self.num_partitions), ENV_CLIENTAPPIO: self.clientappio_address,
               ENV_WORKDIR: self.workdir}
        if self.max_wait_seconds is not None:
            env[ENV_MAX_WAIT] = f"{self.max_wait_seconds:g}"
        env[ENV_CLIENTAPP] = self.clientapp
        if self.idle_poll_seconds is not None:
            env[ENV_IDLE_POLL] = f"{self.idle_poll_seconds:g}"
        if self.admission is not None:
            env.update({ENV_ROOT_CERT: self.admission.root_cert, ENV_SUPERNODE_KEY: self.admission.supernode_key,
                        ENV_SUPERNODE_CERT: self.admission.supernode_cert,
                        ENV_ENROLL_ADDRESS: self.admission.enroll_address})
        return env


# What FLOps adds to Flower's message records ("arrays", "metrics", "config").
TIMING_RECORD = "timing"
"""ConfigRecord in every ClientApp reply: where its time went (flops_learner.timing)."""
EVALUATION_RECORD = "evaluation"
"""ConfigRecord in a train reply that evaluated the received model first (same keys as an evaluate reply's
MetricRecord). A ConfigRecord: Flower's strategies accept exactly one MetricRecord per reply."""
EVALUATE_RECEIVED = "evaluate-received"
"""Train config flag: evaluate the received global model before training on it (one exchange per round)."""
STARTED_AT, ENTERED_AT, REPLIED_AT = "started-at", "entered-at", "replied-at"
SETUP_SECONDS, EVALUATE_SECONDS, FIT_SECONDS = "setup-seconds", "evaluate-seconds", "fit-seconds"
