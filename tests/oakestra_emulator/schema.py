"""The parts of the System Manager's SLA v2.0 JSON schema (SM/sla/schema.py) a client can trip over.

Unknown fields are accepted (the real schema has no additionalProperties: false) and stored verbatim.
"""

from __future__ import annotations

import re
from typing import Any

NAME = re.compile(r"^[a-zA-Z0-9]{1,30}$")

_INT_FIELDS = ("memory", "vcpus", "vgpus", "vtpus", "storage", "bandwidth_in", "bandwidth_out")
_STR_LIST_FIELDS = ("cmd", "environment", "added_files", "args")


class SlaVersionError(Exception):
    """Not v2.0: the real SM raises a KeyError (or 'Deprecated' for v1.0), i.e. a 500."""


def _name(errors: list[str], where: str, value: Any) -> None:
    if not isinstance(value, str) or not NAME.match(value):
        errors.append(f"{where}: {value!r} does not match {NAME.pattern}")


def _microservice(errors: list[str], where: str, ms: Any) -> None:
    if not isinstance(ms, dict):
        errors.append(f"{where}: not an object")
        return
    for key in ("microservice_name", "microservice_namespace", "virtualization", "code"):
        if key not in ms:
            errors.append(f"{where}: '{key}' is a required property")
    for key in ("microservice_name", "microservice_namespace"):
        if key in ms:
            _name(errors, f"{where}.{key}", ms[key])
    if ms.get("microserviceID") not in (None, ""):
        errors.append(f"{where}.microserviceID: is too long (maxLength 0)")
    for key in ("virtualization", "code"):
        if key in ms and not isinstance(ms[key], str):
            errors.append(f"{where}.{key}: not a string")
    if "port" in ms and not isinstance(ms["port"], str):
        errors.append(f"{where}.port: {ms['port']!r} is not of type 'string'")
    for key in _INT_FIELDS:
        if key in ms and (not isinstance(ms[key], int) or isinstance(ms[key], bool)):
            errors.append(f"{where}.{key}: {ms[key]!r} is not of type 'integer'")
    for key in _STR_LIST_FIELDS:
        if key in ms and (not isinstance(ms[key], list) or not all(isinstance(v, str) for v in ms[key])):
            errors.append(f"{where}.{key}: not an array of strings")
    for key in ("one_shot", "privileged"):
        if key in ms and not isinstance(ms[key], bool):
            errors.append(f"{where}.{key}: not a boolean")
    if "addresses" in ms:
        addresses = ms["addresses"]
        if not isinstance(addresses, dict) or not all(isinstance(v, (str, list)) for v in addresses.values()):
            errors.append(f"{where}.addresses: not an object of strings")
    if "constraints" in ms:
        constraints = ms["constraints"]
        if not isinstance(constraints, list) or not all(isinstance(c, dict) and "type" in c for c in constraints):
            errors.append(f"{where}.constraints: every constraint needs a 'type'")


def validate_sla(sla: Any) -> list[str]:
    """Schema errors of an SLA (empty if valid). Raises SlaVersionError for a wrong sla_version."""
    if not isinstance(sla, dict):
        return ["SLA: not an object"]
    errors = [f"'{key}' is a required property" for key in ("sla_version", "customerID", "applications")
              if key not in sla]
    if errors:
        return errors
    if sla["sla_version"] != "v2.0":
        raise SlaVersionError(sla["sla_version"])
    if not isinstance(sla["customerID"], str):
        errors.append("customerID: not a string")
    apps = sla["applications"]
    if not isinstance(apps, list):
        return errors + ["applications: not an array"]
    for i, app in enumerate(apps):
        where = f"applications[{i}]"
        if not isinstance(app, dict):
            errors.append(f"{where}: not an object")
            continue
        for key in ("application_name", "application_namespace", "microservices"):
            if key not in app:
                errors.append(f"{where}: '{key}' is a required property")
        for key in ("application_name", "application_namespace"):
            if key in app:
                _name(errors, f"{where}.{key}", app[key])
        services = app.get("microservices", [])
        if not isinstance(services, list):
            errors.append(f"{where}.microservices: not an array")
            continue
        for j, ms in enumerate(services):
            _microservice(errors, f"{where}.microservices[{j}]", ms)
    return errors
