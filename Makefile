# One command sets up and runs the demo (`make demo`), one sets up and runs the tests (`make test`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install deps demo test crd bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/flops run manifests/examples/digits-local.yaml

# System packages the tests need (MariaDB): installed with apt-get as root on Debian, else named.
deps:
	PY=$(PY) tests/system-deps.sh

test: deps $(STAMP)
	FLOPS_REQUIRE_MARIADB=1 $(BIN)/pytest -ra

crd: $(STAMP)
	$(BIN)/flops crd > crds/flopsproject.yaml

bench: $(STAMP)
	$(BIN)/python bench/oakestra_scale.py
	$(BIN)/python bench/mlflow_overhead.py
	$(BIN)/python bench/demo_timing.py

clean:
	rm -rf $(VENV) build *.egg-info
