"""flops_aggregator: the aggregator side of a FLOps training (SuperLink, ServerApp, MLflow contract)."""
