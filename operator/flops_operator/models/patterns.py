"""The patterns of the names and references the spec accepts (the CRD carries them as OpenAPI patterns)."""

# Kubernetes object names (DNS-1123 label) and the Oakestra-facing / MLflow-facing names we accept.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
CLUSTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# MLflow refuses aliases that look like versions (v1, V12) and aliases with other characters.
ALIAS = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
METRIC = r"^(train|eval)_[a-z0-9_]{1,60}$"
PYTHON_MODULE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
IMAGE = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# module:attribute, as in Python entry points.
ENTRYPOINT = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
# What git itself takes: URLs of its transports, and the scp-like user@host:path of SSH.
GIT_URL = r"^((https?|ssh|git)://[^\s@]*[^\s]*|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$"
GIT_REF = r"^[A-Za-z0-9][A-Za-z0-9._/@{}+-]{0,254}$"
SOURCE_PATH = r"^[A-Za-z0-9._/-]{0,1024}$"

BUILTIN_TASKS = ("digits-mlp", "iris-logreg")
BUILTIN_DATASETS = ("digits", "iris")
