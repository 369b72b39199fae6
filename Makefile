# One entry point for set-up, the demo, tests and quality gates.
# Every target installs what it needs first, so a fresh clone needs only Python 3.11, Node 20 and the
# package registries.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements.stamp
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: constraints venv system-deps demo test lint typecheck unit synth bench eval clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the demo and tests use: mosquitto (the local stand-in for IoT Core's MQTT broker) and
# chromium (headless checks of the demo's HTML report).
DEBIAN_PACKAGES := mosquitto chromium
system-deps:
	@missing=""; \
	for pkg in $(DEBIAN_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: venv system-deps
	$(BIN)/python -m demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy .

unit: venv system-deps
	$(BIN)/pytest

test: lint typecheck unit

synth: venv
	$(BIN)/python app.py

bench: venv system-deps
	$(BIN)/python -m bench.edge

eval: venv
	$(BIN)/python -m training.evaluate nab --corpus ../shared/data/nab --out build/eval/nab
	$(BIN)/python -m training.evaluate skab --corpus ../shared/data/skab --out build/eval/skab

# Re-pin the transitive dependencies after a change to requirements.txt.
constraints: venv
	{ sed -n '1,3p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^edge-anomaly-platform'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) build cdk.out .demo .mypy_cache .ruff_cache .pytest_cache
