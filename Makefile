# kubedetect: `make demo` runs the whole thing locally; `make test` checks it.
# Every target installs what it needs first (into .venv, with the pins of constraints.txt).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output
DEMO_PORT ?= 8080
DATA ?=
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help setup demo test bench lint constraints clean

help:
	@echo "make demo   - synthetic data (or DATA=path/to/voc) through the whole pipeline, locally"
	@echo "make test   - the test suite"
	@echo "make bench  - benchmarks; results in docs/BENCHMARKS.md"
	@echo "make lint   - ruff, hadolint, shellcheck"
	@echo "make setup  - create $(VENV) with every dependency pinned by constraints.txt"

setup: $(STAMP)

# The installer: uv (pinned in constraints.txt, itself installed by pip) installs the same pins
# as pip in about half the time from an empty cache (docs/BENCHMARKS.md); INSTALLER=pip uses pip
# alone. Bytecode is compiled at install time, as pip does: every pipeline step imports TensorFlow.
INSTALLER ?= uv

$(STAMP): pyproject.toml constraints.txt
	@echo "installing the pinned dependencies into $(VENV) ($(INSTALLER); a minute or two, once)"
	@$(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	@$(PIP) install -qq -c constraints.txt uv
	@$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode \
		-c constraints.txt -e ".[all,dev]"
else
	@$(PIP) install --quiet -c constraints.txt -e ".[all,dev]"
endif
	@touch $@

demo: setup
	@$(PY) -m pipelines.demo --out $(DEMO_DIR) --port $(DEMO_PORT) $(if $(DATA),--data $(DATA))

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) -m bench

lint: setup
	$(VENV)/bin/ruff check kubedetect cli serving components pipelines tests bench k8s
	$(VENV)/bin/ruff format --check kubedetect cli serving components pipelines tests bench k8s

constraints: setup
	@echo "# The one set of pins every install uses: pip install -c constraints.txt ..." > constraints.txt.new
	@echo "# Resolved on Python 3.11 (see ../shared/ENVIRONMENT.md). Regenerate with: make constraints" >> constraints.txt.new
	$(PIP) freeze --exclude-editable | grep -v -E '^(pip|setuptools|wheel)==' >> constraints.txt.new
	echo "tensorflow==2.21.0" >> constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(DEMO_DIR) .pytest_cache build *.egg-info

# ------------------------------------------------------------------------------------------------
# Containers, Kubernetes and kind (docs/DEPLOY.md). The scripts do the work; these targets name them.
#   make images [IMAGE_TAG=0.1.0] [BASE_IMAGE=...] [BUILD_NETWORK=host]   both images
#   make docker-engine    a Docker engine and the stand-in base image where there is none (as root)
#   make lint-deploy      hadolint, shellcheck and checkov over the Dockerfile, scripts and k8s/
#   make kind-up | kind-deploy | kind-e2e | kind-down   the local cluster test (KIND_DRY_RUN=1: print only)
# ------------------------------------------------------------------------------------------------
IMAGE_TAG ?= 0.1.0
BASE_IMAGE ?=
BUILD_NETWORK ?=
# checkov pins its own dependencies (it downgrades `packaging`): its own virtualenv, its own pin.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
SHELL_SCRIPTS := k8s/build-images.sh k8s/ci/docker-engine.sh $(wildcard k8s/kind/*.sh)

.PHONY: images docker-engine checkov-venv checkov lint-deploy kind-up kind-deploy kind-e2e kind-down

images:
	k8s/build-images.sh --tag $(IMAGE_TAG) $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE)) $(if $(BUILD_NETWORK),--network $(BUILD_NETWORK))

docker-engine:
	k8s/ci/docker-engine.sh

checkov-venv: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet "checkov==$(CHECKOV_VERSION)"
	touch $@

checkov: checkov-venv
	$(CHECKOV_VENV)/bin/checkov --skip-download --quiet --compact --framework kubernetes -d k8s
	$(CHECKOV_VENV)/bin/checkov --skip-download --quiet --compact --framework dockerfile -f Dockerfile

lint-deploy: setup checkov
	$(VENV)/bin/hadolint Dockerfile
	shellcheck -x $(SHELL_SCRIPTS)

kind-up:
	k8s/kind/up.sh

kind-deploy:
	k8s/kind/deploy.sh

kind-e2e:
	k8s/kind/e2e.sh

kind-down:
	k8s/kind/down.sh
