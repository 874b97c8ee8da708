"""spec.task: what is trained: a built-in task, the user's code from a source the operator builds, or a user module
in a prebuilt image."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, model_validator

from .base import ApiModel
from .patterns import BUILTIN_TASKS, DNS_SUBDOMAIN, ENTRYPOINT, GIT_REF, GIT_URL, IMAGE, PYTHON_MODULE, SOURCE_PATH

PLAIN_HTTP_GIT_MESSAGE = ("task.source.git.credentialsSecret would send its login in plain text: task.source.git.url "
                          "is http://; use https or ssh, or set task.source.git.insecure: true to allow it")


class GitCredentialsRef(ApiModel):
    """A Secret in the project's namespace with the login for the repository. Keys, each optional: username and
    password (or token: a personal access token, username then defaults to x-access-token), or ssh-privatekey
    with known_hosts (without it the host key is not checked)."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
    """The Secret's name (for `flops run`, a Secret document in the same file)."""


class GitSource(ApiModel):
    """A Git repository holding the task's code."""

    url: Annotated[str, Field(pattern=GIT_URL, max_length=2048)]
    """The repository (https://, ssh://, git:// or user@host:path); no login in it: use credentialsSecret."""
    ref: Annotated[str, Field(pattern=GIT_REF)] = "main"
    """A branch, a tag or a full commit; a branch or tag is resolved to a commit when a training starts
    (status.task.commit). Pin a commit for GitOps."""
    path: Annotated[str, Field(pattern=SOURCE_PATH)] = ""
    """The folder in the repository that holds the task (its code and requirements.txt); default the root."""
    credentials_secret: GitCredentialsRef | None = None
    """The repository's login, when it needs one. The Secret must carry the label flops.oakestra.io/credentials:
    "true"; with an http:// url, set insecure too."""
    insecure: bool = False
    """true lets credentialsSecret's login go to an http:// url, in plain text; without it that is refused (an
    http:// url without a login needs nothing). It does not turn off certificate checks."""

    @model_validator(mode="after")
    def _no_login_in_url(self) -> GitSource:
        if self.path.startswith("/") or ".." in self.path.split("/"):
            raise ValueError("task.source.git.path is a folder inside the repository: relative, without '..'")
        if re.match(r"^https?://[^/]*@", self.url):
            raise ValueError("task.source.git.url must not carry a login (user@ or user:token@): status and logs "
                             "would show it; put it in a Secret named by task.source.git.credentialsSecret")
        if self.credentials_secret is not None and self.url.startswith("http://") and not self.insecure:
            raise ValueError(PLAIN_HTTP_GIT_MESSAGE)
        return self


class TaskSource(ApiModel):
    """Where the task's code comes from: the operator builds it into images (Oakestra) or a cached environment
    (local)."""

    git: GitSource | None = None
    local: Annotated[str | None, Field(min_length=1, max_length=4096)] = None
    """A folder on this machine (`flops run` and platform local only), relative to the manifest's folder."""

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSource:
        if (self.git is None) == (self.local is None):
            raise ValueError("set exactly one of task.source.git or task.source.local")
        return self


class TaskSpec(ApiModel):
    """What is trained: a built-in task, a source (Git or a folder) built by the operator, or a user module in a
    prebuilt image."""

    name: Annotated[str | None, Field(max_length=63)] = None
    """A built-in task: digits-mlp (torch MLP on scikit-learn digits) or iris-logreg."""
    source: TaskSource | None = None
    """The task's code: a Git repository or a local folder with the code and a requirements.txt."""
    entrypoint: Annotated[str | None, Field(pattern=ENTRYPOINT, max_length=300)] = None
    """module:attribute of the task in task.source; default the source's pyproject.toml [tool.flops] task."""
    module: Annotated[str | None, Field(pattern=PYTHON_MODULE, max_length=200)] = None
    """A Python module implementing the flops_learner task contract (needs image)."""
    image: Annotated[str | None, Field(pattern=IMAGE, max_length=255)] = None
    """Learner/aggregator image that contains the user module."""

    @model_validator(mode="after")
    def _one_source(self) -> TaskSpec:
        kinds = [n for n, v in (("task.name", self.name), ("task.source", self.source), ("task.module", self.module))
                 if v is not None]
        if len(kinds) != 1:
            raise ValueError("set exactly one of task.name (built-in), task.source (code the operator builds) or "
                             "task.module with task.image (a prebuilt image)"
                             + (f"; got {' and '.join(kinds)}" if kinds else ""))
        if self.name is not None and self.name not in BUILTIN_TASKS:
            raise ValueError(f"task.name {self.name!r} is not a built-in task ({', '.join(BUILTIN_TASKS)})")
        if self.module is not None and self.image is None:
            raise ValueError("task.module needs task.image: the image that contains the module")
        if self.image is not None and self.module is None:
            raise ValueError("task.image goes with task.module (a prebuilt image); task.source builds its own images")
        if self.entrypoint is not None and self.source is None:
            raise ValueError("task.entrypoint names the task in task.source; set task.source or drop it")
        return self
