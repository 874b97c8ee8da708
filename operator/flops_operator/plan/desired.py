"""desired(project) -> the services it needs. Pure: same project in, same specs out.

## The entrypoint contract (the operator's plan already emits exactly this: see plan/desired.py)
Aggregator: command `flops-aggregator` (console script -> flops_aggregator.__main__:main), env:
- FLOPS_CONFIG: JSON from plan.desired.aggregator_config(project): {"project": {namespace,name,uid}, "experiment",
  "task": {name|module,image}, "data": {dataset|path,labelColumn, partitioning:{scheme,alpha,seed}}, "numLearners",
  "training": {rounds, strategy:{name, arguments:{snake_case Flower args}, fractionTrain, fractionEvaluate},
  minTrainLearners, minEvaluateLearners, minAvailableLearners, localEpochs, batchSize, learningRate,
  roundTimeoutSeconds, bestModel:{metric, mode}}, "registry": {modelName, alias}}
- FLOPS_SUPERLINK_ADDRESS: host:port the SuperLink listens on (one HTTP port in flwr 1.42: --host/--port)
- FLOPS_WORKDIR: a writable directory (FLWR_HOME, best-model file, ...)
- MLFLOW_TRACKING_URI: http://host:port of the tracking server (if unset/empty: "bare" mode, no MLflow — used by the benchmark)
Exit 0 only if the training run succeeded (and model logged/registered when MLflow is on); non-zero otherwise.
Learner: command `flops-learner` (console script -> flops_learner.__main__:main), env:
- FLOPS_TASK: JSON {"task": {...}, "data": {...}} (same shapes as above)
- FLOPS_SUPERLINK: host:port of the aggregator's SuperLink
- FLOPS_PARTITION_ID, FLOPS_NUM_PARTITIONS
- FLOPS_CLIENTAPPIO_ADDRESS: 127.0.0.1:port for the SuperNode's own local port (several learners on one host)
- FLOPS_WORKDIR: writable directory
- optional FLOPS_MAX_WAIT_SECONDS: how long to wait for an unreachable aggregator before giving up (exit 0)
Exit 0 when the training run is over or the aggregator is gone past the bound; non-zero on its own failure.
Both also accept the same settings as CLI flags (`--help` documents them; flags override env).
"""

from __future__ import annotations

import json

from ..models import Project
from ..models.spec import FLOpsProjectSpec
from .services import Port, Role, ServiceSpec

# Default images. The aggregator/learner images are built from this repository's folders.
IMAGE_VERSION = "0.1.0"
AGGREGATOR_IMAGE = f"ghcr.io/flops-operator/aggregator:{IMAGE_VERSION}"
LEARNER_IMAGE = f"ghcr.io/flops-operator/learner:{IMAGE_VERSION}"
TRACKING_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
MARIADB_IMAGE = "docker.io/library/mariadb:11.4"
VSFTPD_IMAGE = "docker.io/fauria/vsftpd:latest"

# Container ports (a local platform maps each to a free loopback port).
MYSQL_PORT = 3306
FTP_PORT = 21
MLFLOW_PORT = 5000
SUPERLINK_PORT = 8000
CLIENTAPPIO_PORT = 9094
SERVING_PORT = 8080

# Credentials a project may need; generated once, kept in a Secret (cluster) or a 0600 file (local).
BACKEND_PASSWORD = "backend-password"
BACKEND_ROOT_PASSWORD = "backend-root-password"
FTP_PASSWORD = "ftp-password"
DB_USER = "mlflow"
DB_NAME = "mlflow"
FTP_USER = "mlflow"


def credential_names(spec: FLOpsProjectSpec) -> list[str]:
    names = []
    if spec.tracking.uri is None and spec.tracking.backend_store.type == "mysql":
        names += [BACKEND_PASSWORD, BACKEND_ROOT_PASSWORD]
    if spec.tracking.uri is None and spec.tracking.artifact_store.type == "ftp":
        names.append(FTP_PASSWORD)
    return names


def experiment_name(project: Project) -> str:
    return project.ref.key


def model_name(project: Project) -> str:
    return project.spec.registry.model_name or project.ref.name


def tracking_uri(project: Project) -> str:
    """The tracking URI as the aggregator (inside the platform) sees it."""
    return project.spec.tracking.uri or "http://{{addr:tracking-server:http}}"


