"""desired(project) -> the services it needs. Pure: same project in, same specs out.

What each image's entrypoint reads is its contract (one pydantic model per image, shared with the
entrypoint): flops_aggregator.contract.AggregatorEnv and flops_learner.contract.LearnerEnv. The MLflow,
MariaDB and vsftpd images take the environment their upstream images are known by (MLFLOW_*, MARIADB_*,
FTP_* / PASV_*); each image's README lists it, and the image smoke tests run each with what this renders.
"""

from __future__ import annotations

import json

from flops_aggregator.contract import (AggregatorConfig, AggregatorEnv, BestModel, FlowerAdmission, ProjectId,
                                       Registry, Strategy, Training)
from flops_learner.contract import DataRef, LearnerAdmission, LearnerEnv, LearnerTask, TaskRef
from flops_tracking.contract import ALLOWED_HOSTS_TAG, TrackingEnv

from ..models import Project
from ..models.spec import FLOpsProjectSpec
# The credential catalogue and the login policy live in logins.py; their names stay importable from here.
from .logins import (BACKEND_PASSWORD, BACKEND_ROOT_PASSWORD, FLOWER_CA, FTP_PASSWORD,  # noqa: F401
                     MLFLOW_ADMIN_PASSWORD, MLFLOW_AGGREGATOR_PASSWORD, MLFLOW_CREDENTIALS, MLFLOW_READER_PASSWORD,
                     MLFLOW_SECRET_KEY, SUPERLINK_KEY, credential_names, learner_key, login, referenced_credentials,
                     secret_ref)
from .. import task_build
from . import images
from .builder import builder_service, pinned
from .services import Port, Role, ServiceSpec


# Container ports (a local platform maps each to a free loopback port).
MYSQL_PORT = 3306
FTP_PORT = 21
MLFLOW_PORT = 5000
SUPERLINK_PORT = 8000
# Where the aggregator takes the learners' certificates (flops_aggregator.enrollment): HTTPS, its SuperLink's cert.
ENROLL_PORT = 8001
CLIENTAPPIO_PORT = 9094
SERVING_PORT = 8080
# Round mode "fast": how long a learner's SuperNode waits after a pull that found no message (Flower: 3 s).
# Each pull is one small HTTP request to the SuperLink; bench/round_overhead.py measures the idle cost.
FAST_IDLE_POLL_SECONDS = 0.2
# vsftpd's passive data ports (its image's default range): the tracking server's FTP client connects to them.
PASV_PORTS = range(21100, 21110)

DB_USER = "mlflow"
DB_NAME = "mlflow"
FTP_USER = "mlflow"


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
        image=spec.tracking.backend_store.image or images.BACKEND_STORE,
        # No command: the image's entrypoint sets the database up from MARIADB_* (Oakestra's `cmd`
        # would replace it), as the official MariaDB image's does.
        command=(),
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
        image=spec.tracking.artifact_store.image or images.ARTIFACT_STORE,
        command=(),
        env=(
            ("FTP_USER", FTP_USER),
            ("FTP_PASS", "{{secret:%s}}" % FTP_PASSWORD),
            ("PASV_ADDRESS", "{{host:artifact-store}}"),
            ("PASV_MIN_PORT", str(PASV_PORTS[0])),
            ("PASV_MAX_PORT", str(PASV_PORTS[-1])),
        ),
        ports=(Port("ftp", FTP_PORT, published=True),
               *(Port(f"pasv-{n}", n, published=True) for n in PASV_PORTS)),
        memory_mb=256,
        secrets=(FTP_PASSWORD,),
        options=(("user", FTP_USER),),
    )


