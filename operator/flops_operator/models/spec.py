"""FLOpsProject spec: the single source of truth for the API (the CRD is generated from it)."""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from .base import ApiModel
from .patterns import ALIAS, BUILTIN_DATASETS, CLUSTER_NAME, DNS_SUBDOMAIN, IMAGE, METRIC, MODEL_NAME, SECRET_KEY
from .task import PLAIN_HTTP_GIT_MESSAGE, TaskSpec

USERINFO_MESSAGE = ("tracking.uri must not carry a login (user:password@): status, logs and every service would "
                    "show it; put username and password in a Secret and name it in tracking.credentialsSecret")
PLAIN_HTTP_TRACKING_MESSAGE = ("tracking.credentialsSecret would send its login in plain text: tracking.uri is "
                               "http://; use https, or set tracking.insecure: true to allow it")


class Platform(str, Enum):
    local = "local"
    oakestra = "oakestra"


class DeletionPolicy(str, Enum):
    Delete = "Delete"
    Orphan = "Orphan"


class Partitioning(ApiModel):
    """How a built-in dataset is split across learners (deterministic from seed and partition id)."""

    scheme: Literal["iid", "dirichlet"] = "iid"
    alpha: Annotated[float, Field(gt=0, le=1000)] = 0.5
    """Dirichlet concentration; smaller means more label skew."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 42


class DataSpec(ApiModel):
    """Where each learner's data comes from; it never leaves the learner."""

    dataset: Annotated[str | None, Field(max_length=63)] = None
    """A built-in dataset (digits, iris). Defaults to the task's own dataset."""
    path: Annotated[str | None, Field(max_length=1024, pattern=r"^/")] = None
    """Node-local CSV or Parquet file (absolute path inside the learner)."""
    label_column: Annotated[str | None, Field(max_length=253)] = None
    """The label column of the node-local file."""
    partitioning: Partitioning = Field(default_factory=Partitioning)

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.dataset is not None and self.path is not None:
            raise ValueError("set data.dataset or data.path, not both")
        if self.dataset is not None and self.dataset not in BUILTIN_DATASETS:
            raise ValueError(f"data.dataset {self.dataset!r} is not built in ({', '.join(BUILTIN_DATASETS)})")
        if self.path is not None and self.label_column is None:
            raise ValueError("data.path needs data.labelColumn")
        if self.path is not None and not self.path.endswith((".csv", ".parquet")):
            raise ValueError("data.path must be a .csv or .parquet file")
        return self


class StrategyName(str, Enum):
    FedAvg = "FedAvg"
    FedProx = "FedProx"
    FedAdam = "FedAdam"
    FedAdagrad = "FedAdagrad"
    FedYogi = "FedYogi"
    FedMedian = "FedMedian"
    FedTrimmedAvg = "FedTrimmedAvg"


# Which arguments each strategy takes (beyond the fractions every strategy has).
STRATEGY_ARGUMENTS: dict[StrategyName, tuple[str, ...]] = {
    StrategyName.FedAvg: (),
    StrategyName.FedProx: ("proximal_mu",),
    StrategyName.FedAdam: ("eta", "eta_l", "beta_1", "beta_2", "tau"),
    StrategyName.FedAdagrad: ("eta", "eta_l", "tau"),
    StrategyName.FedYogi: ("eta", "eta_l", "beta_1", "beta_2", "tau"),
    StrategyName.FedMedian: (),
    StrategyName.FedTrimmedAvg: ("beta",),
}
_ALL_ARGUMENTS = ("proximal_mu", "eta", "eta_l", "beta_1", "beta_2", "tau", "beta")


