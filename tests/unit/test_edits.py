"""Which edits do what (models/edits.py): the training identity, the CRD's descriptions and CEL rules, and
the README's table all follow the one table, and every spec field is in it."""

from __future__ import annotations

from pathlib import Path

import celpy
import pytest

from flops_operator.crd import crd
from flops_operator.models import FLOpsProjectSpec
from flops_operator.models.edits import EDITS, IMMUTABLE_RULES, Edit, edit_of, markdown_table, training_identity

SPEC_SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
README = Path(__file__).resolve().parents[2] / "README.md"
BASE = {"task": {"name": "digits-mlp"}}


def leaves(node, path=""):
    props = node.get("properties")
    if not props:
        yield path
        return
    for name, child in props.items():
        yield from leaves(child, f"{path}.{name}" if path else name)


def node_at(path):
    node = SPEC_SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def identity(**spec):
    return training_identity(FLOpsProjectSpec.model_validate({**BASE, **spec}))


def test_every_spec_field_says_what_editing_it_does():
    unclassified = [leaf for leaf in leaves(SPEC_SCHEMA) if edit_of(leaf) is None]
    assert unclassified == []


def test_every_row_names_a_spec_field_and_its_crd_description_says_it():
    for path, edit, why in EDITS:
        description = node_at(path)["description"]
        assert why in description and (edit.value in description or "immutable" in description), path


@pytest.mark.parametrize("edit,retrains", [
    ({"task": {"name": "iris-logreg"}}, True),
    ({"data": {"partitioning": {"scheme": "dirichlet"}}}, True),
    ({"training": {"rounds": 4}}, True),
    ({"training": {"learningRate": 0.01}}, True),
    ({"training": {"trigger": "2026-11-30"}}, True),
    ({"training": {"roundMode": "standard"}}, True),
    ({"learners": {"image": "registry.example/learner:2"}}, True),
    ({"aggregator": {"image": "registry.example/aggregator:2"}}, True),
    ({"registry": {"alias": "best"}}, True),
    ({"learners": {"replicas": 5}}, False),
    ({"learners": {"resources": {"memoryMB": 2048}}}, False),
    ({"aggregator": {"resources": {"vcpus": 2}}}, False),
    ({"aggregator": {"placement": {"cluster": "edge-1"}}}, False),
    ({"tracking": {"image": "registry.example/mlflow:2"}}, False),
    ({"serving": {"enabled": True}}, False),
    ({"deletionPolicy": "Orphan"}, False),
    ({"training": {"activeDeadlineSeconds": 3600}}, False),
    # Writing a default out is no edit.
    ({"training": {"rounds": 3, "strategy": {"name": "FedAvg"}}, "data": {}}, False),
])
def test_the_training_identity_changes_exactly_with_the_fields_that_define_training(edit, retrains):
    assert (identity(**edit) != identity()) is retrains


def test_the_identity_is_short_stable_and_depends_on_nothing_but_the_spec():
    assert identity() == identity() and len(identity()) == 12 and int(identity(), 16) >= 0
    assert identity(training={"trigger": "a"}) != identity(training={"trigger": "b"})


def cel(rule, new, old):
    env = celpy.Environment()
    return bool(env.program(env.compile(rule)).evaluate({"self": celpy.json_to_cel(new),
                                                          "oldSelf": celpy.json_to_cel(old)}))


@pytest.mark.parametrize("path,old,new,allowed", [
    ("platform", "local", "local", True),
    ("platform", "local", "oakestra", False),
    ("tracking.backendStore.type", "sqlite", "sqlite", True),
    ("tracking.backendStore.type", "sqlite", "mysql", False),
    ("tracking.artifactStore.type", "ftp", "local", False),
    ("tracking", {"uri": "http://a:5000"}, {"uri": "http://a:5000", "image": "x"}, True),
    ("tracking", {"image": "x"}, {"image": "y"}, True),
    ("tracking", {"uri": "http://a:5000"}, {"uri": "http://b:5000"}, False),
    ("tracking", {}, {"uri": "http://b:5000"}, False),
    ("tracking", {"uri": "http://a:5000"}, {}, False),
])
def test_immutable_fields_are_refused_by_the_api_server(path, old, new, allowed):
    (rule,) = node_at(path)["x-kubernetes-validations"]
    assert rule == IMMUTABLE_RULES[path][0]
    assert cel(rule["rule"], new, old) is allowed


def test_every_immutable_row_has_a_rule():
    immutable = {p for p, e, _ in EDITS if e is Edit.immutable}
    ruled = {p for p in IMMUTABLE_RULES} | {"tracking.uri"}  # guarded on its parent (it may be absent)
    assert immutable <= ruled
    assert "tracking.uri is immutable" in IMMUTABLE_RULES["tracking"][0]["message"]


def test_the_readme_shows_the_table():
    assert markdown_table() in README.read_text()
