"""The images the plan runs by default: every one is built from this repository (`make images`,
base_image/build.sh) and tagged with the project's version under one registry prefix."""

from __future__ import annotations

from .. import __version__

IMAGE_REGISTRY = "ghcr.io/flops-operator"
IMAGE_VERSION = __version__


def image(name: str) -> str:
    return f"{IMAGE_REGISTRY}/{name}:{IMAGE_VERSION}"


AGGREGATOR = image("aggregator")
LEARNER = image("learner")
TRACKING_SERVER = image("tracking-server")
BACKEND_STORE = image("backend-store")
ARTIFACT_STORE = image("artifact-store")
MODEL_SERVER = image("model-server")
BUILDER = image("builder")
PLANNED = (AGGREGATOR, LEARNER, TRACKING_SERVER, BACKEND_STORE, ARTIFACT_STORE, MODEL_SERVER, BUILDER)
"""Every default a plan can name (a test checks `make images` builds each)."""
