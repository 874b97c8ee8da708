"""Generate the FLOpsProject CRD from the pydantic models (never edit crds/ by hand)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .models import project as p
from .models.edits import IMMUTABLE_RULES, description
from .models.spec import SPEC_VALIDATIONS, FLOpsProjectSpec
from .models.status import FLOpsProjectStatus

# JSON-Schema keywords a structural CRD schema may carry; everything else pydantic emits is dropped.
_KEEP = {
    "type", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "items", "properties", "required",
    "additionalProperties", "format", "minItems", "maxItems", "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields", "nullable",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return _resolve({**target, **extra}, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Turn pydantic's JSON schema into an OpenAPI v3 structural schema."""
    node = dict(node)
    # Optional[X] is anyOf [X, null]: the field is simply optional in Kubernetes.
    for key in ("anyOf", "oneOf"):
        if key in node:
            options = [o for o in node.pop(key) if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union of {len(options)} types structurally: {options}")
            merged = {**options[0], **{k: v for k, v in node.items() if k != "default" or v is not None}}
            node = merged
    if "allOf" in node:
        (only,) = node.pop("allOf")
        node = {**only, **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    # OpenAPI v3.0 (what Kubernetes speaks) has boolean exclusive bounds.
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[plain] = node[bound]
            node[bound] = True
    if node.get("default") is None:
        node.pop("default", None)
    if node.get("type") == "object" or "properties" in node:
        node["type"] = "object"
        props = node.get("properties", {})
        node["properties"] = {k: _structural(v) for k, v in props.items()}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            node["additionalProperties"] = _structural(extra)
            if not node["properties"]:
                del node["properties"]
        else:
            node.pop("additionalProperties", None)
        if not node.get("required"):
            node.pop("required", None)
    if node.get("type") == "array":
        node["items"] = _structural(node.get("items", {}))
    out = {k: v for k, v in node.items() if k in _KEEP}
    if "type" not in out:
        raise ValueError(f"schema node without a type: {node}")
    return out


def _model_schema(model: type, mode: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode=mode)
    defs = raw.pop("$defs", {})
    return _structural(_resolve(raw, defs))


def _drop_defaults(node: Any) -> Any:
    # Status is written by the operator; defaults there would only make the API server invent values.
    if isinstance(node, dict):
        return {k: _drop_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_drop_defaults(v) for v in node]
    return node


def _default_objects(node: dict[str, Any]) -> dict[str, Any]:
    # Every optional object in the spec has defaults inside it; `default: {}` makes the API server
    # apply them, so `kubectl get -o yaml` shows the values the operator will use.
    required = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        if child.get("type") == "object":
            _default_objects(child)
            if name not in required and "properties" in child:
                child.setdefault("default", {})
    return node


def _annotate_edits(node: dict[str, Any], path: str = "") -> dict[str, Any]:
    # What editing a field does (models/edits.py), said where `kubectl explain` shows it, and the
    # immutable fields' CEL transition rules.
    for name, child in node.get("properties", {}).items():
        here = f"{path}.{name}" if path else name
        said = description(here)
        if said:
            child["description"] = f"{child['description']} {said}" if child.get("description") else said
        if here in IMMUTABLE_RULES:
            child["x-kubernetes-validations"] = IMMUTABLE_RULES[here]
        _annotate_edits(child, here)
    return node


def openapi_schema() -> dict[str, Any]:
    spec = _annotate_edits(_default_objects(_model_schema(FLOpsProjectSpec, "validation")))
    spec["x-kubernetes-validations"] = SPEC_VALIDATIONS
    status = _drop_defaults(_model_schema(FLOpsProjectStatus, "serialization"))
    status.pop("required", None)
    return {
        "type": "object",
        "description": "A federated-learning project with its MLOps stack, run on Oakestra or locally.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Round", "type": "string", "jsonPath": ".status.training.progress"},
    {"name": "Done%", "type": "integer", "jsonPath": ".status.training.progressPercentage"},
    {"name": "ETA", "type": "string", "jsonPath": ".status.training.eta"},
    {"name": "Best", "type": "string", "jsonPath": ".status.training.best"},
    {"name": "Model-Version", "type": "string", "jsonPath": ".status.model.version"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{p.PLURAL}.{p.GROUP}"},
        "spec": {
            "group": p.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": p.KIND,
                "plural": p.PLURAL,
                "singular": p.SINGULAR,
                "shortNames": p.SHORT_NAMES,
                "categories": p.CATEGORIES,
            },
            "versions": [
                {
                    "name": p.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `flops crd` from the pydantic models in flops_operator.models. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
