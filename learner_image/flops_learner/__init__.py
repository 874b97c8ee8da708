"""flops_learner: the learner side of a FLOps training (task contract, data, ClientApp, entrypoint)."""