def _tracking_server(project: Project) -> ServiceSpec:
    spec = project.spec
    depends, secrets = [], list(MLFLOW_CREDENTIALS)
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
    # flops-tracking-server sets the project's users and grants up, then runs `mlflow server --app-name
    # basic-auth` with these arguments (tracking_image/flops_tracking).
    auth = TrackingEnv(workdir="{{workdir}}", experiment=experiment_name(project), model=model_name(project),
                       admin_password=secret_ref(MLFLOW_ADMIN_PASSWORD),
                       aggregator_password=secret_ref(MLFLOW_AGGREGATOR_PASSWORD),
                       reader_password=secret_ref(MLFLOW_READER_PASSWORD), secret_key=secret_ref(MLFLOW_SECRET_KEY),
                       allowed_hosts_tag=ALLOWED_HOSTS_TAG)
    return ServiceSpec(
        name="tracking-server",
        role=Role.tracking_server,
        image=spec.tracking.image or images.TRACKING_SERVER,
        command=(
            "flops-tracking-server",
            "--host", "{{bind}}", "--port", "{{port:http}}",
            "--serve-artifacts",
            "--workers", "1",
            # MLflow answers only to the Host headers listed here (and the entrypoint adds loopback). The local
            # platform lists its loopback addresses; elsewhere the server is published on an address known
            # only once it runs (Oakestra: the worker's IP and host port), which the operator then writes to the
            # experiment's ALLOWED_HOSTS_TAG and the entrypoint adds (flops_tracking.allowed_hosts).
            "--allowed-hosts", "{{host:tracking-server}}:{{port:http}}",
        ),
        # The store URIs and the logins carry passwords: env (read by mlflow and the entrypoint) keeps them
        # off the process list.
        env=(("MLFLOW_BACKEND_STORE_URI", backend), ("MLFLOW_ARTIFACTS_DESTINATION", artifacts),
             # The job runner (a dozen worker processes, ~2 GB) serves features FLOps does not use.
             ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false"),
             *auth.to_env().items()),
        ports=(Port("http", MLFLOW_PORT, published=True, health_path="/health"),),
        memory_mb=spec.tracking.resources.memory_mb,
        vcpus=spec.tracking.resources.vcpus,
        depends_on=tuple(depends),
        secrets=tuple(secrets),
        options=(("backend", spec.tracking.backend_store.type), ("artifacts", spec.tracking.artifact_store.type)),
    )


def task_ref(project: Project) -> TaskRef:
    """The task as the FL images load it; a task from task.source by the entrypoint its build found."""
    spec = project.spec
    if spec.task.source is not None:
        built = project.task
        entrypoint = (built.entrypoint if built is not None else None) or spec.task.entrypoint
        if entrypoint is None:
            raise ValueError("a task from task.source is run once its build has found the entrypoint")
        return TaskRef(entrypoint=entrypoint)
    return TaskRef.model_validate(spec.task.to_wire())


def data_ref(spec: FLOpsProjectSpec) -> DataRef:
    return DataRef.model_validate({**spec.data.to_wire(), "dataset": spec.dataset()})


def aggregator_config(project: Project) -> AggregatorConfig:
    """What the aggregator needs to run the training (no credentials: it goes into env as JSON)."""
    spec = project.spec
    min_train, min_eval, min_avail = spec.min_learners()
    t = spec.training
    return AggregatorConfig(
        project=ProjectId(namespace=project.ref.namespace, name=project.ref.name, uid=project.ref.uid),
        training_id=project.training_identity,
        experiment=experiment_name(project),
        task=task_ref(project),
        data=data_ref(spec),
        num_learners=spec.learners.replicas,
        training=Training(
            rounds=t.rounds,
            strategy=Strategy(name=t.strategy.name.value, arguments=t.strategy.arguments(),
                              fraction_train=t.strategy.fraction_train, fraction_evaluate=t.strategy.fraction_evaluate),
            min_train_learners=min_train, min_evaluate_learners=min_eval, min_available_learners=min_avail,
            local_epochs=t.local_epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
            round_timeout_seconds=t.round_timeout_seconds,
            best_model=BestModel(metric=t.best_model.metric, mode=t.best_model.mode),
            evaluation="fused" if _fast(spec) else "separate",
            object_pulls="quick" if _fast(spec) else "flower",
        ),
        registry=Registry(model_name=model_name(project), alias=spec.registry.alias),
        mlflow_logging="async" if _fast(spec) else "sync",
    )


