"""Every example manifest validates with the same models the operator uses, and says what it claims."""

from pathlib import Path

import pytest
import yaml

from flops_operator.models import parse_project

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))


def test_the_three_documented_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"digits-local.yaml", "digits-mariadb.yaml", "digits-oakestra.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(path):
    for doc in yaml.safe_load_all(path.read_text()):
        parse_project(doc)


def test_examples_cover_both_platforms_and_backends():
    specs = {p.name: parse_project(yaml.safe_load(p.read_text())).spec for p in EXAMPLES}
    demo = specs["digits-local.yaml"]
    assert demo.platform.value == "local" and demo.learners.replicas == 3 and demo.training.rounds == 3
    assert demo.tracking.backend_store.type == "sqlite" and demo.tracking.artifact_store.type == "ftp"
    assert specs["digits-mariadb.yaml"].tracking.backend_store.type == "mysql"
    assert specs["digits-oakestra.yaml"].platform.value == "oakestra"
