"""flops_runtime: what the aggregator and learner entrypoints share at run time (child processes, addresses).

It ships in the FL base image's layer of this repository's package, next to flops_aggregator and flops_learner,
so neither entrypoint imports the other's package for anything but the task contract.
"""