def _fast(spec: FLOpsProjectSpec) -> bool:
    return spec.training.round_mode == "fast"


def _scale_free(project: Project) -> dict:
    """The aggregator config without what follows the learner count; explicit minimums stay."""
    config = aggregator_config(project).to_wire()
    del config["numLearners"]
    t = project.spec.training
    config["training"].update(minTrainLearners=t.min_train_learners, minEvaluateLearners=t.min_evaluate_learners,
                              minAvailableLearners=t.min_available_learners)
    return config


def learner_task(project: Project) -> LearnerTask:
    return LearnerTask(task=task_ref(project), data=data_ref(project.spec))


def learner_env(project: Project, partition_id: int, *, superlink: str, clientappio_address: str, workdir: str,
                admission: LearnerAdmission | None, max_wait_seconds: float | None = None) -> LearnerEnv:
    """One learner's contract; the plan renders it with placeholders, tests and benchmarks with real values."""
    fast = _fast(project.spec)
    return LearnerEnv(task=learner_task(project), superlink=superlink, partition_id=partition_id,
                      num_partitions=project.spec.learners.replicas, clientappio_address=clientappio_address,
                      workdir=workdir, max_wait_seconds=max_wait_seconds,
                      clientapp="warm" if fast else "subprocess",
                      idle_poll_seconds=FAST_IDLE_POLL_SECONDS if fast else None, admission=admission)


# Each service gets its own key and the certificate the project's CA issues for it when the platform renders it, and
# the CA's certificate; the CA's key stays with the operator (README, "Flower's PKI"). The SuperLink's certificate
# is valid for the address the learners use (on Oakestra its round-robin IP); each learner trusts that CA only,
# presents its certificate at the aggregator's enrollment port, and signs with its own key.
CA_CERT = "{{cacert:%s}}" % FLOWER_CA
AGGREGATOR_ADMISSION = FlowerAdmission(ca_cert=CA_CERT,
                                       cert="{{servercert:%s:%s:aggregator}}" % (FLOWER_CA, SUPERLINK_KEY),
                                       key=secret_ref(SUPERLINK_KEY), enroll_address="{{bind}}:{{port:enroll}}")
AGGREGATOR_PKI = (FLOWER_CA, SUPERLINK_KEY)
"""What the aggregator's admission is rendered from (the CA's key only to issue its certificate, by the platform)."""


def learner_admission(partition_id: int) -> LearnerAdmission:
    key = learner_key(partition_id)
    return LearnerAdmission(root_cert=CA_CERT, supernode_key=secret_ref(key),
                            supernode_cert="{{learnercert:%s:%s:%d}}" % (FLOWER_CA, key, partition_id),
                            enroll_address="{{addr:aggregator:enroll}}")


def learner_pki(partition_id: int) -> tuple[str, ...]:
    """What learner `partition_id`'s admission is rendered from (the CA's key only to issue its certificate)."""
    return (FLOWER_CA, learner_key(partition_id))


def _built_env(project: Project) -> tuple[tuple[str, str], ...]:
    """Locally, a built task's code and cached environment go on the path (images carry them in their config)."""
    built = project.task
    if built is None or not built.python_path:
        return ()
    return (("PYTHONPATH", ":".join(built.python_path)),)


