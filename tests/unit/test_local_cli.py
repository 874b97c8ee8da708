"""`flops run` input handling (nothing is started for bad input) and its summary pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flops_operator.adapters.live_view import ui_command
from flops_operator.adapters.local_cli import load_manifest
from flops_operator.adapters.local_runner import with_uid
from flops_operator.cli import app
from flops_operator.models import InvalidProject
from flops_operator.platforms.local import StateLayout

EXAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "examples"


def write(tmp_path, doc) -> Path:
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def manifest(**spec):
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject", "metadata": {"name": "demo"},
            "spec": {"task": {"name": "digits-mlp"}, **spec}}


@pytest.mark.parametrize("spec, field", [
    ({"training": {"rounds": 0}}, "spec.training.rounds"),
    ({"learners": {"replicas": 2}, "training": {"minTrainLearners": 3}}, "spec.training.minTrainLearners"),
    ({"tracking": {"backendStore": {"type": "postgres"}}}, "spec.tracking.backendStore.type"),
    ({"platform": "oakestra"}, "spec.platform"),
])
def test_invalid_input_exits_2_naming_the_field_and_starts_nothing(tmp_path, spec, field):
    state = tmp_path / "state"
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, manifest(**spec))), "--state-dir", str(state)])
    assert result.exit_code == 2, result.output
    assert field in result.stderr
    assert not state.exists()


def test_unreadable_or_ambiguous_files_exit_2(tmp_path):
    assert CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml")]).exit_code == 2
    two = write(tmp_path, yaml.safe_dump(manifest()) + "---\n" + yaml.safe_dump(manifest()))
    result = CliRunner().invoke(app, ["run", str(two)])
    assert result.exit_code == 2 and "exactly one FLOpsProject" in result.stderr


def test_unknown_output_format_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, manifest())), "-o", "json"])
    assert result.exit_code == 2 and "'json' is not 'yaml'" in result.stderr


def test_examples_load_and_only_the_local_ones_run_here():
    for name in ("digits-local.yaml", "digits-mariadb.yaml"):
        _, project = load_manifest(EXAMPLES / name)
        assert project.spec.platform.value == "local"
    _, local = load_manifest(EXAMPLES / "digits-local.yaml")
    assert (local.spec.learners.replicas, local.spec.training.rounds) == (3, 3)
    assert (local.spec.tracking.backend_store.type, local.spec.tracking.artifact_store.type) == ("sqlite", "ftp")
    with pytest.raises(InvalidProject, match="spec.platform"):
        load_manifest(EXAMPLES / "digits-oakestra.yaml")


def test_each_run_is_a_new_object_with_its_own_uid():
    first, second = with_uid(manifest()), with_uid(manifest())
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert with_uid({**manifest(), "metadata": {"name": "demo", "uid": "given"}})["metadata"]["uid"] == "given"


def test_ui_command_points_at_the_runs_own_data(tmp_path):
    _, sqlite = load_manifest(EXAMPLES / "digits-local.yaml")
    layout = StateLayout(tmp_path)
    command = ui_command(sqlite, layout, "digits-local.yaml")
    assert f"sqlite:///{tmp_path}/services/tracking-server/mlflow.db" in command
    assert f"{tmp_path}/services/artifact-store/ftp-root/artifacts" in command
    _, mysql = load_manifest(EXAMPLES / "digits-mariadb.yaml")
    assert ui_command(mysql, layout, "m.yaml").endswith(f"--state-dir {tmp_path} --keep")