class StrategySpec(ApiModel):
    """The Flower aggregation strategy and its own arguments (others are refused)."""

    name: StrategyName = StrategyName.FedAvg
    fraction_train: Annotated[float, Field(gt=0, le=1)] = 1.0
    """Fraction of available learners asked to train each round."""
    fraction_evaluate: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Fraction of available learners asked to evaluate each round."""
    proximal_mu: Annotated[float | None, Field(ge=0, le=100)] = None
    """FedProx: weight of the proximal term (default 0.1)."""
    eta: Annotated[float | None, Field(gt=0, le=10)] = None
    """FedAdam/FedAdagrad/FedYogi: server learning rate."""
    eta_l: Annotated[float | None, Field(gt=0, le=10, alias="etaL")] = None
    """FedAdam/FedAdagrad/FedYogi: client learning rate (informational in Flower)."""
    beta_1: Annotated[float | None, Field(ge=0, lt=1, alias="beta1")] = None
    """FedAdam/FedYogi: first moment decay."""
    beta_2: Annotated[float | None, Field(ge=0, lt=1, alias="beta2")] = None
    """FedAdam/FedYogi: second moment decay."""
    tau: Annotated[float | None, Field(gt=0, le=1)] = None
    """FedAdam/FedAdagrad/FedYogi: adaptivity (epsilon)."""
    beta: Annotated[float | None, Field(ge=0, lt=0.5)] = None
    """FedTrimmedAvg: fraction cut from each tail (default 0.2)."""

    @model_validator(mode="after")
    def _arguments_belong(self) -> StrategySpec:
        allowed = STRATEGY_ARGUMENTS[self.name]
        foreign = [a for a in _ALL_ARGUMENTS if getattr(self, a) is not None and a not in allowed]
        if foreign:
            wire = [StrategySpec.model_fields[a].alias or a for a in foreign]
            raise ValueError(
                f"strategy {self.name.value} does not take {', '.join(wire)}"
                f" (it takes: {', '.join(StrategySpec.model_fields[a].alias for a in allowed) or 'nothing'})"
            )
        return self

    def arguments(self) -> dict[str, float]:
        """The strategy's own arguments with defaults filled in, snake_case (Flower's names)."""
        defaults = {"proximal_mu": 0.1, "beta": 0.2}
        out = {}
        for arg in STRATEGY_ARGUMENTS[self.name]:
            value = getattr(self, arg)
            if value is None:
                value = defaults.get(arg)
            if value is not None:
                out[arg] = value
        return out


class BestModel(ApiModel):
    """Which metric decides the best global model (and the champion alias)."""

    metric: Annotated[str, Field(pattern=METRIC)] = "eval_accuracy"
    mode: Literal["max", "min"] = "max"


class TrainingSpec(ApiModel):
    rounds: Annotated[int, Field(ge=1, le=1000)] = 3
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    min_train_learners: Annotated[int | None, Field(ge=1, le=1000)] = None
    """Learners needed to train a round; defaults to learners.replicas."""
    min_evaluate_learners: Annotated[int | None, Field(ge=1, le=1000)] = None
    """Learners needed to evaluate a round; defaults to learners.replicas."""
    min_available_learners: Annotated[int | None, Field(ge=1, le=1000)] = None
    """Learners that must be connected before a round starts; defaults to learners.replicas."""
    local_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.05
    round_timeout_seconds: Annotated[int, Field(ge=10, le=86400)] = 600
    """A round waits at most this long for learners' answers."""
    best_model: BestModel = Field(default_factory=BestModel)
    round_mode: Literal["fast", "standard"] = "fast"
    """fast: one exchange per round, warm ClientApps, short SuperNode poll, async logging; standard: Flower's defaults."""
    active_deadline_seconds: Annotated[int | None, Field(ge=1, le=30 * 86400)] = None
    """A training that runs longer ends Failed with reason DeadlineExceeded: its aggregator and learners are
    removed, the tracking stack stays."""
    trigger: Annotated[str | None, Field(max_length=253)] = None
    """Any string (a date, a commit): changing it trains an otherwise unchanged spec again."""


class Resources(ApiModel):
    memory_mb: Annotated[int, Field(ge=64, le=1048576, alias="memoryMB")] = 512
    vcpus: Annotated[int, Field(ge=1, le=256)] = 1