def _backend_store(spec: FLOpsProjectSpec) -> ServiceSpec:
    return ServiceSpec(
        name="backend-store",
        role=Role.backend_store,
        image=spec.tracking.backend_store.image or MARIADB_IMAGE,
        command=("mariadbd", "--bind-address={{bind}}", "--port={{port:mysql}}"),
        env=(
            ("MARIADB_DATABASE", DB_NAME),
            ("MARIADB_USER", DB_USER),
            ("MARIADB_PASSWORD", "{{secret:%s}}" % BACKEND_PASSWORD),
            ("MARIADB_ROOT_PASSWORD", "{{secret:%s}}" % BACKEND_ROOT_PASSWORD),
        ),
        ports=(Port("mysql", MYSQL_PORT),),
        memory_mb=512,
        secrets=(BACKEND_PASSWORD, BACKEND_ROOT_PASSWORD),
        options=(("database", DB_NAME), ("user", DB_USER)),
    )


def _artifact_store(spec: FLOpsProjectSpec) -> ServiceSpec:
    return ServiceSpec(
        name="artifact-store",
        role=Role.artifact_store,
        image=spec.tracking.artifact_store.image or VSFTPD_IMAGE,
        command=(),
        env=(
            ("FTP_USER", FTP_USER),
            ("FTP_PASS", "{{secret:%s}}" % FTP_PASSWORD),
            ("PASV_ADDRESS", "{{host:artifact-store}}"),
            ("PASV_MIN_PORT", "21100"),
            ("PASV_MAX_PORT", "21110"),
        ),
        ports=(Port("ftp", FTP_PORT),),
        memory_mb=256,
        secrets=(FTP_PASSWORD,),
        options=(("user", FTP_USER),),
    )


def _tracking_server(spec: FLOpsProjectSpec) -> ServiceSpec:
    depends, secrets = [], []
    if spec.tracking.backend_store.type == "mysql":
        backend = "mysql+pymysql://%s:{{secret:%s}}@{{addr:backend-store:mysql}}/%s" % (
            DB_USER, BACKEND_PASSWORD, DB_NAME)
        depends.append("backend-store")
        secrets.append(BACKEND_PASSWORD)
    else:
        backend = "sqlite:///{{workdir}}/mlflow.db"
    if spec.tracking.artifact_store.type == "ftp":
        artifacts = "ftp://%s:{{secret:%s}}@{{addr:artifact-store:ftp}}/artifacts" % (FTP_USER, FTP_PASSWORD)
        depends.append("artifact-store")
        secrets.append(FTP_PASSWORD)
    else:
        artifacts = "{{workdir}}/artifacts"
    return ServiceSpec(
        name="tracking-server",
        role=Role.tracking_server,
        image=spec.tracking.image or TRACKING_IMAGE,
        command=(
            "mlflow", "server",
            "--host", "{{bind}}", "--port", "{{port:http}}",
            "--serve-artifacts",
            "--workers", "1",
            # The UI is published on a host port whose public IP is only known after scheduling.
            "--allowed-hosts", "*",
        ),
        # The store URIs carry passwords: env (read by mlflow's CLI) keeps them off the process list.
        env=(("MLFLOW_BACKEND_STORE_URI", backend), ("MLFLOW_ARTIFACTS_DESTINATION", artifacts)),
        ports=(Port("http", MLFLOW_PORT, published=True),),
        memory_mb=spec.tracking.resources.memory_mb,
        vcpus=spec.tracking.resources.vcpus,
        depends_on=tuple(depends),
        secrets=tuple(secrets),
        options=(("backend", spec.tracking.backend_store.type), ("artifacts", spec.tracking.artifact_store.type)),
    )


def aggregator_config(project: Project) -> dict:
    """What the aggregator needs to run the training (no credentials: it goes into env as JSON)."""
    spec = project.spec
    min_train, min_eval, min_avail = spec.min_learners()
    t = spec.training
    return {
        "project": {"namespace": project.ref.namespace, "name": project.ref.name, "uid": project.ref.uid},
        "experiment": experiment_name(project),
        "task": spec.task.to_wire(),
        "data": {**spec.data.to_wire(), "dataset": spec.dataset()},
        "numLearners": spec.learners.replicas,
        "training": {
            "rounds": t.rounds,
            "strategy": {"name": t.strategy.name.value, "arguments": t.strategy.arguments(),
                         "fractionTrain": t.strategy.fraction_train,
                         "fractionEvaluate": t.strategy.fraction_evaluate},
            "minTrainLearners": min_train,
            "minEvaluateLearners": min_eval,
            "minAvailableLearners": min_avail,
            "localEpochs": t.local_epochs,
            "batchSize": t.batch_size,
            "learningRate": t.learning_rate,
            "roundTimeoutSeconds": t.round_timeout_seconds,
            "bestModel": t.best_model.to_wire(),
        },
        "registry": {"modelName": model_name(project), "alias": spec.registry.alias},
    }


