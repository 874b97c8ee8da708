"""The operator's plan and the images' entrypoints read one contract: what the plan renders parses back,
field for field, with the model the entrypoint uses."""

from __future__ import annotations

import pytest

from flops_aggregator.contract import STRATEGIES, AggregatorConfig
from flops_aggregator.settings import parse
from flops_learner.contract import LearnerTask
from flops_operator.models.spec import StrategyName
from tests.projects import fake_secret
from flops_operator.plan.desired import FAST_IDLE_POLL_SECONDS, aggregator_config, desired, learner_task
from flops_operator.plan.render import render_service
from tests.projects import project


class Resolver:
    """A platform's answers to the plan's placeholders (any consistent ones do)."""

    def address(self, service: str, port: str) -> str:
        return f"{service}.test:{port}"

    def host(self, service: str) -> str:
        return f"{service}.test"

    def own_port(self, port: str) -> int:
        return 4000

    def bind(self) -> str:
        return "0.0.0.0"

    def secret(self, name: str) -> str:
        return fake_secret(name)

    def workdir(self) -> str:
        return "/var/lib/flops"


SPECS = [
    {"task": {"name": "digits-mlp"}},
    {"task": {"name": "iris-logreg"}, "learners": {"replicas": 4},
     "training": {"rounds": 7, "strategy": {"name": "FedProx", "proximalMu": 0.3}, "minTrainLearners": 2,
                  "bestModel": {"metric": "eval_loss", "mode": "min"}},
     "data": {"partitioning": {"scheme": "dirichlet", "alpha": 0.2, "seed": 7}}, "registry": {"alias": "best"}},
    {"task": {"module": "mytask.model", "image": "registry.example/me/task:1"},
     "data": {"path": "/data/local.csv", "labelColumn": "label"}, "training": {"roundMode": "standard"}},
]


@pytest.mark.parametrize("spec", SPECS, ids=["defaults", "fedprox-dirichlet", "user-module-standard-rounds"])
def test_rendered_environments_parse_back_with_the_entrypoints_models(spec):
    p = project(spec)
    services = {s.name: s for s in desired(p, training_done=False)}
    _, aggregator_env = render_service(services["aggregator"], Resolver())
    settings = parse(aggregator_env["FLOPS_CONFIG"], aggregator_env["FLOPS_WORKDIR"],
                     aggregator_env["MLFLOW_TRACKING_URI"])
    assert settings.config == aggregator_config(p)
    assert aggregator_env["FLOPS_SUPERLINK_ADDRESS"] == "0.0.0.0:4000"
    assert aggregator_env["MLFLOW_TRACKING_URI"] == "http://tracking-server.test:http"
    for i in range(p.spec.learners.replicas):
        _, env = render_service(services[f"learner-{i}"], Resolver())
        assert LearnerTask.model_validate_json(env["FLOPS_TASK"]) == learner_task(p)
        assert (env["FLOPS_PARTITION_ID"], env["FLOPS_NUM_PARTITIONS"]) == (str(i), str(p.spec.learners.replicas))
        assert env["FLOPS_SUPERLINK"] == "aggregator.test:superlink"
        fast = p.spec.training.round_mode == "fast"
        assert env["FLOPS_CLIENTAPP"] == ("warm" if fast else "subprocess")
        assert env.get("FLOPS_IDLE_POLL_SECONDS") == (f"{FAST_IDLE_POLL_SECONDS:g}" if fast else None)
    assert (settings.fused_evaluation, settings.async_logging) == (fast, fast)


def test_the_config_carries_every_resolved_value():
    config = aggregator_config(project(SPECS[1]))
    assert (config.training.min_train_learners, config.training.min_evaluate_learners,
            config.training.min_available_learners) == (2, 4, 4)
    assert config.training.strategy.arguments == {"proximal_mu": 0.3}
    assert config.data.dataset == "iris" and config.data.partitioning.alpha == 0.2
    assert (config.registry.model_name, config.registry.alias) == ("p", "best")


def test_a_config_missing_a_field_is_refused_not_defaulted():
    wire = aggregator_config(project(SPECS[0])).to_wire()
    del wire["training"]["batchSize"]
    with pytest.raises(ValueError, match="batchSize"):
        AggregatorConfig.model_validate(wire)


def test_the_contract_knows_every_strategy_the_api_offers():
    assert set(STRATEGIES) == {s.value for s in StrategyName}
