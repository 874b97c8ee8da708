"""Console script `flops-tracking-server ARGS...`: set the project's users and permissions up
(bootstrap.prepare), then become `mlflow server --app-name basic-auth ARGS...` (exec: signals and the
exit code are MLflow's own).

The store URIs come from MLflow's own variables (MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION),
the rest from the contract (flops_tracking.contract).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from .bootstrap import prepare
from .contract import TrackingEnv

BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"


def server_argv(args: list[str]) -> list[str]:
    mlflow = Path(sys.executable).parent / "mlflow"
    program = str(mlflow) if mlflow.exists() else (shutil.which("mlflow") or "mlflow")
    return [program, "server", "--app-name", "basic-auth", *args]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        env = TrackingEnv.from_env(dict(os.environ))
    except ValueError as exc:
        raise SystemExit(f"flops-tracking-server: {exc}") from None
    backend = os.environ.get(BACKEND_ENV)
    if not backend:
        raise SystemExit(f"flops-tracking-server: {BACKEND_ENV} is not set")
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(prepare(env, backend))
    command = server_argv(args)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
