"""The operator's image: what its Dockerfile promises (kustomize rendering: tests/e2e/test_manifests_kustomize.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_runs_flops_operator_as_non_root() -> None:
    text = (ROOT / "operator" / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert "-c constraints.txt" in text and "download.pytorch.org/whl/cpu" in text
    assert 'ENTRYPOINT ["flops", "operator"]' in text
    user = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].startswith(("0", "root"))
