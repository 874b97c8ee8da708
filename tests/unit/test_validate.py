"""`flops validate` and the models refuse bad manifests with a line naming the field."""

import copy

import pytest
import yaml
from typer.testing import CliRunner

from flops_operator.cli import app
from flops_operator.models import InvalidProject, parse_project

GOOD = {
    "apiVersion": "flops.oakestra.io/v1alpha1",
    "kind": "FLOpsProject",
    "metadata": {"name": "digits", "namespace": "team-a"},
    "spec": {"task": {"name": "digits-mlp"}},
}


def with_spec(**spec):
    doc = copy.deepcopy(GOOD)
    doc["spec"].update(spec)
    return doc


def with_meta(**meta):
    doc = copy.deepcopy(GOOD)
    doc["metadata"].update(meta)
    return doc


# (id, manifest, field the message must name, fragment of the message)
BAD = [
    ("rounds-type", with_spec(training={"rounds": "five"}), "spec.training.rounds", "valid integer"),
    ("rounds-zero", with_spec(training={"rounds": 0}), "spec.training.rounds", "greater than or equal to 1"),
    ("rounds-too-many", with_spec(training={"rounds": 1001}), "spec.training.rounds", "less than or equal to 1000"),
    ("replicas-negative", with_spec(learners={"replicas": -1}), "spec.learners.replicas", "greater than or equal to 1"),
    ("lr-zero", with_spec(training={"learningRate": 0}), "spec.training.learningRate", "greater than 0"),
    ("unknown-strategy", with_spec(training={"strategy": {"name": "FedMagic"}}), "spec.training.strategy.name", "FedMagic"),
    ("foreign-strategy-arg", with_spec(training={"strategy": {"name": "FedAvg", "proximalMu": 0.1}}),
     "spec.training.strategy", "does not take proximalMu"),
    ("trim-beta-range", with_spec(training={"strategy": {"name": "FedTrimmedAvg", "beta": 0.7}}),
     "spec.training.strategy.beta", "less than 0.5"),
    ("min-train-over-replicas", with_spec(learners={"replicas": 2}, training={"minTrainLearners": 3}),
     "spec.training.minTrainLearners", "more than learners.replicas"),
    ("min-available-over-replicas", with_spec(learners={"replicas": 3}, training={"minAvailableLearners": 4}),
     "spec.training.minAvailableLearners", "more than learners.replicas"),
    ("unknown-spec-field", with_spec(learner={"replicas": 3}), "spec.learner", "unknown field"),
    ("unknown-nested-field", with_spec(training={"epochs": 3}), "spec.training.epochs", "unknown field"),
    ("bad-platform", with_spec(platform="kubernetes"), "spec.platform", "kubernetes"),
    ("bad-deletion-policy", with_spec(deletionPolicy="Retain"), "spec.deletionPolicy", "Retain"),
    ("missing-task", {**GOOD, "spec": {"learners": {"replicas": 2}}}, "spec.task", "required field is missing"),
    ("unknown-task", with_spec(task={"name": "resnet"}), "spec.task.name", "not a built-in task"),
    ("module-without-image", with_spec(task={"module": "mypkg.task"}), "spec.task.module", "needs task.image"),
    ("cluster-not-oakestra-name", with_spec(learners={"placement": {"cluster": "edge munich!"}}),
     "spec.learners.placement.cluster", "pattern"),
    ("project-name-not-dns", with_meta(name="Digits_Project"), "metadata.name", "DNS-1123"),
    ("namespace-not-dns", with_meta(namespace="Team A"), "metadata.namespace", "DNS-1123"),
    ("alias-like-version", with_spec(registry={"alias": "v3"}), "spec.registry.alias", "looks like a version"),
    ("model-name-chars", with_spec(registry={"modelName": "my model"}), "spec.registry.modelName", "pattern"),
    ("best-metric-name", with_spec(training={"bestModel": {"metric": "accuracy"}}),
     "spec.training.bestModel.metric", "pattern"),
    ("best-mode", with_spec(training={"bestModel": {"mode": "highest"}}), "spec.training.bestModel.mode", "highest"),
    ("backend-store-type", with_spec(tracking={"backendStore": {"type": "postgres"}}),
     "spec.tracking.backendStore.type", "postgres"),
    ("tracking-uri", with_spec(tracking={"uri": "mlflow.example:5000"}), "spec.tracking.uri", "pattern"),
    ("data-both-sources", with_spec(data={"dataset": "digits", "path": "/data/x.csv", "labelColumn": "y"}),
     "spec.data.dataset", "not both"),
    ("data-path-no-label", with_spec(data={"path": "/data/x.csv"}), "spec.data.path", "needs data.labelColumn"),
    ("dirichlet-alpha", with_spec(data={"partitioning": {"scheme": "dirichlet", "alpha": 0}}),
     "spec.data.partitioning.alpha", "greater than 0"),
    ("memory-too-small", with_spec(aggregator={"resources": {"memoryMB": 1}}),
     "spec.aggregator.resources.memoryMB", "greater than or equal to 64"),
    ("wrong-kind", {**GOOD, "kind": "FLOpsProjekt"}, "kind", "must be FLOpsProject"),
    ("wrong-api-version", {**GOOD, "apiVersion": "flops.oakestra.io/v1"}, "apiVersion", "v1alpha1"),
]


@pytest.mark.parametrize("manifest,field,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_manifest_names_the_field(manifest, field, fragment):
    with pytest.raises(InvalidProject) as err:
        parse_project(manifest)
    hits = [p for p in err.value.problems if p.field == field]
    assert hits, f"no problem for {field}: {[str(p) for p in err.value.problems]}"
    assert any(fragment in p.message for p in hits), [str(p) for p in hits]


def test_at_least_fifteen_distinct_fields_are_refused():
    assert len({b[2] for b in BAD}) >= 15


def test_ten_line_manifest_gets_every_default():
    project = parse_project(GOOD)
    spec = project.spec
    assert spec.training.rounds == 3 and spec.learners.replicas == 2
    assert spec.min_learners() == (2, 2, 2)
    assert spec.tracking.backend_store.type == "sqlite" and spec.tracking.artifact_store.type == "ftp"
    assert spec.registry.alias == "champion" and spec.deletion_policy.value == "Delete"
    assert spec.dataset() == "digits"
    assert project.ref.key == "team-a/digits"


def test_strategy_arguments_get_defaults_and_flower_names():
    project = parse_project(with_spec(training={"strategy": {"name": "FedProx"}}))
    assert project.spec.training.strategy.arguments() == {"proximal_mu": 0.1}
    project = parse_project(with_spec(training={"strategy": {"name": "FedAdam", "eta": 0.01, "beta1": 0.8}}))
    assert project.spec.training.strategy.arguments() == {"eta": 0.01, "beta_1": 0.8}


def test_validate_cli_prints_one_line_per_problem_and_exits_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([
        with_spec(training={"rounds": 0}, learner={"replicas": 3}),
        GOOD,
    ]))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    result = CliRunner().invoke(app, ["validate", str(bad), str(good)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines == [
        f"{bad}[1]: spec.training.rounds: Input should be greater than or equal to 1",
        f"{bad}[1]: spec.learner: unknown field",
    ]


def test_validate_cli_accepts_good_manifests(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    result = CliRunner().invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ""


def test_validate_cli_reports_unreadable_yaml(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = CliRunner().invoke(app, ["validate", str(broken)])
    assert result.exit_code == 1
    assert f"{broken}: cannot read" in result.stdout
