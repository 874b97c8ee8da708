"""The one-shot image builder of a task from task.source, as the plan renders it (builder_image/ runs it).

On Oakestra it builds the learner and aggregator images on top of the project's base images and pushes them to the
build registry (the platform fills in `{{registry}}` and the registry's login); locally (`flops run`) it makes the
cached environment and names the code's folder instead. Either way its last line is its result (task_build.py).
"""

from __future__ import annotations

import json

from ..models import Project
from ..models.spec import Platform
from . import images
from .logins import secret_ref
from .services import Role, ServiceSpec

# The repository's login, read from the Secret task.source.git.credentialsSecret names (every key optional).
GIT_USERNAME = "git-username"
GIT_PASSWORD = "git-password"
GIT_TOKEN = "git-token"
GIT_SSH_KEY = "git-ssh-key"
GIT_KNOWN_HOSTS = "git-known-hosts"
GIT_SECRET_KEYS = {GIT_USERNAME: "username", GIT_PASSWORD: "password", GIT_TOKEN: "token",
                   GIT_SSH_KEY: "ssh-privatekey", GIT_KNOWN_HOSTS: "known_hosts"}
GIT_CREDENTIALS_FIELD = "task.source.git.credentialsSecret"


def git_credentials(project: Project) -> dict[str, str]:
    """{credential name: key in the Secret} the spec's Git source names (empty without one)."""
    source = project.spec.task.source
    if source is None or source.git is None or source.git.credentials_secret is None:
        return {}
    return dict(GIT_SECRET_KEYS)


def _git_env(project: Project) -> tuple[tuple[str, str], ...]:
    if not git_credentials(project):
        return ()
    # A token arrives as the password (reconcile folds it in; the username is then x-access-token unless given).
    return (("FLOPS_GIT_USERNAME", secret_ref(GIT_USERNAME)), ("FLOPS_GIT_PASSWORD", secret_ref(GIT_PASSWORD)),
            ("FLOPS_GIT_SSH_KEY", secret_ref(GIT_SSH_KEY)), ("FLOPS_GIT_KNOWN_HOSTS", secret_ref(GIT_KNOWN_HOSTS)))


def build_request(project: Project) -> dict:
    """What to build: the source at the resolved commit (or the local folder), and, on Oakestra, onto which base
    images and where to push (flops_builder.contract.BuildSpec; the platform sets tlsVerify from its registry's
    settings)."""
    spec, task = project.spec, project.task
    source = spec.task.source
    assert source is not None and task is not None
    entrypoint = spec.task.entrypoint
    if source.git is not None:
        where: dict = {"url": source.git.url, "commit": task.commit, "path": source.git.path}
    else:
        where = {"local": source.local, "tree": task.tree}
    request: dict = {"source": where, "entrypoint": entrypoint}
    if spec.platform is Platform.oakestra:
        request.update(
            bases={"learner": "{{registry}}/learner:%s" % images.IMAGE_VERSION,
                   "aggregator": "{{registry}}/aggregator:%s" % images.IMAGE_VERSION},
            target="{{registry}}/projects/%s/%s" % (project.ref.namespace, project.ref.name),
        )
    return request


def pinned(image: str | None) -> str | None:
    """A built image by its digest alone (repository@sha256:...): what the builder reported names its tag too, and
    some runtimes (podman 4, containers/image before 5.29) refuse a reference with both."""
    if image is None or "@" not in image:
        return image
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    return f"{name}@{digest}"


def builder_service(project: Project) -> ServiceSpec:
    credentials = tuple(n for n in git_credentials(project) if n != GIT_TOKEN)
    return ServiceSpec(
        name="builder",
        role=Role.builder,
        image=images.BUILDER,
        command=("flops-builder",),
        env=(("FLOPS_BUILD", json.dumps(build_request(project), sort_keys=True)), ("FLOPS_WORKDIR", "{{workdir}}"),
             *_git_env(project)),
        secrets=credentials,
        memory_mb=2048,
        one_shot=True,
    )
