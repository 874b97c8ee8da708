"""The thin Flower app bundle `flwr run` submits: two modules that bind the pre-installed ServerApp and
ClientApp. No dependencies are listed: both images already hold the packages, and the SuperLink runs with
runtime dependency installation disabled."""

from __future__ import annotations

from pathlib import Path

APP_PACKAGE = "flops_app"
PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "flops-app"
version = "1.0.0"
description = "FLOps training: binds the pre-installed flops_aggregator ServerApp and flops_learner ClientApp"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "flops"

[tool.flwr.app.components]
serverapp = "{pkg}.server:app"
clientapp = "{pkg}.client:app"

[tool.flwr.app.config]
""".format(pkg=APP_PACKAGE)
# `flwr run` reads these files' source: `app` must be assigned here, a bare re-export is refused.
SERVER_MODULE = '"""ServerApp of the FLOps training."""\nimport flops_aggregator.server_app as _impl\n\napp = _impl.app\n'
CLIENT_MODULE = '"""ClientApp of the FLOps training."""\nimport flops_learner.client_app as _impl\n\napp = _impl.app\n'


def write(directory: Path) -> Path:
    package = directory / APP_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text('"""FLOps app bundle."""\n')
    (package / "server.py").write_text(SERVER_MODULE)
    (package / "client.py").write_text(CLIENT_MODULE)
    return directory