def _aggregator(project: Project) -> ServiceSpec:
    spec = project.spec
    writer = login(spec, writer=True)
    built = pinned(project.task.aggregator_image) if project.task is not None else None
    return ServiceSpec(
        name="aggregator",
        role=Role.aggregator,
        image=spec.aggregator.image or built or spec.task.image or images.AGGREGATOR,
        command=("flops-aggregator",),
        env=tuple(AggregatorEnv(config=aggregator_config(project), superlink_address="{{bind}}:{{port:superlink}}",
                                workdir="{{workdir}}", tracking_uri=tracking_uri(project),
                                admission=AGGREGATOR_ADMISSION).to_env().items())
        + (writer.env() if writer else ()) + _built_env(project),
        secrets=(writer.secrets if writer else ()) + AGGREGATOR_PKI,
        scale_env=("FLOPS_CONFIG",),
        scale_free=(("FLOPS_CONFIG", json.dumps(_scale_free(project), sort_keys=True)),),
        ports=(Port("superlink", SUPERLINK_PORT), Port("enroll", ENROLL_PORT)),
        memory_mb=spec.aggregator.resources.memory_mb,
        vcpus=spec.aggregator.resources.vcpus,
        cluster=spec.aggregator.placement.cluster,
        one_shot=True,
        depends_on=("tracking-server",) if spec.tracking.uri is None else (),
    )


def _learner(project: Project, partition_id: int) -> ServiceSpec:
    spec = project.spec
    built = pinned(project.task.image) if project.task is not None else None
    return ServiceSpec(
        name=f"learner-{partition_id}",
        role=Role.learner,
        image=spec.learners.image or built or spec.task.image or images.LEARNER,
        command=("flops-learner",),
        env=tuple(learner_env(project, partition_id, superlink="{{addr:aggregator:superlink}}",
                              clientappio_address="127.0.0.1:{{port:clientappio}}",
                              workdir="{{workdir}}", admission=learner_admission(partition_id)).to_env().items())
        + _built_env(project),
        # Its own key, and the CA's certificate and this learner's (issued from the CA's key, which is not rendered).
        secrets=learner_pki(partition_id),
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
    reader = login(spec, writer=False)
    return ServiceSpec(
        name="model-server",
        role=Role.model_server,
        image=spec.serving.image or images.MODEL_SERVER,
        command=(
            "mlflow", "models", "serve",
            "--model-uri", f"models:/{model_name(project)}@{spec.registry.alias}",
            "--host", "{{bind}}", "--port", "{{port:http}}",
            "--env-manager", "local", "--workers", "1",
        ),
        env=(("MLFLOW_TRACKING_URI", tracking_uri(project)), *(reader.env() if reader else ())),
        secrets=reader.secrets if reader else (),
        ports=(Port("http", SERVING_PORT, published=True, health_path="/ping"),),
        memory_mb=1024,
        depends_on=("tracking-server",) if spec.tracking.uri is None else (),
    )


def desired(project: Project, *, training_done: bool, model_registered: bool = False,
            draining: bool = False) -> list[ServiceSpec]:
    """Services the project needs now.

    Training services (aggregator, learners) exist until training is done, and not while it is
    suspended (a new aggregator resumes from the checkpoint the last one left) unless `draining`: asked to
    suspend, the training is still on its way to its next round boundary (training_state.drain); the tracking stack
    stays until the project is deleted; the model server comes once a model is registered under the
    spec's registry name and alias (`model_registered`), and keeps serving it while a new training runs.
    A task from task.source is built first (the one-shot builder): its training services wait for the build.
    """
    spec = project.spec
    services: list[ServiceSpec] = []
    if spec.task.source is not None and not task_build.built(project.task):
        # Built first: the training services run what the build makes. A failed build leaves nothing running.
        if task_build.building(project.task):
            services.append(builder_service(project))
        training_done = True
    if spec.tracking.uri is None:
        if spec.tracking.backend_store.type == "mysql":
            services.append(_backend_store(spec))
        if spec.tracking.artifact_store.type == "ftp":
            services.append(_artifact_store(spec))
        services.append(_tracking_server(project))
    if not training_done and (not spec.suspend or draining):
        services.append(_aggregator(project))
        services += [_learner(project, i) for i in range(spec.learners.replicas)]
    if spec.serving.enabled and model_registered:
        services.append(_model_server(project))
    return services