class Placement(ApiModel):
    cluster: Annotated[str | None, Field(pattern=CLUSTER_NAME)] = None
    """Oakestra cluster name (a direct placement constraint)."""


class LearnersSpec(ApiModel):
    replicas: Annotated[int, Field(ge=1, le=1000)] = 2
    """Number of learners."""
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None
    """Override the learner image (defaults to task.image or the built-in one)."""


class AggregatorSpec(ApiModel):
    resources: Resources = Field(default_factory=lambda: Resources(memory_mb=1024, vcpus=1))
    placement: Placement = Field(default_factory=Placement)
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None
    """Override the aggregator image (defaults to task.image or the built-in one)."""


class BackendStore(ApiModel):
    type: Literal["sqlite", "mysql"] = "sqlite"
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None


class ArtifactStore(ApiModel):
    type: Literal["ftp", "local"] = "ftp"
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None


def public_uri(uri: str) -> str:
    """What of a URI may be shown (status, logs): scheme, host, port and path; never user info, query or
    fragment."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class SecretKeyRef(ApiModel):
    """A Secret in the project's namespace holding a login (username and password)."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
    """The Secret's name (in the project's namespace; for `flops run`, a Secret document in the same file)."""
    username_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=253)] = "username"
    """The key holding the username."""
    password_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=253)] = "password"
    """The key holding the password."""


class TrackingSpec(ApiModel):
    backend_store: BackendStore = Field(default_factory=BackendStore)
    artifact_store: ArtifactStore = Field(default_factory=ArtifactStore)
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None
    """Override the MLflow tracking server image."""
    uri: Annotated[str | None, Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2048)] = None
    """Use an existing MLflow tracking server instead of creating the tracking stack (no user info in it:
    its login goes in credentialsSecret)."""
    credentials_secret: SecretKeyRef | None = None
    """The login the aggregator, the model server and the operator use with tracking.uri (MLflow basic auth). The
    Secret must carry the label flops.oakestra.io/credentials: "true"; with an http:// uri, set insecure too."""
    insecure: bool = False
    """true lets credentialsSecret's login go to an http:// tracking.uri, in plain text; without it that is refused
    (https only). It does not turn off certificate checks."""
    resources: Resources = Field(default_factory=lambda: Resources(memory_mb=1024, vcpus=1))

    @model_validator(mode="after")
    def _login_by_reference(self) -> TrackingSpec:
        if self.uri is not None and urlsplit(self.uri).username is not None:
            raise ValueError(USERINFO_MESSAGE)
        if self.credentials_secret is not None and self.uri is None:
            raise ValueError("tracking.credentialsSecret is the login of an existing server: set tracking.uri too "
                             "(the tracking server the operator creates has generated logins)")
        if self.credentials_secret is not None and self.uri.startswith("http://") and not self.insecure:
            raise ValueError(PLAIN_HTTP_TRACKING_MESSAGE)
        return self


class RegistrySpec(ApiModel):
    model_name: Annotated[str | None, Field(pattern=MODEL_NAME)] = None
    """Registered model name; defaults to the project name."""
    alias: Annotated[str, Field(pattern=ALIAS)] = "champion"
    """Alias moved to a new version only when it beats the current holder (not of the form v<N>)."""

    @model_validator(mode="after")
    def _alias_not_a_version(self) -> RegistrySpec:
        if re.fullmatch(r"[vV][0-9]+", self.alias):
            raise ValueError(f"registry.alias {self.alias!r} looks like a version; MLflow refuses it")
        return self


class ServingSpec(ApiModel):
    enabled: bool = False
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None


