"""The CRD's CEL rules agree with the models' own cross-field validation (evaluated with cel-python)."""

import celpy
import pytest

from flops_operator.crd import crd
from flops_operator.models import InvalidProject, validate_spec

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
ENV = celpy.Environment()
SPEC_RULES = [ENV.program(ENV.compile(r["rule"])) for r in SCHEMA["x-kubernetes-validations"]]

CASES = [
    {},
    {"learners": {"replicas": 1}},
    {"training": {"minTrainLearners": 2}},
    {"training": {"minTrainLearners": 3}},
    {"training": {"minEvaluateLearners": 3}, "learners": {"replicas": 3}},
    {"training": {"minEvaluateLearners": 4}, "learners": {"replicas": 3}},
    {"training": {"minAvailableLearners": 1, "minTrainLearners": 1}, "learners": {"replicas": 1}},
    {"training": {"minAvailableLearners": 2}, "learners": {"replicas": 1}},
    {"training": {"minTrainLearners": 1000}, "learners": {"replicas": 1000}},
    {"tracking": {"uri": "https://mlflow.example.com/team"}},
    {"tracking": {"uri": "https://bob:hunter2@mlflow.example.com/team"}},
    {"tracking": {"uri": "http://bob@mlflow.example.com:5000"}},
    {"tracking": {"uri": "https://mlflow.example.com/a@b"}},
    {"tracking": {"uri": "https://mlflow.example.com", "credentialsSecret": {"name": "mlflow-login"}}},
    {"tracking": {"credentialsSecret": {"name": "mlflow-login"}}},
    # A login over plain http only with insecure: true (a URI without a login needs nothing).
    {"tracking": {"uri": "http://mlflow.example.com", "credentialsSecret": {"name": "mlflow-login"}}},
    {"tracking": {"uri": "http://mlflow.example.com", "credentialsSecret": {"name": "mlflow-login"}, "insecure": True}},
    {"tracking": {"uri": "http://mlflow.example.com", "credentialsSecret": {"name": "mlflow-login"},
                  "insecure": False}},
    {"tracking": {"uri": "http://mlflow.example.com"}},
    {"tracking": {"uri": "https://mlflow.example.com", "credentialsSecret": {"name": "mlflow-login"},
                  "insecure": True}},
    {"task": {"source": {"git": {"url": "http://git.example.com/t.git", "credentialsSecret": {"name": "git-login"}}}}},
    {"task": {"source": {"git": {"url": "http://git.example.com/t.git", "credentialsSecret": {"name": "git-login"},
                                 "insecure": True}}}},
    {"task": {"source": {"git": {"url": "http://git.example.com/t.git"}}}},
    {"task": {"source": {"git": {"url": "https://git.example.com/t.git", "credentialsSecret": {"name": "git-login"}}}}},
    {"task": {"source": {"git": {"url": "ssh://git@git.example.com/t.git", "credentialsSecret": {"name": "g"}}}}},
    {"task": {"source": {"local": "./wine"}}},
]


def model_accepts(spec):
    try:
        validate_spec({"task": {"name": "digits-mlp"}, **spec})
    except InvalidProject:
        return False
    return True


@pytest.mark.parametrize("spec", CASES, ids=[str(c) for c in CASES])
def test_cel_and_models_agree(spec):
    cel = all(bool(rule.evaluate({"self": celpy.json_to_cel({"task": {"name": "digits-mlp"}, **spec})}))
              for rule in SPEC_RULES)
    assert cel == model_accepts(spec)


def test_cases_cover_both_verdicts():
    verdicts = {model_accepts(c) for c in CASES}
    assert verdicts == {True, False}


def test_platform_is_immutable():
    (rule,) = SCHEMA["properties"]["platform"]["x-kubernetes-validations"]
    program = ENV.program(ENV.compile(rule["rule"]))
    assert program.evaluate({"self": celpy.json_to_cel("local"), "oldSelf": celpy.json_to_cel("local")})
    assert not program.evaluate({"self": celpy.json_to_cel("oakestra"), "oldSelf": celpy.json_to_cel("local")})
