"""The CRD is generated from the models, is structural, and the checked-in copy has not drifted."""

from pathlib import Path

import yaml

from flops_operator.crd import crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def _walk(node, path="$"):
    yield path, node
    if isinstance(node, dict):
        for key, child in node.get("properties", {}).items():
            yield from _walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from _walk(node["additionalProperties"], f"{path}{{*}}")


def schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_equals_generated():
    assert (ROOT / "crds" / "flopsproject.yaml").read_text() == crd_yaml(), "run `make crd`"


def test_every_schema_node_is_typed_and_has_no_ref():
    nodes = list(_walk(schema()))
    assert len(nodes) > 80
    for path, node in nodes:
        assert "type" in node, path
        assert node["type"] in {"object", "array", "string", "integer", "number", "boolean"}, path
        text = yaml.safe_dump(node)
        assert "$ref" not in text and "anyOf" not in text and "allOf" not in text, path
        if node["type"] == "object" and path not in ("$.metadata",):
            assert "properties" in node or "additionalProperties" in node, path


def test_names_group_and_subresources():
    spec = crd()["spec"]
    assert spec["group"] == "flops.oakestra.io"
    assert spec["names"]["shortNames"] == ["fp"] and spec["names"]["categories"] == ["flops"]
    assert spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase", "Round": ".status.training.progress", "Done%": ".status.training.progressPercentage",
        "ETA": ".status.training.eta", "Best": ".status.training.best",
        "Model-Version": ".status.model.version", "Age": ".metadata.creationTimestamp",
    }


def test_enums_bounds_defaults_and_descriptions_come_from_the_models():
    s = schema()["properties"]["spec"]
    training = s["properties"]["training"]["properties"]
    assert training["rounds"] == {"default": 3, "maximum": 1000, "minimum": 1, "type": "integer"}
    assert set(training["strategy"]["properties"]["name"]["enum"]) == {
        "FedAvg", "FedProx", "FedAdam", "FedAdagrad", "FedYogi", "FedMedian", "FedTrimmedAvg"}
    lr = training["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True and lr["maximum"] == 10
    assert s["properties"]["learners"]["properties"]["resources"]["properties"]["memoryMB"]["default"] == 512
    assert "immutable" in s["properties"]["platform"]["description"]
    assert s["required"] == ["task"]
    assert s["properties"]["training"]["default"] == {}


def test_cel_rules_cover_cross_field_constraints():
    s = schema()["properties"]["spec"]
    rules = [r["rule"] for r in s["x-kubernetes-validations"]]
    assert any("minTrainLearners" in r and "replicas" in r for r in rules)
    assert any("minAvailableLearners" in r for r in rules)
    assert s["properties"]["platform"]["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "platform is immutable"}]


def test_status_schema_has_no_defaults_and_no_secrets():
    status = schema()["properties"]["status"]
    text = yaml.safe_dump(status)
    assert "default:" not in text
    assert "password" not in text.lower() and "secret" not in text.lower()