class FLOpsProjectSpec(ApiModel):
    """A federated-learning project with its MLOps stack."""

    platform: Platform = Platform.local
    """Where the services run: local processes or Oakestra."""
    task: TaskSpec
    data: DataSpec = Field(default_factory=DataSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    learners: LearnersSpec = Field(default_factory=LearnersSpec)
    aggregator: AggregatorSpec = Field(default_factory=AggregatorSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    registry: RegistrySpec = Field(default_factory=RegistrySpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    suspend: bool = False
    """true stops the training at its next round boundary: the aggregator saves that round's model to the artifact
    store and exits, then it and the learners are removed (phase Suspended); false resumes it from there, rounds
    and MLflow steps continuing (training.rounds is still the total)."""
    deletion_policy: DeletionPolicy = DeletionPolicy.Delete
    """Delete removes every service with the project; Orphan leaves them running."""

    @model_validator(mode="after")
    def _local_source_runs_locally(self) -> FLOpsProjectSpec:
        if self.task.source is not None and self.task.source.local is not None and self.platform is not Platform.local:
            raise ValueError("task.source.local is a folder on this machine: it needs platform local (`flops run`); "
                             "on Oakestra use task.source.git")
        return self

    @model_validator(mode="after")
    def _min_learners_fit(self) -> FLOpsProjectSpec:
        replicas = self.learners.replicas
        for field in ("min_train_learners", "min_evaluate_learners", "min_available_learners"):
            value = getattr(self.training, field)
            if value is not None and value > replicas:
                wire = TrainingSpec.model_fields[field].alias
                raise ValueError(f"training.{wire} ({value}) is more than learners.replicas ({replicas})")
        return self

    # Resolved values (defaults that depend on other fields).
    def min_learners(self) -> tuple[int, int, int]:
        t, n = self.training, self.learners.replicas
        return (t.min_train_learners or n, t.min_evaluate_learners or n, t.min_available_learners or n)

    def dataset(self) -> str | None:
        if self.data.path is not None:
            return None
        if self.data.dataset is not None:
            return self.data.dataset
        return {"digits-mlp": "digits", "iris-logreg": "iris"}.get(self.task.name or "", "digits")


# CEL rules the API server enforces; the same rules are enforced by the model validators above.
SPEC_VALIDATIONS = [
    {
        "rule": f"!has(self.training) || !has(self.training.{f}) || self.training.{f} <= "
        "(has(self.learners) && has(self.learners.replicas) ? self.learners.replicas : 2)",
        "message": f"training.{f} must not be more than learners.replicas",
    }
    for f in ("minTrainLearners", "minEvaluateLearners", "minAvailableLearners")
] + [
    {
        "rule": "!has(self.tracking) || !has(self.tracking.uri) || !self.tracking.uri.matches('^https?://[^/?#]*@')",
        "message": USERINFO_MESSAGE,
    },
    {
        "rule": "!has(self.tracking) || !has(self.tracking.credentialsSecret) || has(self.tracking.uri)",
        "message": "tracking.credentialsSecret is the login of an existing server: set tracking.uri too",
    },
    {
        "rule": "!has(self.tracking) || !has(self.tracking.credentialsSecret) || !has(self.tracking.uri) || "
                "!self.tracking.uri.startsWith('http://') || (has(self.tracking.insecure) && self.tracking.insecure)",
        "message": PLAIN_HTTP_TRACKING_MESSAGE,
    },
    {
        "rule": "!has(self.task.source) || !has(self.task.source.git) || "
                "!has(self.task.source.git.credentialsSecret) || !self.task.source.git.url.startsWith('http://') || "
                "(has(self.task.source.git.insecure) && self.task.source.git.insecure)",
        "message": PLAIN_HTTP_GIT_MESSAGE,
    },
    {
        "rule": "[has(self.task.name), has(self.task.source), has(self.task.module)].filter(x, x).size() == 1",
        "message": "set exactly one of task.name (built-in), task.source (code the operator builds) or task.module "
                   "with task.image (a prebuilt image)",
    },
    {
        "rule": "!has(self.task.source) || !has(self.task.source.local) || "
                "(has(self.platform) ? self.platform : 'local') == 'local'",
        "message": "task.source.local is a folder on this machine: it needs platform local (`flops run`); on Oakestra "
                   "use task.source.git",
    },
]
