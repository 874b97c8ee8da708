# One command sets up and runs the demo (`make demo`), one sets up and runs the tests (`make test`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Images: every one the plan references, built here (podman, else docker), tagged $(REGISTRY)/<name>:<version>.
REGISTRY ?= ghcr.io/flops-operator

.PHONY: install deps demo test crd bench clean images push

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[local,test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/flops run manifests/examples/digits-local.yaml

# System packages the tests need (MariaDB): installed with apt-get as root on Debian, else named.
deps:
	PY=$(PY) tests/system-deps.sh

# The images are built first (podman installed where it is missing), so tests/containers must run.
test: deps $(STAMP) images
	FLOPS_REQUIRE_MARIADB=1 FLOPS_REQUIRE_CONTAINERS=1 $(BIN)/pytest -ra

images:
	REGISTRY=$(REGISTRY) base_image/build.sh

push:
	PUSH=1 REGISTRY=$(REGISTRY) base_image/build.sh

crd: $(STAMP)
	$(BIN)/flops crd > crds/flopsproject.yaml

bench: $(STAMP)
	$(BIN)/python bench/oakestra_scale.py
	$(BIN)/python bench/mlflow_overhead.py
	$(BIN)/python bench/round_overhead.py
	$(BIN)/python bench/demo_timing.py
	$(BIN)/python bench/gitops_latency.py
	$(BIN)/python bench/flower_security.py
	$(BIN)/python bench/build_cache.py
	$(BIN)/python bench/operator_scale.py

clean:
	rm -rf $(VENV) build *.egg-info
