"""Runners for the shipped GitOps health checks: the Argo CD Lua script (with lupa's Lua 5.1, the version of
gopher-lua that Argo CD embeds) and the Flux healthCheckExprs (with cel-python, in Flux's order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import celpy
import yaml

GITOPS = Path(__file__).resolve().parents[1] / "manifests" / "gitops"
ARGOCD = GITOPS / "argocd"
FLUX_EXPRS = GITOPS / "flux" / "health-check-exprs.yaml"


def argocd_health(obj: dict[str, Any]) -> dict[str, str]:
    """hs = health.lua(obj), as Argo CD's resource.customizations.health runs it."""
    from lupa.lua51 import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    # Argo CD's sandbox has no os, io or module loading: a script that used them would fail there.
    lua.execute("os, io, require, dofile, loadfile, package = nil, nil, nil, nil, nil, nil")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute(ARGOCD.joinpath("health.lua").read_text())
    return {"status": hs["status"], "message": hs["message"]}


def flux_check() -> dict[str, str]:
    """The FLOpsProject entry of the shipped Kustomization's healthCheckExprs."""
    kustomization = yaml.safe_load(FLUX_EXPRS.read_text())
    (check,) = [c for c in kustomization["spec"]["healthCheckExprs"] if c["kind"] == "FLOpsProject"]
    return check


def flux_status(obj: dict[str, Any]) -> str:
    """kustomize-controller's evaluation: a differing status.observedGeneration is InProgress without
    evaluating; then inProgress, failed, current, the first that is true wins; none: InProgress. An
    expression that errors fails the health check, so none may error (they guard every field)."""
    status = obj.get("status") or {}
    if "observedGeneration" in status and status["observedGeneration"] != obj["metadata"].get("generation"):
        return "InProgress"
    check = flux_check()
    env = celpy.Environment()
    activation = {key: celpy.json_to_cel(obj[key]) for key in ("metadata", "spec", "status") if key in obj}
    for key, verdict in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if key not in check:
            continue
        result = env.program(env.compile(check[key])).evaluate(activation)
        if isinstance(result, celpy.CELEvalError):
            raise AssertionError(f"{key} errors on {obj['metadata']}: {result}")
        if bool(result):
            return verdict
    return "InProgress"
