"""flops-operator: federated learning with MLOps on Oakestra, as a Kubernetes-style operator."""

__version__ = "0.1.0"