def _scale_free(project: Project) -> dict:
    """The aggregator config without what follows the learner count; explicit minimums stay."""
    config = aggregator_config(project)
    del config["numLearners"]
    t = project.spec.training
    config["training"].update(minTrainLearners=t.min_train_learners, minEvaluateLearners=t.min_evaluate_learners,
                              minAvailableLearners=t.min_available_learners)
    return config


def learner_config(project: Project) -> dict:
    spec = project.spec
    return {"task": spec.task.to_wire(), "data": {**spec.data.to_wire(), "dataset": spec.dataset()}}


def _aggregator(project: Project) -> ServiceSpec:
    spec = project.spec
    return ServiceSpec(
        name="aggregator",
        role=Role.aggregator,
        image=spec.aggregator.image or spec.task.image or AGGREGATOR_IMAGE,
        command=("flops-aggregator",),
        env=(
            ("FLOPS_SUPERLINK_ADDRESS", "{{bind}}:{{port:superlink}}"),
            ("FLOPS_WORKDIR", "{{workdir}}"),
            ("MLFLOW_TRACKING_URI", tracking_uri(project)),
            ("FLOPS_CONFIG", json.dumps(aggregator_config(project), sort_keys=True)),
        ),
        scale_env=("FLOPS_CONFIG",),
        scale_free=(("FLOPS_CONFIG", json.dumps(_scale_free(project), sort_keys=True)),),
        ports=(Port("superlink", SUPERLINK_PORT),),
        memory_mb=spec.aggregator.resources.memory_mb,
        vcpus=spec.aggregator.resources.vcpus,
        cluster=spec.aggregator.placement.cluster,
        one_shot=True,
        depends_on=("tracking-server",) if spec.tracking.uri is None else (),
    )


def _learner(project: Project, partition_id: int) -> ServiceSpec:
    spec = project.spec
    return ServiceSpec(
        name=f"learner-{partition_id}",
        role=Role.learner,
        image=spec.learners.image or spec.task.image or LEARNER_IMAGE,
        command=("flops-learner",),
        env=(
            ("FLOPS_TASK", json.dumps(learner_config(project), sort_keys=True)),
            ("FLOPS_SUPERLINK", "{{addr:aggregator:superlink}}"),
            ("FLOPS_PARTITION_ID", str(partition_id)),
            ("FLOPS_NUM_PARTITIONS", str(spec.learners.replicas)),
            ("FLOPS_CLIENTAPPIO_ADDRESS", "127.0.0.1:{{port:clientappio}}"),
            ("FLOPS_WORKDIR", "{{workdir}}"),
        ),
        ports=(Port("clientappio", CLIENTAPPIO_PORT),),
        memory_mb=spec.learners.resources.memory_mb,
        vcpus=spec.learners.resources.vcpus,
        cluster=spec.learners.placement.cluster,
        one_shot=True,
        depends_on=("aggregator",),
        partition_id=partition_id,
        scale_env=("FLOPS_NUM_PARTITIONS",),
    )


def _model_server(project: Project) -> ServiceSpec:
    spec = project.spec
    return ServiceSpec(
        name="model-server",
        role=Role.model_server,
        image=spec.serving.image or spec.tracking.image or TRACKING_IMAGE,
        command=(
            "mlflow", "models", "serve",
            "--model-uri", f"models:/{model_name(project)}@{spec.registry.alias}",
            "--host", "{{bind}}", "--port", "{{port:http}}",
            "--env-manager", "local", "--workers", "1",
        ),
        env=(("MLFLOW_TRACKING_URI", tracking_uri(project)),),
        ports=(Port("http", SERVING_PORT, published=True),),
        memory_mb=1024,
        depends_on=("tracking-server",) if spec.tracking.uri is None else (),
    )


def desired(project: Project, *, training_done: bool, model_registered: bool = False) -> list[ServiceSpec]:
    """Services the project needs now.

    Training services (aggregator, learners) exist until training is done; the tracking stack
    stays until the project is deleted; the model server comes once a model is registered.
    """
    spec = project.spec
    services: list[ServiceSpec] = []
    if spec.tracking.uri is None:
        if spec.tracking.backend_store.type == "mysql":
            services.append(_backend_store(spec))
        if spec.tracking.artifact_store.type == "ftp":
            services.append(_artifact_store(spec))
        services.append(_tracking_server(spec))
    if not training_done:
        services.append(_aggregator(project))
        services += [_learner(project, i) for i in range(spec.learners.replicas)]
    if spec.serving.enabled and training_done and model_registered:
        services.append(_model_server(project))
    return services
