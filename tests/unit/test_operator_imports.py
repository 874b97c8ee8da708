"""The operator's image is slim (no torch, Flower, MLflow or the local platform's helpers): everything
`flops operator` and `flops validate` import must work without them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "flwr", "mlflow", "psutil", "pyftpdlib", "pymysql", "sklearn", "pandas")


def test_the_operator_commands_import_nothing_the_slim_image_lacks():
    code = ("import sys; import flops_operator.cli, flops_operator.adapters.kopf_cli, "
            "flops_operator.platforms.oakestra, flops_operator.progress_mlflow; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported: {done.stdout.strip()}"
