"""Model registry: register a logged model and move the alias only to a version that beats the holder."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .best import better

log = logging.getLogger("flops_aggregator")

METRIC_TAG = "flops.metric"
VALUE_TAG = "flops.metric_value"
MODE_TAG = "flops.metric_mode"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    alias: str
    promoted: bool
    previous_value: float | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def holder_value(client: MlflowClient, name: str, alias: str, metric: str) -> tuple[str | None, float | None]:
    """The version holding the alias and its value of `metric` (None when there is no holder or no value)."""
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    if holder.tags.get(METRIC_TAG) == metric and VALUE_TAG in holder.tags:
        return str(holder.version), float(holder.tags[VALUE_TAG])
    # A version registered by someone else: its run's best_<metric>, if it logged one.
    if holder.run_id:
        try:
            run_metrics = client.get_run(holder.run_id).data.metrics
        except MlflowException:
            run_metrics = {}
        if f"best_{metric}" in run_metrics:
            return str(holder.version), float(run_metrics[f"best_{metric}"])
    return str(holder.version), None


@dataclass(frozen=True)
class Holder:
    """Who holds the alias before this training's version is registered, and with what value."""
    version: str | None
    value: float | None


def look_up(client: MlflowClient, name: str, alias: str, metric: str) -> Holder:
    """The registered model made sure of, and its alias's holder: what registering needs that does not depend on
    the model (the aggregator asks while its final model is still uploading)."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    return Holder(*holder_value(client, name, alias, metric))


def register_and_promote(client: MlflowClient, model_uri: str, model_id: str | None, run_id: str | None, name: str,
                         alias: str, metric: str, mode: str, value: float, holder: Holder | None = None) -> Registration:
    """Register `model_uri` as a new version of `name`; give it `alias` only if it beats the holder's value
    (`holder`: looked up before, or now).

    A holder without a comparable value (other metric, none logged) is replaced: nothing says it is better.
    """
    if holder is None:
        holder = look_up(client, name, alias, metric)
    version = client.create_model_version(
        name, model_uri, run_id=run_id, model_id=model_id,
        tags={METRIC_TAG: metric, VALUE_TAG: repr(float(value)), MODE_TAG: mode},
    ).version
    previous = holder.value
    promote = previous is None or better(value, previous, mode)
    if promote:
        client.set_registered_model_alias(name, alias, version)
        log.info("model %s version %s is the new %s (%s %s vs %s)", name, version, alias, metric, value, previous)
    else:
        log.info("model %s version %s keeps %s on version %s (%s %s does not beat %s)",
                 name, version, alias, holder.version, metric, value, previous)
    return Registration(name, str(version), alias, promote, previous)
